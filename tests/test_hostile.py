"""Hostile input through the real CLI: every value bounded and refused with exit 2 and a
clear message (no traceback, nothing booked), and reservation strings never becoming
ssh_config lines or options.

Each case runs ``python -m enos`` as a subprocess, the way a user (or an attacker's
reservation file) reaches it. Speed is not asserted here (the machine is shared); the
figures are measured by ``bench/hostile_inputs.py``.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from enos.provider.provider import Host, Resources
from enos.state import State

DATA = Path(__file__).resolve().parent / "data" / "hostile"

STATIC = "provider: static\nresources:\n  db:\n    - address: 10.0.0.3\n"
LOCAL_UNKNOWN_KEY = ("provider: local\nresources:\n  machines:\n    - roles: [db]\n      nodes: 1\n"
                     "      extra_host: {a: 10.0.0.7}\n")
STATIC_BIG_NET = ("provider:\n  type: static\n  networks:\n    - cidr: {cidr}\n"
                  "resources:\n  db:\n    - address: 10.0.0.3\n")
TOPOLOGY_HUGE = "provider: g5k\ntopology:\n  g[1-100000000]:\n    paravance:\n      compute: 1\n"


def enos(cwd, *args, timeout=120):
    return subprocess.run([sys.executable, "-m", "enos", *args], capture_output=True, text=True,
                          cwd=str(cwd), stdin=subprocess.DEVNULL, timeout=timeout)


@pytest.fixture
def ready_env(tmp_path):
    """A ready env of the static provider (state written through the real State class)."""
    res = tmp_path / "reservation.yaml"
    res.write_text(STATIC)
    env = tmp_path / "env"
    env.mkdir()
    st = State.create(env, str(res), {"provider": "static", "resources": {"db": [{"address": "10.0.0.3"}]}},
                      "static")
    st.data["resources"] = Resources(hosts=[Host(alias="db-1", address="10.0.0.3", roles=["db"])]).to_dict()
    st.set_phase("ready")
    return env


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


CASES = [
    # (id, argv, files to create {name: text}, words expected in stderr)
    ("ssh-timeout-word", ["up", "--ssh-timeout", "abc"], {}, "--ssh-timeout: expected a number of seconds, got 'abc'"),
    ("ssh-timeout-nan", ["up", "--ssh-timeout", "nan"], {}, "--ssh-timeout: expected a number of seconds between"),
    ("ssh-timeout-inf", ["up", "--ssh-timeout", "1e400"], {}, "got '1e400'"),
    ("ssh-timeout-negative", ["up", "--ssh-timeout=-5"], {}, "got '-5'"),
    ("run-timeout-word", ["run", "--timeout", "abc", "true"], {}, "--timeout: expected a number of seconds, got 'abc'"),
    ("backup-timeout-word", ["backup", "--timeout", "abc", "/etc"], {}, "--timeout: expected a number of seconds, got 'abc'"),
    ("backup-timeout-nan", ["backup", "--timeout", "nan", "/etc"], {}, "--timeout: expected a number of seconds between"),
    ("backup-timeout-negative", ["backup", "--timeout=-1", "/etc"], {}, "got '-1'"),
    ("backup-xml", ["backup", "-o", "xml", "/etc"], {}, "--output must be text or json, not 'xml'"),
    ("tc-xml", ["tc", "-o", "xml"], {}, "--output must be text or json, not 'xml'"),
    ("env-in-proc", ["up", "-f", "static.yaml", "--env", "/proc/x"], {"static.yaml": STATIC},
     "cannot create the environment directory /proc/x"),
    ("info-env-in-proc", ["info", "--env", "/proc/x"], {}, "no enos environment in /proc/x"),
    ("new-no-dir", ["new", "-o", "/nodir/x.yaml"], {}, "-o /nodir/x.yaml: no directory /nodir"),
    ("new-dir-force", ["new", "-o", ".", "--force"], {}, "-o .: is a directory"),
    ("new-dev-full", ["new", "-o", "/dev/full", "--force"], {}, "-o /dev/full: not a regular file"),
    ("validate-xml", ["validate", "-f", "static.yaml", "-o", "xml"], {"static.yaml": STATIC},
     "--output must be text or json, not 'xml'"),
    ("info-xml", ["info", "-o", "xml"], {}, "--output must be text, json or yaml, not 'xml'"),
    ("run-xml", ["run", "-o", "xml", "true"], {}, "--output must be text or json, not 'xml'"),
    ("validate-dev-zero", ["validate", "-f", "/dev/zero"], {}, "/dev/zero: is a device, not a regular file"),
    ("validate-topology-huge", ["validate", "-f", "topo.yaml"], {"topo.yaml": TOPOLOGY_HUGE},
     "topo.yaml:3: topology.g[1-100000000]: the range [1-100000000] names 100000000 groups; at most 1000"),
    ("local-unknown-key", ["validate", "-f", "local.yaml"], {"local.yaml": LOCAL_UNKNOWN_KEY},
     "local.yaml:6: resources.machines.0.extra_host: unknown key"),
]


@pytest.mark.parametrize("argv,files,words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_command_line_values_exit_2(tmp_path, argv, files, words):
    for name, text in files.items():
        _write(tmp_path, name, text)
    p = enos(tmp_path, *argv)
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert words in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "current").exists()


def test_run_roles_naming_nothing_exits_2(ready_env):
    p = enos(ready_env.parent, "run", "--env", str(ready_env), "--roles", ",,", "true")
    assert p.returncode == 2 and "--roles ',,': names no role or host" in p.stderr, p.stderr


def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "reservation.yaml"
    os.mkfifo(fifo)
    p = enos(tmp_path, "validate", "-f", str(fifo), timeout=60)    # a blocking open would time out
    assert p.returncode == 2 and "is a FIFO, not a regular file" in p.stderr, p.stderr


def test_huge_file_is_refused_unread(tmp_path):
    big = tmp_path / "reservation.yaml"
    with open(big, "w") as f:
        f.write(STATIC)
        f.write("# padding\n" * (5 << 20))          # 50 MB of comments
    p = enos(tmp_path, "validate", "-f", str(big))
    assert p.returncode == 2 and "may be at most 1048576 bytes" in p.stderr, p.stderr


def test_alias_bomb_is_refused(tmp_path):
    levels = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, cur in zip("abcdefgh", "bcdefghi"):
        levels.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    _write(tmp_path, "reservation.yaml", STATIC + "bomb:\n" + "".join(f"  {x}\n" for x in levels))
    p = enos(tmp_path, "validate")
    assert p.returncode == 2 and "values once YAML aliases are expanded (an alias bomb?)" in p.stderr, p.stderr


@pytest.mark.parametrize("cidr,size,ranges", [("10.0.0.0/8", 2 ** 24 - 3, 2), ("128.0.0.0/1", 2 ** 31 - 2, 1)])
def test_huge_static_network_is_a_range(tmp_path, cidr, size, ranges):
    """A /8 or /1 pool is held as ranges: validate answers at once, the pool says its size."""
    _write(tmp_path, "reservation.yaml", STATIC_BIG_NET.format(cidr=cidr))
    p = enos(tmp_path, "validate")
    assert p.returncode == 0, p.stderr
    from enos.provider.provider import IpPool
    pool = IpPool.from_range(cidr, exclude=["10.0.0.3"])
    assert pool.size == size and len(pool.ranges) == ranges and pool.take(2) == [
        str(__import__("ipaddress").ip_network(cidr).network_address + 1),
        str(__import__("ipaddress").ip_network(cidr).network_address + 2)]


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("*.yaml")))
def test_injected_ssh_config_lines_are_refused(tmp_path, name):
    """A static address/user/alias carrying a second ssh_config line or an ssh option is
    refused by validate and by up (exit 2, file:line:key), and the command never runs."""
    text = (DATA / name).read_text()
    expected = text.split("\n", 1)[0][len("# expect: "):]
    target = Path("/tmp/enos-pwned")
    target.unlink(missing_ok=True)
    res = tmp_path / name
    res.write_text(text)
    for argv in (["validate", "-f", name], ["up", "-f", name, "--ssh-timeout", "5"]):
        p = enos(tmp_path, *argv)
        assert p.returncode == 2, (argv, p.stdout, p.stderr)
        assert f"error: {expected}" in p.stderr, p.stderr
    assert not target.exists()
    assert not (tmp_path / "current").exists()


def test_ssh_config_writer_refuses_what_validation_missed(tmp_path):
    """A provider returning a host whose address holds a newline: the writer refuses it."""
    from enos.errors import UnsafeValue
    from enos.ssh.client import render_ssh_config
    bad = Host(alias="a", address="10.0.0.1\n  ProxyCommand touch /tmp/x")
    with pytest.raises(UnsafeValue, match="refusing to write address"):
        render_ssh_config([bad], tmp_path / "known_hosts", "hostile0")
    with pytest.raises(UnsafeValue, match="alias '-oProxyCommand=x'"):
        render_ssh_config([Host(alias="-oProxyCommand=x", address="10.0.0.1")], tmp_path / "kh", "hostile0")


def test_ssh_config_quotes_paths_with_spaces(tmp_path):
    from enos.ssh.client import render_ssh_config
    d = tmp_path / "my env"
    d.mkdir()
    text = render_ssh_config([Host(alias="a", address="10.0.0.1", keyfile=str(d / "id key"))],
                             d / "known_hosts", "hostile0")
    assert f'IdentityFile "{d}/id key"' in text and f'UserKnownHostsFile "{d}/known_hosts"' in text
    # ssh itself reads it back as one value each
    cfg = d / "ssh_config"
    cfg.write_text(text)
    out = subprocess.run(["ssh", "-G", "-F", str(cfg), "a"], capture_output=True, text=True, check=True).stdout
    assert f"identityfile {d}/id key" in out and f"userknownhostsfile {d}/known_hosts" in out


# --- the control-socket directory and the masters behind it ------------------------------

NOBODY = 65534


def _as_nobody_dir(path: Path) -> Path:
    path.mkdir(mode=0o700)
    os.chown(path, NOBODY, NOBODY)
    return path


@pytest.mark.root
def test_control_dir_made_by_another_user_is_refused(tmp_path):
    """/tmp/enos-ssh-<uid> created first by another user (here: nobody, really chowned):
    'enos up' refuses it before booking anything, exit 2, saying why."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    tmp.chmod(0o1777)
    _as_nobody_dir(tmp / f"enos-ssh-{os.getuid()}")
    (tmp_path / "reservation.yaml").write_text(STATIC)
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    env["TMPDIR"] = str(tmp)
    p = subprocess.run([sys.executable, "-m", "enos", "up", "--ssh-timeout", "5"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert p.returncode == 2, p.stderr
    assert f"belongs to uid {NOBODY}, not to you" in p.stderr and "refusing to use it" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
    st = __import__("json").loads(next(tmp_path.glob("enos_*/state.json")).read_text())
    assert st["phase"] == "new" and not st["journal"]          # nothing booked


def test_world_writable_or_symlinked_control_dir_is_refused(tmp_path, monkeypatch):
    from enos.errors import UnsafeValue
    from enos.ssh import client
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)
    base = tmp_path / f"enos-ssh-{os.getuid()}"
    base.mkdir()
    base.chmod(0o777)
    with pytest.raises(UnsafeValue, match="has mode 0o777: other users could reach"):
        client.control_dir("abcd0123")
    base.rmdir()
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    base.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafeValue, match="is not a directory"):
        client.control_dir("abcd0123")
    base.unlink()
    d = client.control_dir("abcd0123")
    assert d == base / "abcd0123" and (base.stat().st_mode & 0o777) == 0o700
    client.stop_masters("abcd0123")
    assert not d.exists()


def test_xdg_runtime_dir_is_preferred(tmp_path, monkeypatch):
    from enos.ssh import client
    rt = tmp_path / "run-user"
    rt.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(rt))
    assert client.control_dir("abcd0123") == rt / "enos-ssh" / "abcd0123"
    rt.chmod(0o755)          # not a private runtime dir: not used
    assert client.control_base() != rt / "enos-ssh"


@pytest.mark.root
def test_mux_refuses_a_master_run_by_another_user(tmp_path):
    """A socket served by another uid (a real process running as nobody): enos run's mux
    client checks SO_PEERCRED and sends nothing — no command, no file descriptor."""
    import shutil
    import tempfile
    from enos.ssh import mux
    d = Path(tempfile.mkdtemp(prefix="enos-hostile-", dir="/tmp"))   # pytest's tmp is root-only
    os.chown(d, NOBODY, NOBODY)
    path = d / "master"
    server = subprocess.Popen(
        ["/usr/bin/python3", "-c",       # the system one: nobody cannot read the venv
         "import socket,sys\n"
         "s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(1)\n"
         "print('ready', flush=True)\n"
         "c,_=s.accept(); c.settimeout(3)\n"
         "try:\n  data=c.recv(65536)\nexcept Exception:\n  data=b''\n"
         "print(len(data), flush=True)\n", str(path)],
        user=NOBODY, group=NOBODY, stdout=subprocess.PIPE, text=True, cwd="/")
    try:
        assert server.stdout.readline().strip() == "ready"
        with pytest.raises(PermissionError, match=f"runs as uid {NOBODY}"):
            mux.open_session(str(path), "touch /tmp/should-not-run")
        out, _ = server.communicate(timeout=20)
        assert out.strip() == "0"                      # the master got not one byte
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        shutil.rmtree(d, ignore_errors=True)


# --- jump hosts: the user's known_hosts is not ignored --------------------------------------

@pytest.mark.root
def test_changed_key_of_a_known_gateway_is_detected(tmp_path):
    """A real namespace sshd as the gateway (jump host) of another namespace host. The
    user's own known_hosts knows the gateway with another key: ssh through the env's
    ssh_config refuses it. With the right key, or no entry at all, it goes through (and an
    unknown gateway is trusted on first use into the env's known_hosts only)."""
    import secrets as _secrets
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from localhosts import local_config, make_provider
    from enos.ssh.client import render_known_hosts, render_ssh_config, stop_masters
    prov = make_provider(tmp_path / "env", local_config({"gw": 1, "node": 1}))
    agent = None
    runs = []
    try:
        res = prov.init()
        gw, node = res.hosts
        key = prov.ctx.ssh_key
        sock = tmp_path / "agent.sock"
        agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        for _ in range(100):
            if sock.exists():
                break
            __import__("time").sleep(0.05)
        env = dict(os.environ, SSH_AUTH_SOCK=str(sock))
        subprocess.run(["ssh-add", "-q", str(key)], env=env, check=True, capture_output=True)
        other_key = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")],
                                   check=True, capture_output=True)
        wrong = " ".join((tmp_path / "other.pub").read_text().split()[:2])
        target = Host(alias="tgt", address=node.address, keyfile=str(key), host_key=node.host_key,
                      jump=f"root@{gw.address}")

        def attempt(user_entry):
            run = "hk" + _secrets.token_hex(3)
            runs.append(run)
            d = tmp_path / run
            d.mkdir()
            user_kh = d / "user_known_hosts"
            user_kh.write_text(f"{gw.address} {user_entry}\n" if user_entry else "")
            kh = d / "known_hosts"
            kh.write_text(render_known_hosts([target]))
            cfg = d / "ssh_config"
            cfg.write_text(render_ssh_config([target], kh, run, user_known=user_kh))
            p = subprocess.run(["ssh", "-F", str(cfg), "tgt", "hostname"], env=env, capture_output=True,
                               text=True, timeout=60, stdin=subprocess.DEVNULL)
            # the jump connection alone, as the ProxyCommand makes it (its own messages shown)
            j = subprocess.run(["ssh", "-F", str(cfg), "-o", "LogLevel=INFO", "-l", "root", gw.address, "true"],
                               env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
            return p, j, kh.read_text()

        p, j, kh = attempt(wrong)
        assert p.returncode == 255 and j.returncode == 255, (p.stderr, j.stderr)
        assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in j.stderr and "Host key verification failed" in j.stderr
        assert f"Offending ED25519 key in {tmp_path}" in j.stderr, j.stderr
        assert gw.address not in kh
        p, j, kh = attempt(gw.host_key)
        assert p.returncode == 0 and j.returncode == 0, (p.stderr, j.stderr)
        assert p.stdout.strip() == node.extra["enos_hostname"]
        p, j, kh = attempt(None)
        assert p.returncode == 0 and j.returncode == 0, (p.stderr, j.stderr)
        assert f"{gw.address} {gw.host_key}" in kh          # trusted on first use, in the env's file
    finally:
        for run in runs:
            stop_masters(run)
        if agent is not None:
            agent.kill()
            agent.wait()
        prov.destroy()
