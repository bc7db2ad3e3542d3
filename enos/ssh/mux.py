"""A client of OpenSSH's connection-multiplexing protocol (``PROTOCOL.mux``, version 4).

``enos run`` sends its commands through the connection masters that ``enos up`` opened
(ControlMaster), like ``ssh -F <env>/ssh_config ALIAS CMD`` would — but without starting one
``ssh`` process per host: it speaks to the master's control socket directly, asks for a
session running the command and passes its own pipes (SCM_RIGHTS) as the session's stdin,
stdout and stderr. Each ``ssh`` client costs ~6 ms of CPU (exec, libcrypto, config parsing),
as much as the whole orchestration of a 20-host fan-out on 2 cores.

Only a master that already runs is used; anything unexpected (no socket, refused, a master
refusing the session) is reported so the caller falls back to a plain ``ssh`` process.
"""
from __future__ import annotations

import os
import socket
import struct
TYPE_CHECKING = False   # annotations only ('enos run' on one host loads this module)
if TYPE_CHECKING:  # pragma: no cover
    from typing import List, Optional, Tuple

MUX_MSG_HELLO = 0x00000001
MUX_C_NEW_SESSION = 0x10000002
MUX_S_PERMISSION_DENIED = 0x80000002
MUX_S_FAILURE = 0x80000003
MUX_S_EXIT_MESSAGE = 0x80000004
MUX_S_SESSION_OPENED = 0x80000006
MUX_S_TTY_ALLOC_FAIL = 0x80000008
VERSION = 4
NO_ESCAPE = 0xFFFFFFFF


def _sha1(data: bytes):
    """Return hashlib.sha1(data), without loading OpenSSL when CPython's own SHA-1 is there
    (``import hashlib`` costs ~3 ms; 'enos run' on one host pays it for nothing else)."""
    try:
        from _sha1 import sha1
    except ImportError:  # pragma: no cover  (a CPython built without it)
        from hashlib import sha1
    return sha1(data)


def _string(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def _frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def control_path(template: str, address: str, port: int, user: str,
                 local_host: Optional[str] = None) -> Optional[str]:
    """Return ``template`` (an ssh_config ControlPath) expanded for one host, or None if it
    uses a token this function does not know (the caller then lets ssh do it).

    ``%C`` is OpenSSH's connection hash: SHA-1 of local host name, remote host name (the
    HostName), port and remote user (newer OpenSSH adds the ProxyJump, ``%j``; enos writes
    jump hosts as a ProxyCommand, which is not part of it)."""
    local_host = local_host if local_host is not None else socket.gethostname()
    out: List[str] = []
    i = 0
    while i < len(template):
        c = template[i]
        if c != "%":
            out.append(c)
            i += 1
            continue
        if i + 1 >= len(template):
            return None
        t = template[i + 1]
        if t == "%":
            out.append("%")
        elif t == "C":
            out.append(_sha1(f"{local_host}{address}{port}{user}".encode()).hexdigest())
        elif t == "h":
            out.append(address)
        elif t == "p":
            out.append(str(port))
        elif t == "r":
            out.append(user)
        elif t == "L":
            out.append(local_host.split(".")[0])
        elif t == "l":
            out.append(local_host)
        else:
            return None
        i += 2
    return os.path.expanduser("".join(out))


def check_peer(sock: socket.socket, path: str) -> None:
    """Return None when the process at the other end of the connected unix socket ``sock``
    runs as this user (SO_PEERCRED); raise PermissionError otherwise — nothing (no
    command, no file descriptor) is sent to a master someone else runs."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", creds)
    if uid != os.getuid():
        raise PermissionError(f"the connection master at {path} runs as uid {uid} (pid {pid}), "
                              f"not as you (uid {os.getuid()}): not used")


def open_session(path: str, command: str, stdout_fd: Optional[int] = None
                 ) -> Tuple[socket.socket, Optional[int], int]:
    """Ask the master listening on ``path`` for a session running ``command``; return
    (control socket, stdout read fd, stderr read fd). The master's answers (hello, session
    opened or refused, exit status) arrive on the socket: feed them to :class:`Replies`.
    With ``stdout_fd``, the session writes its stdout straight into that descriptor (the
    caller keeps it; the returned stdout read fd is then None).

    Raises OSError when the socket is missing or refuses the connection (no master)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    out_r = out_w = err_r = err_w = null = -1
    try:
        sock.connect(path)
        check_peer(sock, path)
        if stdout_fd is None:
            out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        null = os.open(os.devnull, os.O_RDONLY)
        hello = _frame(struct.pack(">II", MUX_MSG_HELLO, VERSION))
        req = _frame(struct.pack(">II", MUX_C_NEW_SESSION, 1) + _string(b"")
                     + struct.pack(">IIIII", 0, 0, 0, 0, NO_ESCAPE)
                     + _string(b"") + _string(command.encode()))
        # the master reads exactly one framed message, then each fd with its own 1-byte message
        sock.sendall(hello + req)
        for fd in (null, out_w if stdout_fd is None else stdout_fd, err_w):
            socket.send_fds(sock, [b"\0"], [fd])
    except BaseException:
        sock.close()
        for fd in (out_r, err_r):
            if fd >= 0:
                os.close(fd)
        raise
    finally:
        for fd in (out_w, err_w, null):   # the master holds its own copies now
            if fd >= 0:
                os.close(fd)
    return sock, (out_r if stdout_fd is None else None), err_r


class Replies:
    """Parses the master's framed answers as bytes arrive."""

    def __init__(self):
        self.buf = b""
        self.opened = False
        self.exit_code: Optional[int] = None
        self.refused: Optional[str] = None

    def feed(self, data: bytes) -> None:
        """Consume ``data``; update ``opened``, ``exit_code`` and ``refused``."""
        self.buf += data
        while len(self.buf) >= 4:
            (n,) = struct.unpack(">I", self.buf[:4])
            if len(self.buf) < 4 + n:
                return
            msg, self.buf = self.buf[4:4 + n], self.buf[4 + n:]
            if len(msg) < 4:
                continue
            (kind,) = struct.unpack(">I", msg[:4])
            if kind == MUX_S_SESSION_OPENED:
                self.opened = True
            elif kind == MUX_S_EXIT_MESSAGE and len(msg) >= 12:
                self.exit_code = struct.unpack(">I", msg[8:12])[0]
            elif kind in (MUX_S_PERMISSION_DENIED, MUX_S_FAILURE):
                reason = b""
                if len(msg) >= 12:
                    (ln,) = struct.unpack(">I", msg[8:12])
                    reason = msg[12:12 + ln]
                self.refused = reason.decode(errors="replace") or "refused by the connection master"
