"""Interrupted or killed, enos ends cleanly and leaves no process behind (issue 10 §1, §2).

Every test drives a real ``python -m enos`` process, started in a session and process
group of its own, and sends it real signals: SIGINT to the whole process group (what a
terminal's Ctrl-C does) or SIGTERM to its pid, or SIGKILL. A watcher thread walks /proc
while enos runs and remembers every descendant (pid + start time) and every session they
created; after the command, none of them may be alive (the environment's own hosts — the
sshds in its network namespaces — until ``enos destroy``, which must then free them too).
"""
from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

import pytest

from enos import process
from enoscli import enos
from localhosts import leftovers, wait_running

pytestmark = pytest.mark.root

#: the promise: exit 130 within 2 s of the signal, asserted (tests/promise.py, shared with
#: every test that interrupts enos), and reported as FIGURE lines
from promise import assert_interrupted_in_time  # noqa: E402

LOCAL = """\
provider:
  type: local
resources:
  local:
    node: 2
provision:
  - slow.yml
"""

# a playbook that marks when it is busy on every host, then keeps Ansible (its workers,
# their ssh sessions) busy for a long time
SLOW_PLAYBOOK = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: mark busy
      ansible.builtin.file:
        path: "{{ enos_scratch }}/busy"
        state: touch
    - name: wait
      ansible.builtin.command: sleep 300
"""


class Watched:
    """A real ``enos`` subprocess in its own session, and every process it gave rise to."""

    def __init__(self, cwd: Path, *args: str, env: Optional[dict] = None, argv: Optional[List[str]] = None):
        e = {k: v for k, v in os.environ.items() if not k.startswith("ENOS_FAILPOINT")}
        e.update(env or {})
        self.started = process.proc_stat(os.getpid()).start  # ticks; everything after is new
        self.proc = subprocess.Popen(argv or [sys.executable, "-m", "enos", *args], cwd=str(cwd), env=e,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.pid = self.proc.pid
        self.seen: Set[Tuple[int, int]] = set()      # (pid, start) of every descendant
        self.sessions: Set[int] = {self.pid}         # sessions enos or a descendant created
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        self.stderr = ""
        self.stdout = ""

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.scan()
            self._stop.wait(0.02)

    def scan(self) -> None:
        """Add the current descendants of enos to :attr:`seen`."""
        procs = process.all_procs()
        ours = {self.pid}
        changed = True
        while changed:
            changed = False
            for st in procs.values():
                if st.pid not in ours and (st.ppid in ours or st.session in self.sessions) \
                        and st.start >= self.started:
                    ours.add(st.pid)
                    changed = True
        for pid in ours:
            st = procs.get(pid)
            if st is not None:
                self.seen.add((pid, st.start))
                if st.session == pid:
                    self.sessions.add(pid)

    def wait(self, timeout: float) -> Optional[int]:
        """Wait for enos to exit; return its exit code (None if still running)."""
        try:
            self.stdout, self.stderr = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.proc.returncode

    def stop_watching(self) -> None:
        """Stop the /proc watcher (after a final scan)."""
        self.scan()
        self._stop.set()
        self._thread.join()

    def alive(self, exclude_netns: Tuple[str, ...] = ()) -> List[str]:
        """Return ``pid command`` of every process of :attr:`seen` (same pid and start time)
        or of its sessions that is still alive, except those inside the network namespaces
        whose names start with one of ``exclude_netns``."""
        skip = set()
        for prefix in exclude_netns:
            for name in os.listdir("/run/netns") if os.path.isdir("/run/netns") else ():
                if name.startswith(prefix):
                    try:
                        skip.add(os.stat(f"/run/netns/{name}").st_ino)
                    except OSError:
                        pass
        out = []
        for st in process.all_procs().values():
            if not st.alive or st.pid == os.getpid():
                continue
            if (st.pid, st.start) not in self.seen and not (st.session in self.sessions and st.start >= self.started):
                continue
            try:
                if os.stat(f"/proc/{st.pid}/ns/net").st_ino in skip:
                    continue
                cmd = Path(f"/proc/{st.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            out.append(f"{st.pid} {cmd.strip()}")
        return out

    def kill(self) -> None:
        """SIGKILL enos if it still runs (test clean-up)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _wait_for(cond, timeout: float, what: str, watched: Optional[Watched] = None) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if watched is not None and watched.proc.poll() is not None:
            out, err = watched.proc.communicate()
            raise AssertionError(f"enos exited ({watched.proc.returncode}) before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _send(w: Watched, how: str) -> float:
    """Send the signal (``int`` = SIGINT to the process group, like a terminal's Ctrl-C;
    ``term`` = SIGTERM to the pid); return the time it was sent."""
    t = time.monotonic()
    if how == "int":
        os.killpg(w.pid, signal.SIGINT)
    else:
        os.kill(w.pid, signal.SIGTERM)
    return t


def _state(env_dir: Path) -> dict:
    return json.loads((env_dir / "state.json").read_text())


FIGURES: Dict[str, float] = {}


def _interrupt(w: Watched, how: str, name: str) -> float:
    """Signal ``w``, assert exit 130 (no traceback) soon after; report the exact time."""
    sent = _send(w, how)
    rc = w.wait(timeout=60)
    took = time.monotonic() - sent
    assert rc == 130, f"rc {rc} after {took:.2f}s\n{w.stdout}\n{w.stderr}"
    assert "Traceback" not in w.stderr, w.stderr
    FIGURES[name] = took
    assert_interrupted_in_time(name, took)
    return took


# --------------------------------------------------------------------------- SSH wait

class SilentPort:
    """A loopback port that accepts connections and never says a word."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self._t = threading.Thread(target=self._accept, daemon=True)
        self._t.start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.fixture
def silent_port():
    p = SilentPort()
    yield p
    p.close()


@pytest.mark.parametrize("how", ["int", "term"])
def test_signal_during_ssh_wait(tmp_path, silent_port, how):
    """A static host on a port that accepts and never speaks: `enos up` waits for SSH
    (600 s allowed); the signal ends it at once with 130, no ssh left, env destroyable."""
    key = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    (tmp_path / "r.yaml").write_text(
        "provider: static\nresources:\n  node:\n"
        f"    - {{address: 127.0.0.1, port: {silent_port.port}, alias: mute, keyfile: {key}}}\n")
    log = tmp_path / "points.log"
    w = Watched(tmp_path, "up", "-f", "r.yaml", "--env", "env", env={"ENOS_FAILPOINT_LOG": str(log)})
    try:
        _wait_for(lambda: log.exists() and "task.files_written" in log.read_text(), 60, "the SSH wait", w)
        _wait_for(lambda: len(silent_port.conns) >= 1, 30, "the first probe", w)
        time.sleep(1.0)     # well inside a probe (ConnectTimeout 10 s)
        _interrupt(w, how, f"SIG{how.upper()} during the SSH wait")
        w.stop_watching()
        assert w.alive() == []
        assert _state(tmp_path / "env")["phase"] == "booked"
        enos(tmp_path, "destroy", "--env", "env")
        assert _state(tmp_path / "env")["phase"] == "destroyed"
    finally:
        w.kill()


# --------------------------------------------------------------------------- Ansible

def _slow_env(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(LOCAL)
    (tmp_path / "slow.yml").write_text(SLOW_PLAYBOOK)


def _busy(env_dir: Path) -> bool:
    try:
        rid = _state(env_dir)["run_id"]
    except (OSError, ValueError, KeyError):
        return False
    base = env_dir / f"local-{rid}"
    marks = list(base.glob("*/scratch/busy")) if base.exists() else []
    return len(marks) >= 2


@pytest.mark.parametrize("how", ["int", "term"])
def test_signal_during_ansible(tmp_path, how):
    """Mid-playbook (every host busy in a long task): exit 130 (not 1, "ansible exited with
    254") within 2 s, the recorded ansible-playbook session gone, no process of enos left
    but the hosts; `enos destroy` frees everything; the state file is whole."""
    _slow_env(tmp_path)
    env_dir = tmp_path / "env"
    w = Watched(tmp_path, "up", "-f", "r.yaml", "--env", "env")
    run_id = None
    try:
        _wait_for(lambda: _busy(env_dir), 300, "the playbook to be busy on every host", w)
        run_id = _state(env_dir)["run_id"]
        recs = process.records(env_dir)
        assert [r.what for r in recs] == ["ansible-playbook"], recs
        time.sleep(0.5)
        _interrupt(w, how, f"SIG{how.upper()} during Ansible")
        w.stop_watching()
        assert process.records(env_dir) == []
        assert process.proc_stat(recs[0].pid) is None or not process.proc_stat(recs[0].pid).alive
        assert w.alive(exclude_netns=(f"enos-{run_id}-",)) == []
        assert _state(env_dir)["phase"] == "booked"
        enos(tmp_path, "destroy", "--env", "env")
        assert w.alive() == []
        assert leftovers(run_id) == []
    finally:
        w.kill()
        if run_id and leftovers(run_id):
            enos(tmp_path, "destroy", "--env", "env", check=False)


def test_second_ctrl_c_during_cleanup(tmp_path):
    """Two Ctrl-C 50 ms apart during Ansible: still 130, the state file parses and nothing
    is left after destroy."""
    _slow_env(tmp_path)
    env_dir = tmp_path / "env"
    w = Watched(tmp_path, "up", "-f", "r.yaml", "--env", "env")
    run_id = None
    try:
        _wait_for(lambda: _busy(env_dir), 300, "the playbook to be busy", w)
        run_id = _state(env_dir)["run_id"]
        sent = _send(w, "int")
        time.sleep(0.05)
        os.killpg(w.pid, signal.SIGINT)
        rc = w.wait(60)
        took = time.monotonic() - sent
        FIGURES["two SIGINT during Ansible"] = took
        assert rc == 130, w.stderr
        assert "Traceback" not in w.stderr, w.stderr
        assert_interrupted_in_time("two SIGINT during Ansible", took)
        w.stop_watching()
        assert _state(env_dir)["run_id"] == run_id
        assert not list(env_dir.glob(".state.json.*"))
        assert w.alive(exclude_netns=(f"enos-{run_id}-",)) == []
        enos(tmp_path, "destroy", "--env", "env")
        assert w.alive() == [] and leftovers(run_id) == []
    finally:
        w.kill()
        if run_id and leftovers(run_id):
            enos(tmp_path, "destroy", "--env", "env", check=False)


N_KILLS = int(os.environ.get("ENOS_TEST_KILLS", "10"))


def test_kill_9_during_ansible_then_destroy(tmp_path):
    """N real kill -9 of `enos up` at random moments of the Ansible phase, each followed by
    `enos destroy`: 0 processes left. In every other run the recorded ansible-playbook and
    its workers are first frozen with SIGSTOP (workers busy elsewhere, not reacting), so
    the workers (each in a session of its own) are orphaned and only `destroy` can end
    them, through the record in the env dir."""
    _slow_env(tmp_path)
    rng = random.Random(int(os.environ.get("ENOS_TEST_SEED", "10")))
    running = orphaned = frozen = 0
    for i in range(N_KILLS):
        env_dir = tmp_path / f"env{i}"
        log = tmp_path / f"points{i}.log"
        w = Watched(tmp_path, "up", "-f", "r.yaml", "--env", env_dir.name, env={"ENOS_FAILPOINT_LOG": str(log)})
        run_id = None
        try:
            _wait_for(lambda: log.exists() and "task.before_preinstall" in log.read_text(), 300,
                      "the Ansible phase", w)
            run_id = _state(env_dir)["run_id"]
            if i % 2:       # inside the slow task: its workers (and their ssh) are running
                _wait_for(lambda: _busy(env_dir), 300, "the slow task", w)
                time.sleep(rng.uniform(0.0, 2.0))
            else:           # anywhere: preinstall, between playbooks, the slow playbook
                time.sleep(rng.uniform(0.0, 8.0))
            assert w.proc.poll() is None, w.proc.communicate()
            recs = process.records(env_dir)
            if i % 2 and recs:
                # freeze the playbook and its workers: the pty hang-up and the parent-death
                # signal then wake and end the playbook only, its workers stay orphaned
                members = process._members(recs[0], process.all_procs())
                for pid in members:
                    os.kill(pid, signal.SIGSTOP)
                frozen += len(members) > 1      # workers were there (not between two tasks)
            os.kill(w.pid, signal.SIGKILL)
            w.wait(30)
            running += bool(recs)
            time.sleep(0.3)
            w.stop_watching()
            if w.alive(exclude_netns=(f"enos-{run_id}-",)):
                orphaned += 1
            enos(tmp_path, "destroy", "--env", env_dir.name)
            left = w.alive()
            assert left == [], f"kill {i}: left after destroy: {left}"
            assert leftovers(run_id) == []
            assert process.records(env_dir) == []
        finally:
            w.kill()
            if run_id and leftovers(run_id):
                enos(tmp_path, "destroy", "--env", env_dir.name, check=False)
    print(f"\nFIGURE {N_KILLS} kill -9 of enos up during Ansible ({running} with ansible-playbook "
          f"running, {frozen} with workers frozen, {orphaned} leaving processes behind), 0 processes "
          f"left after destroy", file=sys.stderr)
    assert orphaned >= frozen >= 1, "no orphan: the destroy path was not exercised"


def test_sweep_with_the_env_dir_gone_ends_the_orphaned_playbook(tmp_path):
    """kill -9 of `enos up` in the middle of a playbook whose processes are frozen (so the
    parent-death signal cannot end them), then the env dir is deleted: the records are
    gone with it, and `enos destroy --sweep --run-id R` still ends ansible-playbook, its
    workers and their ssh — found by the exact ``ENOS_RUN_ID=R`` entry of their
    environment, never by name — and frees the hosts."""
    import shutil
    _slow_env(tmp_path)
    long_command = "sleep 3011"       # this test's own: the remote command of the long task
    (tmp_path / "slow.yml").write_text(SLOW_PLAYBOOK.replace("sleep 300", long_command))
    env_dir = tmp_path / "env"
    log = tmp_path / "points.log"
    w = Watched(tmp_path, "up", "-f", "r.yaml", "--env", env_dir.name, env={"ENOS_FAILPOINT_LOG": str(log)})
    run_id = None
    try:
        _wait_for(lambda: log.exists() and "task.before_preinstall" in log.read_text(), 300, "the Ansible phase", w)
        run_id = _state(env_dir)["run_id"]
        _wait_for(lambda: _busy(env_dir), 300, "the slow task", w)
        recs = process.records(env_dir)
        assert recs, "ansible-playbook was not recorded"
        # The long task runs on both hosts: its workers and their ssh are up and wait for it.
        # (Freezing as soon as the busy marks exist could catch the first task's workers while
        # they exit: an exiting process ignores SIGSTOP and nothing is left to orphan.)
        wait_running(long_command, 2, timeout=120, run_id=run_id)
        members = process._members(recs[0], process.all_procs())
        assert len(members) > 2, f"the playbook's workers were not found: {members}"
        for pid in members:
            os.kill(pid, signal.SIGSTOP)
        os.kill(w.pid, signal.SIGKILL)
        w.wait(30)
        time.sleep(0.3)
        w.stop_watching()
        orphans = w.alive(exclude_netns=(f"enos-{run_id}-",))
        assert orphans, "nothing was orphaned: the sweep path is not exercised"
        shutil.rmtree(env_dir)
        out = enos(tmp_path, "destroy", "--sweep", "--run-id", run_id, "-f", "r.yaml")
        assert w.alive() == [], f"left after the sweep: {w.alive()}\n{out.stdout}{out.stderr}"
        assert leftovers(run_id) == []
        print(f"\nFIGURE sweep without env dir: {len(orphans)} orphaned process(es) of the playbook ended",
              file=sys.stderr)
    finally:
        w.kill()
        if run_id:
            process.end_run(run_id)         # whatever the sweep left (exact environment tag)
            if leftovers(run_id):
                enos(tmp_path, "destroy", "--sweep", "--run-id", run_id, "-f", "r.yaml", check=False)


# --------------------------------------------------------------------------- enos run

def test_signal_during_run_and_destroyed_env(tmp_path):
    """`enos run 'sleep 3007'` (on every host, and on one host: the short path):
    SIGINT/SIGTERM end it within 2 s with 130; after destroy,
    `run`, `ssh` and `inventory` say the env is destroyed (exit 1) without touching the
    network or re-creating the control-socket dir, and a packet to a freed address is
    refused on this machine."""
    (tmp_path / "r.yaml").write_text(LOCAL.replace("provision:\n  - slow.yml\n", ""))
    enos(tmp_path, "up", "-f", "r.yaml", "--env", "env", "--no-provision", timeout=300)
    env_dir = tmp_path / "env"
    st = _state(env_dir)
    run_id = st["run_id"]
    address = st["resources"]["hosts"][0]["address"]
    cdir = Path(f"/tmp/enos-ssh-{os.getuid()}/{run_id}")
    try:
        # on both hosts (the fan-out), then on one (the short path, enos.experiment.quick)
        for i, (how, one) in enumerate((("int", ()), ("term", ()), ("int", ("--roles", "node-1")),
                                        ("term", ("--roles", "node-1")))):
            command = f"sleep {3007 + i}"          # its own command: the first one's may still be ending
            w = Watched(tmp_path, "run", "--env", "env", *one, command)
            try:
                wait_running(command, 1 if one else 2, run_id=run_id)      # the remote command runs
                assert w.proc.poll() is None
                _interrupt(w, how, f"SIG{how.upper()} during enos run" + (" on one host" if one else ""))
                w.stop_watching()
                # the env's connection masters are meant to stay (ControlPersist)
                left = [p for p in w.alive(exclude_netns=(f"enos-{run_id}-",)) if "[mux]" not in p]
                assert left == []
            finally:
                w.kill()
        enos(tmp_path, "destroy", "--env", "env")
        assert not cdir.exists()
        for args in (("run", "hostname"), ("ssh", "node-1", "true"), ("inventory",)):
            t = time.monotonic()
            p = enos(tmp_path, *args, "--env", "env", check=False, timeout=60) if args[0] != "ssh" else \
                enos(tmp_path, "ssh", "--env", "env", "node-1", "true", check=False, timeout=60)
            assert p.returncode == 1, (args, p.stdout, p.stderr)
            assert "destroyed" in p.stderr and "Traceback" not in p.stderr
            assert p.stdout == ""
            assert time.monotonic() - t < 30
            assert not cdir.exists(), f"enos {args[0]} re-created {cdir}"
        # the freed address: the kernel refuses it here (a local routing decision: "Network
        # is unreachable", ENETUNREACH), it is not sent out through the default route. bash's
        # /dev/tcp, not Python: the suite's network guard would refuse it before the kernel
        r = subprocess.run(["bash", "-c", f"exec 3<>/dev/tcp/{address}/22"], capture_output=True,
                           text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert r.returncode != 0 and "Network is unreachable" in r.stderr, r.stderr
        assert "unreachable" in subprocess.run(["ip", "route", "get", address], capture_output=True,
                                               text=True).stderr
    finally:
        if leftovers(run_id):
            enos(tmp_path, "destroy", "--env", "env", check=False)


def test_range_rules_and_check(tmp_path):
    """The policy rules are installed (by the suite's setup, as by `enos up`), idempotently,
    keep the resolver outside, and `enos check` shows them."""
    from enos.local import guard
    assert guard.missing_rules() == []
    assert guard.ensure_rules() == []        # idempotent: nothing added twice
    import ipaddress
    resolver = ipaddress.ip_address("10.255.255.53")
    assert not any(resolver in net for net in guard.RANGE)
    out = subprocess.run(["ip", "rule", "show"], capture_output=True, text=True, check=True).stdout
    assert out.count("unreachable") >= len(guard.RANGE)
    assert out.count("suppress_prefixlength 0") == 1
    p = enos(tmp_path, "check", "--provider", "local")
    assert "address range kept local: policy rules installed" in p.stdout
    # an address of the range that no live env routes: refused at once, locally
    free = next(ipaddress.ip_network("10.254.0.0/16").hosts())
    r = subprocess.run(["ip", "route", "get", str(free)], capture_output=True, text=True)
    assert r.returncode != 0 and "unreachable" in r.stderr.lower(), r


def test_records_match_pid_and_start_time(tmp_path):
    """A record whose pid now belongs to another process (other start time) ends nothing;
    a matching one ends the process and every member of its session."""
    p = subprocess.Popen(["sh", "-c", "sleep 300 & sleep 300 & wait"], start_new_session=True)
    try:
        _wait_for(lambda: len([s for s in process.all_procs().values() if s.session == p.pid]) >= 3, 10,
                  "the session")
        st = process.proc_stat(p.pid)
        stale = process.ChildRecord(pid=p.pid, start=st.start - 1, what="stale")
        assert process.end_recorded(tmp_path, only=[stale]) == []
        assert p.poll() is None, "a record with another start time killed the process"
        rec = process.record_process(tmp_path, p.pid, "sh")
        assert process.records(tmp_path) == [rec]
        assert process.end_recorded(tmp_path) == []
        p.wait(5)
        assert [s for s in process.all_procs().values() if s.session == p.pid and s.alive] == []
        assert process.records(tmp_path) == []
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


# --------------------------------------------------------------------------- Grid'5000

@pytest.fixture
def g5k(tmp_path):
    """The local Grid'5000 API server (jobs wait 600 s unless a test says otherwise)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from g5kserver import FakeG5k
    server = FakeG5k(sites={"rennes": {"paradoxe": 2}}, users={"alice": "pw-signals"},
                     waiting_s=600, launching_s=0.05, deploy_s=600)
    server.start()
    creds = tmp_path / "g5k.yaml"
    creds.write_text(f"username: alice\npassword: pw-signals\nuri: {server.url}\n")
    creds.chmod(0o600)
    key = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    yield server, {"G5K_CREDENTIALS_FILE": str(creds)}, key
    server.stop()


def _g5k_yaml(path: Path, key: Path, extra: str = "") -> None:
    path.write_text(f"""provider:
  type: g5k
  job_name: signals
  walltime: "1:00:00"
  gateway: root@127.0.0.1
  key: {key}.pub
  poll_interval: 0.5
  poll_max_interval: 30
{extra}resources:
  paradoxe:
    node: 2
""")


@pytest.mark.parametrize("phase", ["oar", "deploy"])
@pytest.mark.parametrize("how", ["int", "term"])
def test_signal_during_g5k_waits(tmp_path, g5k, phase, how):
    """OAR polling (a job that waits 600 s) and a kadeploy deployment (600 s), the latter
    polled from a worker thread: the signal ends `enos up` within 2 s with 130; the job
    stays recorded and `enos destroy` deletes it."""
    server, env, key = g5k
    if phase == "deploy":
        server.waiting_s = 0.05
    _g5k_yaml(tmp_path / "r.yaml", key, extra="  env_name: debian12-min\n" if phase == "deploy" else "")
    w = Watched(tmp_path, "up", "-f", "r.yaml", "--env", "env", env=env)
    try:
        pattern = "deployments" if phase == "deploy" else "jobs"
        _wait_for(lambda: server.count("POST", pattern) >= 1, 60, f"the {phase} wait", w)
        time.sleep(1.0)       # inside the poll loop (polls back off to 30 s)
        _interrupt(w, how, f"SIG{how.upper()} during g5k {'deployment' if phase == 'deploy' else 'OAR polling'}")
        w.stop_watching()
        assert w.alive() == []
        st = _state(tmp_path / "env")
        assert st["phase"] == "booking"
        assert len(server.active_jobs(st["run_id"])) == 1
        enos(tmp_path, "destroy", "--env", "env", env=env)
        assert server.active_jobs(st["run_id"]) == []
    finally:
        w.kill()


# --------------------------------------------------------------------------- image builds

BUILD_STEP = """\
import sys
from enos import signals
from enos.libvirt.image import _run
signals.install()
try:
    _run(["sh", "-c", "sleep 300 & sleep 300 & echo started > " + sys.argv[1] + "; wait"], "a build step")
except KeyboardInterrupt:
    sys.exit(130)
"""


@pytest.mark.parametrize("how", ["int", "term"])
def test_signal_during_image_build_step(tmp_path, how):
    """A build tool (here a shell with two background children, standing for mmdebstrap
    and its apt/dpkg) run by the image builder's runner: SIGTERM to enos' pid alone (no
    terminal to signal the group) still ends the tool's whole process group."""
    marker = tmp_path / "started"
    w = Watched(tmp_path, argv=[sys.executable, "-c", BUILD_STEP, str(marker)])
    try:
        _wait_for(marker.exists, 30, "the build step", w)
        time.sleep(0.3)
        _interrupt(w, how, f"SIG{how.upper()} during an image build step")
        w.stop_watching()
        assert w.alive() == []
    finally:
        w.kill()


# --------------------------------------------------------------------------- libvirt

@pytest.fixture(scope="module")
def libvirtd():
    """A private libvirtd (tests/libvirtd_fixture.py) and the cached enos image."""
    sys.path.insert(0, str(Path(__file__).parent))
    from libvirtd_fixture import FixtureUnavailable, ensure_packages, start_libvirtd
    try:
        ensure_packages()
        import libvirt  # noqa: F401
    except (FixtureUnavailable, ImportError) as e:
        from prereq import missing
        missing(f"libvirtd/QEMU unavailable: {e}")
    from enos.libvirt.image import build_image
    image = build_image()
    d = start_libvirtd()
    d.image = image
    try:
        yield d
    finally:
        problems = d.stop()
        assert not problems, problems


@pytest.mark.slow
@pytest.mark.libvirtd
def test_signal_during_libvirt_dhcp_wait(tmp_path, libvirtd):
    """A real VM booting under TCG: SIGTERM while enos waits for its DHCP lease ends `enos up`
    within 2 s with 130; `enos destroy` then removes the domain, networks and volumes."""
    sys.path.insert(0, str(Path(__file__).parent))
    from libvirtd_fixture import leftovers as lv_leftovers
    d = libvirtd
    (tmp_path / "r.yaml").write_text(f"""provider:
  type: libvirt
  uri: "{d.uri}"
  image: {d.image}
  jump: {d.jump}
  boot_timeout: 420
resources:
  tiny:
    node: 1
""")
    log = tmp_path / "points.log"
    w = Watched(tmp_path, "up", "-f", "r.yaml", "--env", "env", env={**d.env, "ENOS_FAILPOINT_LOG": str(log)})
    run_id = None
    try:
        _wait_for(lambda: log.exists() and "libvirt.domains_started" in log.read_text(), 300,
                  "the DHCP lease wait", w)
        run_id = _state(tmp_path / "env")["run_id"]
        time.sleep(1.0)
        _interrupt(w, "term", "SIGTERM during the libvirt DHCP-lease wait")
        w.stop_watching()
        assert lv_leftovers(d.uri, run_id), "nothing booked when the signal came"
        p = subprocess.run([sys.executable, "-m", "enos", "destroy", "--env", "env"], cwd=str(tmp_path),
                           env={**os.environ, **d.env}, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        assert lv_leftovers(d.uri, run_id) == []
        assert w.alive() == []
    finally:
        w.kill()
