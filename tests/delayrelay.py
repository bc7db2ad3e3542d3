"""A TCP relay that adds a one-way delay to every byte, both ways: WAN latency for a test
gateway on a machine whose kernel has no ``netem`` (design.md §4).

    python3 tests/delayrelay.py LISTEN_IP LISTEN_PORT TARGET_IP TARGET_PORT DELAY_MS

Each accepted connection gets its own connection to the target; data read at time t is
written at t + delay (order kept), so a round trip costs 2 x delay, as on a link of that
latency. Used by tests/gatewaybed.py to put its sshd "across the WAN" like Grid'5000's
access gateway (10-30 ms from a user's laptop). Runs until killed.
"""
from __future__ import annotations

import asyncio
import sys
import time


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy reader → writer, each chunk written ``delay`` seconds after it was read."""
    queue: asyncio.Queue = asyncio.Queue()

    async def write() -> None:
        while True:
            due, data = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if data is None:
                break
            writer.write(data)
            await writer.drain()
        try:
            writer.write_eof()
        except (OSError, RuntimeError):
            pass
    task = asyncio.ensure_future(write())
    try:
        while True:
            data = await reader.read(65536)
            await queue.put((time.monotonic() + delay, data or None))
            if not data:
                break
        await task
    except (ConnectionError, OSError):
        task.cancel()


async def serve(listen: str, port: int, target: str, tport: int, delay: float) -> None:
    async def handle(r1, w1):
        try:
            r2, w2 = await asyncio.open_connection(target, tport)
        except OSError:
            w1.close()
            return
        await asyncio.gather(pump(r1, w2, delay), pump(r2, w1, delay), return_exceptions=True)
        for w in (w1, w2):
            w.close()
    server = await asyncio.start_server(handle, listen, port, backlog=1024)
    async with server:
        await server.serve_forever()


def main(argv) -> int:
    listen, port, target, tport, delay_ms = argv[1:6]
    asyncio.run(serve(listen, int(port), target, int(tport), float(delay_ms) / 1000.0))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
