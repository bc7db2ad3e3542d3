"""Running ``vagrant`` for an env (python-vagrant, imported lazily): its environment (the
run tag of :mod:`enos.process`, no update checks), ``up`` with progress and a deadline,
``status``, ``ssh-config``, and the VirtualBox leftovers. Every vagrant process carries the
env's run tag, so a kill -9 of enos leaves nothing that ``destroy`` cannot find."""
from __future__ import annotations

import re
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, List, Optional

from enos import process
from enos.errors import EnosError, ProviderError, Timeout, UsageError
from enos.failpoint import checkpoint
from enos.vagrant.box import vagrant_home


def vagrant_env(run_id: str) -> Dict[str, str]:
    """Return the environment of a vagrant command of run ``run_id`` (tagged, quiet)."""
    env = process.run_environ(run_id)
    env.update({"VAGRANT_CHECKPOINT_DISABLE": "1",
                "VAGRANT_BOX_UPDATE_CHECK_DISABLE": "1", "VAGRANT_NO_COLOR": "1"})
    return env


def parse_ssh_config(text: str) -> Dict[str, Dict[str, str]]:
    """Return ``{host: {option: value}}`` of ``vagrant ssh-config`` output."""
    out: Dict[str, Dict[str, str]] = {}
    cur: Optional[Dict[str, str]] = None
    for line in text.splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) != 2:
            continue
        key, value = parts
        if key == "Host":
            cur = out.setdefault(value, {})
        elif cur is not None:
            cur[key] = value.strip('"')
    return out


def vagrant_bin() -> str:
    """Return the path of ``vagrant``. Raises UsageError (how to install it) if missing."""
    path = shutil.which("vagrant")
    if not path:
        raise UsageError("vagrant is not installed: apt-get install vagrant vagrant-libvirt "
                         "(Debian/Ubuntu; see docs/providers/vagrant.md for macOS)")
    return path


def libvirt_plugin() -> Optional[str]:
    """Return where the vagrant-libvirt plugin is installed (Debian package or
    ``vagrant plugin install``), or None."""
    roots = [Path("/usr/share/rubygems-integration/all/gems"), Path("/usr/share/vagrant-plugins")]
    roots += sorted((vagrant_home() / "gems").glob("*/gems"))      # vagrant plugin install
    for root in roots:
        if root.is_dir():
            for p in root.glob("vagrant-libvirt-*"):
                if p.is_dir():
                    return str(p)
    return None


def client(rec: dict, run_id: str, log) -> Any:
    """Return a python-vagrant client of the env's Vagrant directory, writing to ``log``."""
    import vagrant

    @contextmanager
    def to_log():
        yield log
    return vagrant.Vagrant(root=rec["dir"], env=vagrant_env(run_id), out_cm=to_log, err_cm=to_log)


def all_running(rec: dict, run_id: str) -> bool:
    """True if every planned machine is running (one ``vagrant status``)."""
    try:
        with open(Path(rec["dir"]) / "vagrant.log", "a") as log:
            st = client(rec, run_id, log).status()
    except Exception:   # noqa: BLE001 - any failure means: run up again
        return False
    running = {s.name for s in st if s.state == "running"}
    return all(m["name"] in running for m in rec["machines"])


def up(rec: dict, run_id: str, timeout: float, progress) -> None:
    """``vagrant up`` (progress per machine booted, output into ``vagrant.log``); on any
    failure or interrupt, end every vagrant process of the run. Raises ProviderError (with
    the log's tail), Timeout after ``timeout`` seconds."""
    logf = Path(rec["dir"]) / "vagrant.log"
    names = [m["name"] for m in rec["machines"]]
    with open(logf, "a") as log, progress.task(f"vagrant up ({rec['backend']})", total=len(names)) as task:
        deadline = time.monotonic() + timeout
        try:
            ready = set()
            for line in client(rec, run_id, log).up(provider=rec["backend"], stream_output=True):
                log.write(line)
                log.flush()
                text = line.strip()
                for n in names:
                    if text.startswith(f"==> {n}: Machine booted and ready") and n not in ready:
                        ready.add(n)
                        task.advance()
                if text.startswith("==>"):
                    task.update(text[4:][:70])
                if time.monotonic() > deadline:
                    raise EnosError(f"vagrant up did not finish within {timeout:.0f}s")
        except subprocess.CalledProcessError as e:
            process.end_run(run_id, timeout=10.0)
            raise ProviderError(f"vagrant up failed (exit {e.returncode}); its log ({logf}) says:\n"
                                + tail(logf)) from None
        except EnosError as e:
            process.end_run(run_id, timeout=10.0)
            raise Timeout(f"{e}; log: {logf}") from None
        except BaseException:
            process.end_run(run_id, timeout=10.0)      # Ctrl-C/SIGTERM: no vagrant left behind
            raise
    checkpoint("vagrant.up_done")


def tail(path: Path, lines: int = 15) -> str:
    """Return what the log ``path`` says went wrong: the messages of Vagrant's per-machine
    errors (:func:`machine_errors`) when it has some, else its last ``lines`` lines ("(no
    log)" if unreadable)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    errors = machine_errors(text)
    if errors:
        return "\n".join(f"{name}: {message}" for name, message in errors)
    return "\n".join(text.strip().splitlines()[-lines:])


#: how Vagrant starts the report of one machine's error in a parallel action
#: (vagrant.general.batch_unexpected_error / batch_vagrant_error)
_MACHINE_ERROR = re.compile(r"An (?:unexpected )?error occurred (?:when|while) executing the action on the\s+"
                            r"'([^'\n]+)'\s+machine\. Please [^\n]*:\n\n")
#: a line of a Ruby backtrace ("/usr/share/.../warden.rb:48:in `call'")
_BACKTRACE = re.compile(r"^\s*(?:from )?\S+\.rb:\d+:in ")


def machine_errors(text: str, lines: int = 6) -> List[tuple]:
    """Return ``[(machine, message)]`` for each machine whose error Vagrant reported in
    ``text`` (its output): the message without the Ruby backtrace that follows an
    unexpected error, at most ``lines`` lines of it. Vagrant's log ends with that backtrace,
    so its tail alone never says what failed (seen: "vagrant up failed" with 15 lines of
    warden.rb)."""
    out = []
    for m in _MACHINE_ERROR.finditer(text):
        message = []
        for line in text[m.end():].splitlines():
            if _BACKTRACE.match(line) or (not line.strip() and message and len(message) >= lines):
                break
            if line.startswith("An error occurred") or line.startswith("An unexpected error occurred"):
                break
            message.append(line.rstrip())
        while message and not message[-1].strip():
            message.pop()
        out.append((m.group(1), " / ".join(x.strip() for x in message[:lines] if x.strip()) or "(no message)"))
    return out


def ssh_addresses(rec: dict, run_id: str) -> Dict[str, Dict[str, Any]]:
    """Return ``{machine: {address, port, vagrant_user}}`` from ``vagrant ssh-config``.
    Raises ProviderError (vagrant failing, a machine without address)."""
    logf = Path(rec["dir"]) / "vagrant.log"
    with open(logf, "a") as log:
        try:
            text = client(rec, run_id, log).ssh_config()
        except subprocess.CalledProcessError as e:
            raise ProviderError(f"vagrant ssh-config failed (exit {e.returncode}):\n" + tail(logf)) from None
    conf = parse_ssh_config(text)
    out = {}
    for m in rec["machines"]:
        c = conf.get(m["name"])
        if not c or not c.get("HostName"):
            raise ProviderError(f"vagrant ssh-config has no address for {m['name']}:\n{text[-1000:]}")
        out[m["name"]] = {"address": c["HostName"], "port": int(c.get("Port", 22)),
                          "vagrant_user": c.get("User")}
    return out


def destroy(rec: dict, run_id: str) -> None:
    """``vagrant destroy -f`` if machines may exist (a failure is logged: what is left is
    removed by name afterwards)."""
    vdir = Path(rec["dir"])
    if rec.get("up_started") and (vdir / "Vagrantfile").exists() and (vdir / ".vagrant").exists() \
            and shutil.which("vagrant"):
        with open(vdir / "vagrant.log", "a") as log:
            try:
                client(rec, run_id, log).destroy()
            except subprocess.CalledProcessError as e:
                log.write(f"enos: vagrant destroy failed (exit {e.returncode}); removing by name\n")
        checkpoint("vagrant.destroy.vagrant_done")


def remove_virtualbox(rec: dict) -> List[str]:
    """Unregister and delete the VirtualBox VMs ``rec`` names; return what resisted."""
    vbox = shutil.which("VBoxManage")
    if not vbox:
        return []
    left = []
    for m in rec["machines"]:
        p = subprocess.run([vbox, "unregistervm", m["domain"], "--delete"], capture_output=True, text=True,
                           stdin=subprocess.DEVNULL)
        if p.returncode != 0 and "Could not find" not in p.stderr:
            left.append(f"VirtualBox VM {m['domain']}: {p.stderr.strip()[-200:]}")
    return left


def sweep_virtualbox(run_id: str) -> List[str]:
    """Delete every VirtualBox VM named ``enos-<run_id>-*``; return what was removed."""
    vbox = shutil.which("VBoxManage")
    removed: List[str] = []
    if vbox:
        names = subprocess.run([vbox, "list", "vms"], capture_output=True, text=True).stdout
        for line in names.splitlines():
            name = line.split('"')[1] if '"' in line else ""
            if name.startswith(f"enos-{run_id}-"):
                subprocess.run([vbox, "unregistervm", name, "--delete"], capture_output=True)
                removed.append(f"VirtualBox VM {name}")
    return removed
