"""``loopback``: a complete small enos provider, the example of "Writing a provider".

Each host is an ``sshd`` of this machine listening on its own port of 127.0.0.1, with its
own host key, letting in the env's key for the user running enos. Nothing is virtualised:
hosts share everything with the machine but their SSH port, which is enough to try a
playbook or a campaign's commands, and to show the whole provider contract in ~200 lines:

* ``init`` books (starts sshds), recording each host in the journal *before* starting it
  and its PID right after, and calls ``checkpoint(...)`` after each side effect;
* a second ``init`` re-finds the live sshds instead of starting more;
* ``destroy`` stops them using only the journal, is idempotent, goes on past failures;
* ``sweep`` finds this run's sshds without any state, by the run id in their command line
  (``sshd -D -f <env>/loopback-<run id>/<alias>/sshd_config``).

Registered by its entry point (``pyproject.toml``: group ``enos.providers``); dropped into
``enos/provider/loopback.py`` it would be found by its file name as well.
"""
from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Dict, List

from enos import process
from enos.errors import DestroyIncomplete, ProviderError
from enos.failpoint import checkpoint
from enos.model import Check, Host, Resources
from enos.provider.provider import DESTROY, RESERVE, SWEEP, Provider

JOURNAL_KEY = "loopback"
READY_TIMEOUT = 20.0

SAMPLE = """\
# enos reservation for the 'loopback' example provider: every host is an sshd on a port of
# 127.0.0.1 of this machine, for the user running enos.
provider:
  type: loopback
  # sshd: /usr/sbin/sshd       # default: sshd found in /usr/sbin, /usr/local/sbin or PATH
resources:
  loopback:                    # a free label
    server: 1                  # role: number of hosts
    client: 2
"""


class LoopbackProvider(Provider):
    """Hosts that are sshd processes on 127.0.0.1 ports (an example provider)."""

    type = "loopback"
    description = "sshd processes on ports of 127.0.0.1, one per host (the example provider of the docs)"
    capabilities = frozenset({RESERVE, DESTROY, SWEEP})
    sample = SAMPLE
    schema = {
        "type": "object",
        "properties": {
            "type": {"const": "loopback"},
            "sshd": {"type": "string", "minLength": 1, "examples": ["/usr/sbin/sshd"],
                     "description": "the sshd binary to start for each host",
                     "x-expected": "the path of an sshd binary"},
        },
        "additionalProperties": False,
    }
    machine_schema = {"type": "object", "additionalProperties": False}

    # --- booking ----------------------------------------------------------------------
    def init(self, force_deploy: bool = False) -> Resources:
        """Start one sshd per host asked for (re-using the live ones the journal lists);
        return the hosts. Raises ProviderError if an sshd does not listen in time."""
        journal = self.ctx.journal
        recorded = {h["alias"]: h for h in (journal.get(JOURNAL_KEY) or {}).get("hosts", [])}
        base = Path(self.ctx.env_dir) / f"loopback-{self.ctx.run_id}"
        hosts: List[Host] = []
        for alias, roles in self._plan():
            entry = recorded.get(alias)
            if entry is None or force_deploy or not self._alive(entry):
                entry = {"alias": alias, "port": _free_port(), "dir": str(base / alias), "pid": None}
                recorded[alias] = entry
                journal.record(JOURNAL_KEY, {"hosts": list(recorded.values())})   # before the side effect
                checkpoint("loopback.host_planned")
                self._write_files(Path(entry["dir"]), entry["port"])
                checkpoint("loopback.files_written")
                entry["pid"] = self._start_sshd(Path(entry["dir"]))
                journal.record(JOURNAL_KEY, {"hosts": list(recorded.values())})   # the handle, at once
                checkpoint("loopback.sshd_started")
            hosts.append(Host(alias=alias, address="127.0.0.1", port=entry["port"], user=getpass.getuser(),
                              keyfile=str(self.ctx.ssh_key) if self.ctx.ssh_key else None, roles=roles,
                              host_key=_public_key(Path(entry["dir"]) / "host_key.pub")))
        _wait_listening(hosts, recorded)
        checkpoint("loopback.ready")
        return Resources(hosts=hosts, networks=[])

    def _plan(self) -> List[tuple]:
        """(alias, roles) of every host asked for: ``<role>-<n>``, numbered per role."""
        seen: Dict[str, int] = {}
        out = []
        for m in self.ctx.config.machines:
            for _ in range(m.count):
                seen[m.roles[0]] = seen.get(m.roles[0], 0) + 1
                out.append((f"{m.roles[0]}-{seen[m.roles[0]]}", list(m.roles)))
        return out

    def _sshd(self) -> str:
        found = self.ctx.options.get("sshd") or _find_sshd()
        if not found:
            raise ProviderError("no sshd on this machine (apt-get install openssh-server)")
        return found

    def _write_files(self, d: Path, port: int) -> None:
        d.mkdir(parents=True, exist_ok=True)
        key = d / "host_key"
        if not key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"enos-{self.ctx.run_id}",
                            "-f", str(key)], check=True, stdin=subprocess.DEVNULL)
        (d / "authorized_keys").write_text(self.ctx.ssh_pubkey + "\n")
        (d / "sshd_config").write_text(
            f"ListenAddress 127.0.0.1:{port}\nHostKey {key}\nPidFile {d}/sshd.pid\n"
            f"AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            "UseDNS no\nPrintMotd no\nMaxStartups 100:30:200\nMaxSessions 100\n")

    def _start_sshd(self, d: Path) -> int:
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", exist_ok=True)        # sshd's privilege separation dir
        with open(d / "sshd.log", "ab") as log:      # the run id is in the config's path: sweep finds it
            p = subprocess.Popen([self._sshd(), "-D", "-f", str(d / "sshd_config")],
                                 stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        return p.pid

    @staticmethod
    def _alive(entry: dict) -> bool:
        """True if the entry's recorded sshd still runs (the same process: its command line
        names the host's directory)."""
        pid = entry.get("pid")
        return bool(pid) and process.alive(pid) and entry["dir"] in _cmdline(pid)

    # --- giving back --------------------------------------------------------------------
    def destroy(self) -> None:
        """Stop every sshd the journal lists and remove its files; idempotent. Raises
        DestroyIncomplete listing the sshds that would not stop."""
        entries = (self.ctx.journal.get(JOURNAL_KEY) or {}).get("hosts", [])
        left = process.end_pids([e["pid"] for e in entries if self._alive(e)])
        if left:
            raise DestroyIncomplete([f"sshd pid {p}" for p in left])
        for e in entries:
            shutil.rmtree(e["dir"], ignore_errors=True)
        self.ctx.journal.forget(JOURNAL_KEY)

    def sweep(self) -> List[str]:
        """Stop every sshd of this run id, whatever the journal says (found by the
        ``loopback-<run id>/`` directory in its command line); return them."""
        mark = f"/loopback-{self.ctx.run_id}/"
        pids = process.pids_with_arg(lambda arg: mark in arg and "sshd" in arg)
        left = process.end_pids(pids)
        if left:
            raise DestroyIncomplete([f"sshd pid {p}" for p in left])
        return [f"sshd pid {p}" for p in pids]

    def check(self) -> List[Check]:
        """sshd and ssh-keygen must be installed."""
        sshd = self.ctx.options.get("sshd") or _find_sshd()
        keygen = shutil.which("ssh-keygen")
        return [Check("sshd", bool(sshd), sshd or "not found", fix="apt-get install openssh-server"),
                Check("ssh-keygen", bool(keygen), keygen or "not found", fix="apt-get install openssh-client")]


def _find_sshd():
    for p in ("/usr/sbin/sshd", "/usr/local/sbin/sshd"):
        if os.access(p, os.X_OK):
            return p
    return shutil.which("sshd")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _public_key(path: Path) -> str:
    return " ".join(path.read_text().split()[:2])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _wait_listening(hosts: List[Host], recorded: Dict[str, dict]) -> None:
    """Wait until every host's port accepts connections; raise ProviderError with its sshd's
    log otherwise."""
    deadline = time.monotonic() + READY_TIMEOUT
    for h in hosts:
        while True:
            try:
                socket.create_connection(("127.0.0.1", h.port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    log = Path(recorded[h.alias]["dir"], "sshd.log")
                    raise ProviderError(f"sshd of {h.alias} does not listen on port {h.port}: "
                                        f"{log.read_text()[-300:] if log.exists() else 'no log'}") from None
                time.sleep(0.05)
