"""libvirt provider against libvirt's built-in ``test:///default`` driver (fast, every run).

The test driver keeps its state in memory, shared by every connection of one process while
at least one stays open: the ``hypervisor`` fixture holds one, so a *new* provider object
(with only the journal) sees what an earlier one created — the in-process equivalent of a
cold destroy. It cannot persist across processes, which is why the CLI conformance suite
runs against the real libvirtd (tests/test_libvirt_real.py), not here. The test driver has
no DHCP leases (it invents an address per NIC) and boots nothing, so ``wait_ssh: false``.
"""
import gc
import os
import re
import subprocess

import pytest

from prereq import need_module  # noqa: E402

libvirt = need_module("libvirt", module_level=True)

from enos.task import reservation_from_data as config_from_data  # noqa: E402
from enos.errors import ConfigError, DestroyIncomplete, FailpointHit, ProviderError, Unsupported  # noqa: E402
from enos.libvirt import kvm, xml  # noqa: E402
from enos.provider.libvirt import FLAVOURS, LibvirtProvider, default_cidrs, jump_default  # noqa: E402
from enos.provider.provider import ProviderContext  # noqa: E402
from enos.state import MemoryJournal  # noqa: E402
from enos.ssh.keys import ensure_keypair  # noqa: E402

RUN = "0badcafe"
_OPEN = []   # providers made by a test: their connections are closed after it, so the
             # test driver's shared in-memory state is reset between tests


@pytest.fixture
def hypervisor():
    libvirt.registerErrorHandler(lambda *_: None, None)
    conn = libvirt.open("test:///default")
    yield conn
    while _OPEN:
        _OPEN.pop().close()
    conn.close()
    gc.collect()     # libvirt objects still referenced keep the shared state alive


@pytest.fixture
def image(tmp_path):
    img = tmp_path / "img" / "base.qcow2"
    img.parent.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(img), "64M"], check=True)
    (img.parent / "base.vmlinuz").write_bytes(b"kernel")
    (img.parent / "base.initrd").write_bytes(b"initrd")
    return img


def make_config(image, resources=None, **opts):
    prov = {"type": "libvirt", "uri": "test:///default", "image": str(image), "wait_ssh": False}
    prov.update(opts)
    return config_from_data({"provider": prov,
                             "resources": resources or {"tiny": {"control": 1, "compute": 2}}},
                            "reservation.yaml")


def make_provider(config, tmp_path, journal=None, run_id=RUN):
    key = ensure_keypair(tmp_path / "ssh", "test")
    ctx = ProviderContext(config=config, journal=journal or MemoryJournal(), env_dir=tmp_path,
                          run_id=run_id, ssh_key=key)
    prov = LibvirtProvider(ctx)
    _OPEN.append(prov)
    return prov


def ours(conn, run_id=RUN):
    """What of run_id exists on the test hypervisor, found by name and metadata."""
    out = [f"domain {d.name()}" for d in conn.listAllDomains(0)
           if xml.run_id_of(d.XMLDesc(0)) == run_id or d.name().startswith(f"enos-{run_id}-")]
    out += [f"network {n.name()}" for n in conn.listAllNetworks(0)
            if xml.run_id_of(n.XMLDesc(0)) == run_id or n.name().startswith(f"enos-{run_id}-")]
    for p in conn.listAllStoragePools(0):
        out += [f"volume {v.name()}" for v in p.listAllVolumes(0) if v.name().startswith(f"enos-{run_id}-")]
    return sorted(out)


def test_init_shape_pool_and_metadata(hypervisor, image, tmp_path):
    prov = make_provider(make_config(image), tmp_path)
    res = prov.init()
    assert [h.alias for h in res.hosts] == ["control-1", "compute-1", "compute-2"]
    assert [h.roles for h in res.hosts] == [["control"], ["compute"], ["compute"]]
    import ipaddress
    (pool,) = res.networks
    net = ipaddress.ip_network(pool.cidr)
    addrs = {h.address for h in res.hosts}
    assert len(addrs) == 3 and all(ipaddress.ip_address(a) in net for a in addrs)
    assert pool.gateway not in pool.free and not (set(pool.free) & addrs)
    plan = xml.split_network(pool.cidr)
    assert pool.free[0] == plan["pool_start"] and pool.free[-1] == plan["pool_end"]
    # the pool is outside the DHCP range
    lo, hi = ipaddress.ip_address(plan["dhcp_start"]), ipaddress.ip_address(plan["dhcp_end"])
    assert all(not (lo <= ipaddress.ip_address(a) <= hi) for a in pool.free)
    # every host has its own pinned host key and the env key
    keys = [h.host_key for h in res.hosts]
    assert all(k.startswith("ssh-ed25519 ") for k in keys) and len(set(keys)) == 3
    assert all(h.keyfile == str(prov.ctx.ssh_key) for h in res.hosts)
    # everything is tagged with the run id, MACs are distinct, tiny = 1 CPU / 512 MiB
    assert len(ours(hypervisor)) == 3 + 1 + 9      # domains, network, overlay + seed + console log
    macs = set()
    pool_obj = hypervisor.storagePoolLookupByName("default-pool")
    for h in res.hosts:
        dom = hypervisor.lookupByName(f"enos-{RUN}-{h.alias}")
        desc = dom.XMLDesc(0)
        assert xml.run_id_of(desc) == RUN
        # the console log is a volume of the pool (path from libvirt, not /var/log/libvirt/qemu)
        console = pool_obj.storageVolLookupByName(f"enos-{RUN}-{h.alias}-console.log").path()
        assert h.extra["enos_libvirt_console_log"] == console and f"file='{console}'" in desc
        assert dom.info()[3] == FLAVOURS["tiny"][0] and dom.info()[1] == FLAVOURS["tiny"][1] * 1024
        macs |= set(h.extra["enos_libvirt_networks"].values())
    assert len(macs) == 3
    prov.destroy()
    assert ours(hypervisor) == []


def test_journal_is_written_before_the_domains(hypervisor, image, tmp_path, monkeypatch):
    j = MemoryJournal()
    prov = make_provider(make_config(image), tmp_path, journal=j)
    monkeypatch.setenv("ENOS_FAILPOINTS", "libvirt.overlay_created=raise")
    with pytest.raises(FailpointHit):
        prov.init()
    rec = j.get("libvirt")
    assert [vm["alias"] for vm in rec["vms"]] == ["control-1", "compute-1", "compute-2"]
    assert all(vm["uuid"] and vm["nics"][0][1].startswith("52:54:00:") for vm in rec["vms"])
    assert rec["networks"][0]["uuid"]           # the network handle was recorded


@pytest.mark.parametrize("point", ["libvirt.base_uploaded", "libvirt.network_defined",
                                   "libvirt.network_started", "libvirt.overlay_created",
                                   "libvirt.seed_created", "libvirt.domain_defined",
                                   "libvirt.domains_started", "libvirt.addresses"])
def test_crash_anywhere_then_cold_destroy(hypervisor, image, tmp_path, monkeypatch, point):
    """A crash at each checkpoint, then destroy by a new provider object with only the
    journal, leaves nothing of the run."""
    j = MemoryJournal()
    monkeypatch.setenv("ENOS_FAILPOINTS", f"{point}=raise")
    with pytest.raises(FailpointHit):
        make_provider(make_config(image), tmp_path, journal=j).init()
    monkeypatch.delenv("ENOS_FAILPOINTS")
    make_provider(make_config(image), tmp_path, journal=j).destroy()
    assert ours(hypervisor) == []


def test_init_twice_books_once_and_resumes_after_a_crash(hypervisor, image, tmp_path, monkeypatch):
    j = MemoryJournal()
    monkeypatch.setenv("ENOS_FAILPOINTS", "libvirt.domain_defined=raise")
    with pytest.raises(FailpointHit):
        make_provider(make_config(image), tmp_path, journal=j).init()
    monkeypatch.delenv("ENOS_FAILPOINTS")
    first = make_provider(make_config(image), tmp_path, journal=j).init()
    booked = ours(hypervisor)
    second = make_provider(make_config(image), tmp_path, journal=j).init()
    assert ours(hypervisor) == booked
    assert [(h.alias, h.address, h.host_key) for h in first.hosts] == \
        [(h.alias, h.address, h.host_key) for h in second.hosts]
    prov = make_provider(make_config(image), tmp_path, journal=j)
    prov.destroy()
    prov.destroy()                               # idempotent
    assert ours(hypervisor) == []


def test_destroy_survives_resources_already_gone(hypervisor, image, tmp_path):
    j = MemoryJournal()
    make_provider(make_config(image), tmp_path, journal=j).init()
    dom = hypervisor.lookupByName(f"enos-{RUN}-compute-1")
    dom.destroy()
    dom.undefine()
    hypervisor.storagePoolLookupByName("default-pool").storageVolLookupByName(
        f"enos-{RUN}-control-1.qcow2").delete(0)
    make_provider(make_config(image), tmp_path, journal=j).destroy()
    assert ours(hypervisor) == []


def test_destroy_reports_what_resists(hypervisor, image, tmp_path, monkeypatch):
    j = MemoryJournal()
    make_provider(make_config(image), tmp_path, journal=j).init()
    import enos.provider.libvirt as provider_module
    monkeypatch.setattr(provider_module, "remove_network", lambda conn, name: f"network {name}: busy")
    with pytest.raises(DestroyIncomplete) as e:
        make_provider(make_config(image), tmp_path, journal=j).destroy()
    assert e.value.leftovers == [f"network enos-{RUN}-net0: busy"]
    assert ours(hypervisor) == [f"network enos-{RUN}-net0"]      # the rest went on
    monkeypatch.undo()
    make_provider(make_config(image), tmp_path, journal=j).destroy()
    assert ours(hypervisor) == []


def test_sweep_finds_by_run_id_without_journal(hypervisor, image, tmp_path):
    make_provider(make_config(image), tmp_path).init()
    other = make_provider(make_config(image), tmp_path / "o", run_id="feedf00d")
    other.init()
    removed = make_provider(make_config(image), tmp_path).sweep()   # a fresh, empty journal
    assert len(removed) == 13 and ours(hypervisor) == []
    assert len(ours(hypervisor, "feedf00d")) == 13                   # another run untouched
    other.destroy()


def test_undeclared_capability_raises(hypervisor, image, tmp_path):
    with pytest.raises(Unsupported):
        make_provider(make_config(image), tmp_path).extend("1:00")


def test_explicit_machines_flavours_and_extra_networks(hypervisor, image, tmp_path):
    cfg = make_config(image, resources={"machines": [
        {"roles": ["db"], "flavour": "medium"},
        {"roles": ["web"], "number": 2, "cpus": 3, "memory": 700, "networks": ["data"]}]},
        extra_networks=[{"name": "data", "cidr": "10.77.0.0/24"}], network={"cidr": "10.76.0.0/24"})
    prov = make_provider(cfg, tmp_path)
    res = prov.init()
    dom = hypervisor.lookupByName(f"enos-{RUN}-db-1")
    assert dom.info()[3] == 2 and dom.info()[1] == 2048 * 1024
    web = hypervisor.lookupByName(f"enos-{RUN}-web-2")
    assert web.info()[3] == 3 and web.info()[1] == 700 * 1024
    assert web.XMLDesc(0).count("<interface type='network'>") == 2
    assert [n.cidr for n in res.networks] == ["10.76.0.0/24", "10.77.0.0/24"]
    assert res.networks[1].roles == ["web"]
    prov.destroy()
    assert ours(hypervisor) == []


@pytest.mark.parametrize("resources,opts,where,msg", [
    ({"huge": {"a": 1}}, {}, "resources.huge", "unknown flavour 'huge'"),
    ({"smal": {"a": 1}}, {}, "resources.smal", "did you mean 'small'"),
    ({"machines": [{"roles": ["a"]}, {"roles": ["b"], "flavour": "tinyy"}]}, {},
     "resources.machines.1.flavour", "did you mean 'tiny'"),
    ({"machines": [{"roles": ["a"], "networks": ["nope"]}]}, {}, "resources.machines.0", "not in provider.extra_networks"),
    ({"tiny": {"a": 1}}, {"network": {"cidr": "10.1.0.0/30"}}, "provider.network.cidr", "at least 6"),
    ({"tiny": {"a": 1}}, {"network": {"cidr": "10.1.0.0/24"},
                          "extra_networks": [{"name": "x", "cidr": "10.1.0.0/25"}]},
     "provider.extra_networks.0.cidr", "overlaps"),
])
def test_validate_errors(image, resources, opts, where, msg):
    with pytest.raises(ConfigError) as e:
        LibvirtProvider.validate(make_config(image, resources=resources, **opts))
    assert e.value.keypath == where and msg in str(e.value)


def test_schema_rejects_bad_domain_type(tmp_path, image):
    with pytest.raises(ConfigError) as e:
        make_config(image, domain_type="xen")
    assert "domain_type" in str(e.value)


def test_missing_image_and_pool_are_explained(hypervisor, tmp_path, image):
    prov = make_provider(make_config(tmp_path / "nope.qcow2"), tmp_path)
    with pytest.raises(ProviderError, match="enos build libvirt"):
        prov.init()
    prov = make_provider(make_config(image, pool="nopool"), tmp_path)
    with pytest.raises(ProviderError, match="pool-define-as nopool"):
        prov.init()


def test_check_reports_daemon_pool_image_and_domain_type(hypervisor, image, tmp_path):
    checks = {c.what: c for c in make_provider(make_config(image), tmp_path).check()}
    assert checks["libvirt daemon at test:///default"].ok
    assert re.fullmatch(r"libvirt \d+\.\d+\.\d+, TEST \d+\.\d+\.\d+ \(connected in .*\)",
                        checks["libvirt daemon at test:///default"].detail)
    assert checks["storage pool 'default-pool'"].ok
    assert checks["libvirt networks (NAT + DHCP)"].ok
    assert checks["base image"].ok
    # no KVM: a warning (VMs work, emulated), not a missing requirement
    assert checks["KVM"].ok and checks["KVM"].warn and "test" in checks["KVM"].detail
    bad = make_provider(make_config(image, uri="qemu+unix:///system?socket=/nonexistent/sock"), tmp_path)
    c = bad.check()[0]
    assert not c.ok and "not running (no socket /nonexistent/sock)" in c.detail and "libvirtd -d" in c.fix
    c = make_provider(make_config(image, pool="nopool"), tmp_path).check()
    (pool,) = [x for x in c if x.what == "storage pool 'nopool'"]
    assert not pool.ok and "pool-define-as nopool dir" in pool.fix


def test_kvm_probe_cache_key_is_per_kernel_release_not_per_kernel_file():
    k = kvm.cache_key_of("/usr/bin/qemu-system-x86_64")
    assert os.uname().release in k and "/usr/bin/qemu-system-x86_64" in k
    assert kvm.cache_key_of("/usr/bin/qemu-system-x86_64", "hv.example.org") != k


def test_version_numbers_read_as_versions():
    from enos.libvirt.diagnose import format_version
    assert format_version(9000000) == "9.0.0" and format_version(7002011) == "7.2.11"


def test_address_plan_and_helpers():
    p = xml.split_network("10.9.8.0/24")
    assert (p["gateway"], p["pool_start"], p["pool_end"], p["dhcp_start"], p["dhcp_end"]) == \
        ("10.9.8.1", "10.9.8.2", "10.9.8.127", "10.9.8.128", "10.9.8.254")
    c = default_cidrs("0badcafe", 3)
    assert len(set(c)) == 3 and all(x.startswith("10.") and x.endswith(".0/24") for x in c)
    assert jump_default("qemu+ssh://alice@hv.example.org:2222/system") == "alice@hv.example.org:2222"
    assert jump_default("qemu:///system") is None
    n = xml.network_xml("enos-x-net0", "enosx0", "10.9.8.0/24", "abcd")
    assert "no-ping" in n and xml.run_id_of(n) == "abcd" and "<forward mode='nat'/>" in n
    caps = ("<capabilities><guest><os_type>hvm</os_type><arch name='x86_64'><emulator>/usr/bin/q</emulator>"
            "<domain type='qemu'/><domain type='kvm'/></arch></guest></capabilities>")
    assert xml.domain_types(caps) == ["qemu", "kvm"] and xml.emulator_of(caps) == "/usr/bin/q"


def test_kvm_probe_verdicts():
    assert kvm.judge(None, "")[0] is False                       # hung: the case seen on CI
    ok, why = kvm.judge(0, "[ 1.2] Kernel panic - not syncing: VFS: Unable to mount root fs")
    assert ok and "booted" in why
    ok, why = kvm.judge(1, "qemu-system-x86_64: failed to initialize kvm: Permission denied")
    assert not ok and "Permission denied" in why
    ok, why = kvm.probe("/nonexistent/qemu", "/nonexistent/kernel", use_cache=False)
    assert not ok and "cannot run" in why


def test_up_without_its_image_exits_2_before_creating_anything(tmp_path):
    """A missing image (configured, or the default one never built) is a usage error of
    'enos up' found before the env dir exists: exit 2, the file/line/key, nothing created."""
    import sys
    res = tmp_path / "reservation.yaml"
    res.write_text("provider:\n  type: libvirt\n  uri: test:///default\n  image: nope.qcow2\n"
                   "resources:\n  tiny:\n    control: 1\n")
    env = dict(os.environ, ENOS_IMAGE_CACHE=str(tmp_path / "empty-cache"))
    p = subprocess.run([sys.executable, "-m", "enos", "up", "-f", str(res)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert p.returncode == 2, p.stderr
    assert f"{res}:4: provider.image: image {tmp_path / 'nope.qcow2'} not found" in p.stderr
    assert "Traceback" not in p.stderr
    assert sorted(x.name for x in tmp_path.iterdir()) == ["reservation.yaml"]   # no env dir, no current
    res.write_text("provider:\n  type: libvirt\n  uri: test:///default\nresources:\n  tiny:\n    control: 1\n")
    p = subprocess.run([sys.executable, "-m", "enos", "up", "-f", str(res)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert p.returncode == 2 and "run 'enos build libvirt'" in p.stderr, p.stderr
    assert sorted(x.name for x in tmp_path.iterdir()) == ["reservation.yaml"]


@pytest.mark.parametrize("body,line,key", [
    ("resources:\n  tiny:\n    control: 1\n  hugee:\n    compute: 1\n", 7, "resources.hugee"),
    ("resources:\n  machines:\n    - roles: [a]\n      flavour: tiny\n    - roles: [b]\n"
     "      number: 2\n      flavour: tinyy\n", 10, "resources.machines.1.flavour"),
])
def test_flavour_errors_name_the_line_of_the_flavour(tmp_path, body, line, key):
    """'enos validate' (a real CLI run) points at the line where the bad flavour is written."""
    import sys
    res = tmp_path / "r.yaml"
    res.write_text("provider:\n  type: libvirt\n  uri: test:///default\n" + body)
    p = subprocess.run([sys.executable, "-m", "enos", "validate", "-f", str(res)], capture_output=True,
                       text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert p.returncode == 2 and p.stderr.startswith(f"error: {res}:{line}: {key}: unknown flavour"), p.stderr


def test_the_env_lives_at_the_uri_it_was_created_at(hypervisor, image, tmp_path):
    """After a resume whose reservation names another uri, info and destroy still go to
    the URI the VMs were created at, and init refuses (exit 2) instead of booking a second
    set of VMs elsewhere."""
    from enos.errors import UsageError
    j = MemoryJournal()
    make_provider(make_config(image), tmp_path, journal=j).init()
    moved = make_provider(make_config(image, uri="qemu:///system?socket=/nonexistent/sock"), tmp_path, journal=j)
    assert moved.info()["uri"] == "test:///default" and moved.opts["uri"] == "test:///default"
    with pytest.raises(UsageError, match="created at test:///default, but provider.uri now says qemu"):
        moved.init()
    assert len(ours(hypervisor)) == 3 + 1 + 9                       # nothing more was booked
    moved.destroy()                                                # frees them where they are
    assert ours(hypervisor) == []


def test_two_envs_upload_the_same_base_at_once(hypervisor, tmp_path):
    """Two envs (two run ids, two threads released together) upload the same base image
    into one pool at the same moment, 15 times over (a new image name each time): every
    time both get the base volumes, neither fails the other, one upload each."""
    import threading
    failures = []
    for i in range(15):
        img = tmp_path / f"img{i}" / f"base{i}.qcow2"
        img.parent.mkdir()
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(img), "64M"], check=True)
        (img.parent / f"base{i}.vmlinuz").write_bytes(b"kernel")
        (img.parent / f"base{i}.initrd").write_bytes(b"initrd")
        provs = [make_provider(make_config(img), tmp_path / f"env{i}-{k}", run_id=f"0000{i:02d}0{k}")
                 for k in range(2)]
        from enos.libvirt.image import image_files
        files = image_files(img)
        barrier = threading.Barrier(2)
        out = [None, None]

        def one(k):
            try:
                from enos.libvirt.storage import base_volumes
                s = provs[k].session
                pool = s.pool()
                barrier.wait()
                out[k] = base_volumes(s.conn(), pool, files, s.opts["uri"], s.ctx.progress)
            except Exception as e:  # noqa: BLE001 - collected for the assertion
                out[k] = e
        threads = [threading.Thread(target=one, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        if any(isinstance(o, BaseException) or o is None for o in out) or out[0] != out[1]:
            failures.append(f"round {i}: {out}")
    assert not failures, "\n".join(failures)


def test_unreachable_uri_at_destroy_is_retryable_and_forgettable(hypervisor, image, tmp_path):
    """The env's libvirt URI stops answering (a closed loopback port) before destroy:
    ``enos destroy`` names the URI and the domains that may remain, exits 1 and stays
    retryable (phase 'destroying'); ``enos destroy --forget`` then marks it destroyed,
    printing what the journal listed, and a later destroy is a no-op."""
    import json
    import socket
    import sys
    from enos.state import State
    from enoscli import enos
    env = tmp_path / "env"
    env.mkdir()
    config = make_config(image)
    st = State.create(env, "reservation.yaml", config.raw, "libvirt", config_state=config.to_state())
    prov = make_provider(config, env, journal=st.journal, run_id=st.run_id)
    prov.init()
    st.set_phase("booked")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()                                   # nothing listens there: connection refused
    uri = f"qemu+tcp://127.0.0.1:{port}/system"
    data = json.loads((env / "state.json").read_text())
    data["config"]["data"]["provider"]["uri"] = uri
    if "uri" in data["journal"]["libvirt"]:          # destroy goes where the journal says it booked
        data["journal"]["libvirt"]["uri"] = uri
    (env / "state.json").write_text(json.dumps(data))
    for _ in range(2):
        p = enos(tmp_path, "destroy", "--env", "env", check=False, timeout=120)
        assert p.returncode == 1, p.stderr
        assert "Traceback" not in p.stderr and uri in p.stderr and "may remain" in p.stderr, p.stderr
        assert f"enos-{st.run_id}-control-1" in p.stderr and "enos destroy --forget" in p.stderr, p.stderr
        assert json.loads((env / "state.json").read_text())["phase"] == "destroying"
    help_text = enos(tmp_path, "help", "destroy").stdout
    assert "--forget" in help_text
    f = enos(tmp_path, "destroy", "--forget", "--env", "env", timeout=120)
    assert f"forgot run {st.run_id}" in f.stderr and f"enos-{st.run_id}-control-1" in f.stderr, f.stderr
    saved = json.loads((env / "state.json").read_text())
    assert saved["phase"] == "destroyed" and saved["journal"] == {} and saved["forgotten"]["journal"]["libvirt"]
    enos(tmp_path, "destroy", "--env", "env", timeout=120)      # nothing left to reach: a no-op
    prov.destroy()                                              # the test hypervisor's side
    assert ours(hypervisor) == []
