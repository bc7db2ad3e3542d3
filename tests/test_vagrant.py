"""vagrant provider without booting anything: configuration forms, Vagrantfile rendering,
validation errors (file:line, exit 2), the VirtualBox-missing error, the sample of
``enos new``, the marked vagrant processes. The real boots are in test_vagrant_real.py."""
import os
import subprocess
import sys
import textwrap
import time

import pytest

from prereq import need_module

need_module("jinja2", module_level=True)

from enos.errors import ConfigError  # noqa: E402
from enos.task import load_reservation  # noqa: E402
from enos.vagrant.plan import make_plan  # noqa: E402
from enos.vagrant.render import render_vagrantfile, ruby_string  # noqa: E402

RUN = "0badcafe"


def _load(tmp_path, text):
    p = tmp_path / "reservation.yaml"
    p.write_text(textwrap.dedent(text))
    return load_reservation(str(p))


def _render(config, enos_box=False, **kw):
    plan = make_plan(config, RUN, config.options["flavour"])
    o = config.options
    args = dict(run_id=RUN, backend=o["backend"], box=o["box"], user=o["user"], key="/env/ssh/id_ed25519",
                pubkey="ssh-ed25519 AAAA enos-x", enos_box=enos_box,
                uri=o.get("uri", "qemu:///system") if o["backend"] == "libvirt" else None, pool=o.get("pool"))
    args.update(kw)
    return plan, render_vagrantfile(plan, **args)


def test_compact_form_flavours_and_default_networks(tmp_path):
    cfg = _load(tmp_path, """
        provider: {type: vagrant, backend: libvirt}
        resources:
          extra-large: {control: 1}
          medium: {network: 1, compute: 2}
    """)
    plan, text = _render(cfg)
    sizes = {m["name"]: (m["cpus"], m["memory"]) for m in plan["machines"]}
    assert sizes == {"control-1": (6, 6144), "network-1": (2, 2048), "compute-1": (2, 2048),
                     "compute-2": (2, 2048)}
    assert [n["roles"] for n in plan["networks"]] == [["network_interface"], ["neutron_external_interface"]]
    assert text.count("private_network") == 8
    assert 'lv.default_prefix = "enos-0badcafe-"' in text
    assert 'lv.management_network_name = "enos-0badcafe-mgmt"' in text
    assert 'lv.driver = "qemu"' in text and 'lv.uri = "qemu:///system"' in text
    assert "lv.cpus = 6" in text and "lv.memory = 6144" in text
    assert 'config.vm.synced_folder ".", "/vagrant", disabled: true' in text
    assert "config.ssh.insert_key = false" in text
    # not an enos box: Vagrant's key, and a provisioner authorising the env key for root
    assert "private_key_path" not in text and "enos-key" in text and "ssh-ed25519 AAAA enos-x" in text
    # every machine's address on a network is distinct, .10 upwards
    ips = [ip for m in plan["machines"] for k, ip in m["nics"] if k == "net1"]
    assert ips == [ips[0].rsplit(".", 1)[0] + f".{10 + i}" for i in range(4)]


def test_enos_box_renders_seed_kernel_and_root_key(tmp_path):
    cfg = _load(tmp_path, """
        provider: {type: vagrant, backend: libvirt, uri: "qemu:///system?socket=/x/sock", pool: p1}
        resources: {tiny: {control: 1, compute: 1}}
    """)
    plan, text = _render(cfg, enos_box=True, kernel="/pool/k", initrd="/pool/i", cmdline="root=/dev/vda rw")
    assert 'config.ssh.username = "root"' in text
    assert 'config.ssh.private_key_path = ["/env/ssh/id_ed25519"]' in text
    assert 'lv.kernel = "/pool/k"' in text and 'lv.cmd_line = "root=/dev/vda rw"' in text
    assert 'lv.storage_pool_name = "p1"' in text and 'lv.uri = "qemu:///system?socket=/x/sock"' in text
    for m in plan["machines"]:
        assert f'path: "{m["seed"]}", allow_existing: true' in text
    assert "enos-key" not in text


def test_topology_groups(tmp_path):
    cfg = _load(tmp_path, """
        provider: {type: vagrant, box: debian/contrib-jessie64}
        topology:
          grp1: {extra-large: {control: 1}}
          grp[2-3]: {medium: {compute: 1}}
    """)
    plan, text = _render(cfg)
    assert [(m["name"], m["roles"]) for m in plan["machines"]] == [
        ("control-grp1-1", ["control", "grp1"]), ("compute-grp2-1", ["compute", "grp2"]),
        ("compute-grp3-1", ["compute", "grp3"])]
    assert cfg.options["backend"] == "virtualbox"           # Enos' default when none is named
    assert "config.vm.provider :libvirt" not in text and "vb.cpus = 6" in text
    assert 'virtualbox__intnet: "enos-0badcafe-net1"' in text
    assert 'config.vm.box = "debian/contrib-jessie64"' in text


def test_bare_provider_string(tmp_path):
    cfg = _load(tmp_path, """
        provider: vagrant
        resources: {small: {web: 2}}
    """)
    assert cfg.options["backend"] == "virtualbox" and cfg.options["box"] == "enos/debian12"
    plan, _ = _render(cfg)
    assert [(m["cpus"], m["memory"]) for m in plan["machines"]] == [(1, 1024)] * 2


def test_enoslib_form_one_nic_per_listed_network(tmp_path):
    cfg = _load(tmp_path, """
        provider: {type: vagrant, backend: libvirt}
        resources:
          machines:
            - roles: [control]
              flavour: large
              number: 1
            - role: compute
              flavor: small
              number: 2
              networks: [data]
            - roles: [db, store]
              flavour_desc: {core: 3, mem: 1536}
          networks:
            - roles: [data, mgmt2]
              cidr: 192.168.42.0/24
            - roles: [admin]
              cidr: 192.168.43.0/28
    """)
    plan, text = _render(cfg)
    by = {m["name"]: m for m in plan["machines"]}
    assert (by["control-1"]["cpus"], by["control-1"]["memory"]) == (4, 4096)
    assert (by["compute-1"]["cpus"], by["compute-1"]["memory"]) == (1, 1024)
    assert (by["db-store-1"]["cpus"], by["db-store-1"]["memory"]) == (3, 1536)
    assert by["control-1"]["nics"] == [["net1", "192.168.42.10"], ["net2", "192.168.43.10"]]
    assert by["compute-1"]["nics"] == [["net1", "192.168.42.11"]]
    assert by["compute-2"]["nics"] == [["net1", "192.168.42.12"]]
    assert by["db-store-1"]["nics"] == [["net1", "192.168.42.13"], ["net2", "192.168.43.11"]]
    assert 'ip: "192.168.43.11", netmask: "255.255.255.240"' in text
    assert text.count("private_network") == 6


def test_provider_resources_form(tmp_path):
    cfg = _load(tmp_path, """
        provider:
          type: vagrant
          backend: libvirt
          resources:
            machines: [{roles: [a], flavour: tiny, number: 2}]
            networks: [{roles: [n1], cidr: 10.77.0.0/24}]
    """)
    plan, _ = _render(cfg)
    assert [m["nics"] for m in plan["machines"]] == [[["net1", "10.77.0.10"]], [["net1", "10.77.0.11"]]]


def test_pools_and_host_vars_from_the_plan(tmp_path):
    from enos.provider.provider import ProviderContext
    from enos.provider.vagrant import VagrantProvider
    from enos.state import MemoryJournal
    cfg = _load(tmp_path, """
        provider: {type: vagrant, backend: libvirt}
        resources:
          machines: [{roles: [a], number: 2}]
          networks: [{roles: [data], cidr: 192.168.50.0/24}]
    """)
    prov = VagrantProvider(ProviderContext(config=cfg, journal=MemoryJournal(), env_dir=tmp_path, run_id=RUN,
                                           ssh_key=tmp_path / "k"))
    rec = prov._plan()
    rec["addresses"] = {m["name"]: {"address": f"10.140.0.{i + 2}", "port": 22} for i, m in enumerate(rec["machines"])}
    from enos.vagrant import plan
    pools = plan.pools(rec)
    assert len(pools) == 1 and pools[0].roles == ["data"] and pools[0].gateway == "192.168.50.1"
    assert "192.168.50.10" not in pools[0].free and "192.168.50.11" not in pools[0].free
    assert "192.168.50.1" not in pools[0].free and len(pools[0].free) == 254 - 3
    hosts = plan.hosts(rec, prov.opts["user"], str(prov.ctx.ssh_key))
    assert hosts[0].extra["data"] == "eth1" and hosts[0].extra["data_ip"] == "192.168.50.10"


def test_ruby_strings_cannot_inject_code():
    assert ruby_string('a"b') == '"a\\"b"'
    assert ruby_string("#{system('x')}") == '"\\#{system(\'x\')}"'
    assert ruby_string("a\nb\\") == '"a\\nb\\\\"'


def test_default_cidrs_are_distinct_per_run():
    from enos.vagrant.plan import default_cidr
    a = {default_cidr("0000abcd", i) for i in range(4)}
    b = {default_cidr("0000abce", i) for i in range(4)}
    assert len(a) == 4 and not (a & b)
    assert all(c.startswith("10.1") for c in a)


@pytest.mark.parametrize("text,where,words", [
    ("provider: {type: vagrant}\nresources:\n  huge:\n    compute: 1\n", ":4: resources.huge.compute",
     "unknown flavour 'huge'"),
    ("provider: {type: vagrant}\nresources:\n  extra_large:\n    compute: 1\n", ":4:", "did you mean 'extra-large'"),
    ("provider: {type: vagrant, backend: vbox}\nresources: {tiny: {a: 1}}\n", ":1: provider.backend",
     "libvirt or virtualbox"),
    ("provider:\n  type: vagrant\n  uri: qemu:///system\nresources: {tiny: {a: 1}}\n", ":3: provider.uri",
     "only for backend: libvirt"),
    ("provider: {type: vagrant, boxx: x}\nresources: {tiny: {a: 1}}\n", ":1: provider", "boxx"),
    ("provider: {type: vagrant}\nresources:\n  machines:\n    - roles: [a]\n      networks: [nope]\n"
     "  networks:\n    - roles: [data]\n      cidr: 10.1.0.0/24\n", ":4: resources.machines.0",
     "network role 'nope'"),
    ("provider: {type: vagrant}\nresources:\n  machines:\n    - roles: [a]\n"
     "  networks:\n    - roles: [d]\n      cidr: 10.1.0.0/24\n    - roles: [e]\n      cidr: 10.1.0.128/25\n",
     ":9: resources.networks.1.cidr", "overlaps"),
    ("provider: {type: vagrant}\nresources:\n  machines:\n    - roles: [a]\n"
     "      flavour_desc: {core: 0, mem: 512}\n", ":5: resources.machines.0.flavour_desc.core", "≥ 1"),
    ("provider: {type: vagrant}\nresources:\n  machines:\n    - roles: [a]\n      flavour: tiny\n"
     "      flavour_desc: {core: 1, mem: 512}\n", ":4: resources.machines.0", "not both"),
    ("provider: {type: vagrant}\nresources:\n  machines:\n    - roles: [a]\n  networks:\n    - roles: [d]\n",
     ":6: resources.networks.0", "cidr"),
])
def test_bad_files_name_file_line_and_key(tmp_path, text, where, words):
    p = tmp_path / "reservation.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_reservation(str(p))
    msg = str(e.value)
    assert msg.startswith(f"{p}{where}"), msg
    assert words in msg, msg


def test_cli_bad_file_exit_2_no_traceback(tmp_path, enos_cmd):
    p = tmp_path / "reservation.yaml"
    p.write_text("provider: {type: vagrant}\nresources:\n  huge:\n    compute: 1\n")
    r = subprocess.run(enos_cmd + ["up", "-f", str(p), "--env", str(tmp_path / "env")], capture_output=True,
                       text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and "reservation.yaml:4:" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "env" / "state.json").exists()


def test_virtualbox_missing_is_a_clear_error_exit_2(tmp_path, enos_cmd):
    """The backend the file asks for is honoured: VirtualBox on a machine without it is
    refused before anything is booked (exit 2), and enos check says how to fix it."""
    import shutil
    if shutil.which("VBoxManage"):
        pytest.skip("VirtualBox is installed here")
    if not shutil.which("vagrant"):
        from prereq import missing
        missing("vagrant not installed (scripts/setup.sh --test installs it)")
    p = tmp_path / "reservation.yaml"
    p.write_text("provider:\n  type: vagrant\n  backend: virtualbox\nresources: {tiny: {a: 1}}\n")
    r = subprocess.run(enos_cmd + ["up", "-f", str(p), "--env", str(tmp_path / "env")], capture_output=True,
                       text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 2, r.stderr
    assert "VirtualBox" in r.stderr and f"{p}:3" in r.stderr and "backend: libvirt" in r.stderr
    assert "Traceback" not in r.stderr
    st = tmp_path / "env" / "state.json"
    if st.exists():                                                  # nothing journalled
        import json
        assert not json.loads(st.read_text()).get("journal", {}).get("vagrant")
    c = subprocess.run(enos_cmd + ["check", "-f", str(p)], capture_output=True, text=True, cwd=tmp_path,
                       timeout=300)
    assert c.returncode != 0 and "VirtualBox (backend virtualbox)" in c.stdout and "fix:" in c.stdout


def test_enos_new_sample_validates(tmp_path, enos_cmd):
    r = subprocess.run(enos_cmd + ["new", "--provider", "vagrant"], capture_output=True, text=True,
                       cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    sample = tmp_path / "reservation.yaml"
    if not sample.exists():
        sample.write_text(r.stdout)
    text = sample.read_text()
    assert "enos build vagrant" in text and "backend: libvirt" in text
    cfg = load_reservation(str(sample))
    assert cfg.options["backend"] == "libvirt" and cfg.options["box"] == "enos/debian12"
    # the commented EnOSlib form is valid too once uncommented
    block = text.split("# EnOSlib form", 1)[1].split("\n", 1)[1]
    explicit = "provider: {type: vagrant, backend: libvirt}\n" + "\n".join(
        line[2:] for line in block.splitlines() if line.startswith("# "))
    p2 = tmp_path / "explicit.yaml"
    p2.write_text(explicit)
    cfg2 = load_reservation(str(p2))
    assert sum(m.count for m in cfg2.machines) == 3 and len(cfg2.networks) == 2


@pytest.mark.parametrize("tag", ["ENOS_RUN_ID", "ENOS_VAGRANT_RUN"])
def test_marked_processes_are_found_and_killed(tag):
    """vagrant runs with the one run tag (enos.process.run_environ); the tag of older envs
    (ENOS_VAGRANT_RUN) is still found, so destroy --sweep ends their processes too."""
    from enos import process
    from enos.vagrant.command import vagrant_env
    assert vagrant_env("feedf00d")[process.RUN_ENV] == "feedf00d"
    env = dict(os.environ, **{tag: "feedf00d"})
    p = subprocess.Popen(["sh", "-c", "sleep 300 & wait"], env=env)
    try:
        deadline = time.monotonic() + 10
        while len(process.pids_of_run("feedf00d")) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert p.pid in process.pids_of_run("feedf00d") and len(process.pids_of_run("feedf00d")) == 2
        assert process.pids_of_run("feedf00e") == [] and process.pids_of_run("") == []
        killed = process.end_run("feedf00d", timeout=10)
        assert p.pid in killed
        p.wait(timeout=10)                 # sh may exit 0 when its child dies first
        assert process.pids_of_run("feedf00d") == []
    finally:
        if p.poll() is None:
            p.kill()


def test_import_enos_does_not_import_vagrant_or_jinja2():
    code = ("import sys, enos.cli, enos.provider.vagrant; "
            "print([m for m in ('vagrant', 'jinja2', 'libvirt') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert out.strip() == "[]"


def _vagrant_locale() -> dict:
    """Vagrant's own English messages (its templates/locales/en.yml), or skip/fail."""
    import glob

    import yaml
    from prereq import missing
    found = sorted(glob.glob("/usr/share/rubygems-integration/all/gems/vagrant-*/templates/locales/en.yml")
                   + glob.glob("/opt/vagrant/embedded/gems/gems/vagrant-*/templates/locales/en.yml"))
    if not found:
        missing("vagrant is not installed (its locale file gives the error formats)")
    return yaml.safe_load(open(found[-1]))["en"]["vagrant"]["general"]


def _ruby_format(template: str, **values) -> str:
    import re
    return re.sub(r"%\{(\w+)\}", lambda m: values[m.group(1)], template)


def test_a_failed_vagrant_up_says_each_machines_error_not_the_backtrace(tmp_path):
    """Vagrant's log of a failed parallel 'up' ends with a Ruby backtrace: the error enos
    prints gives each machine's message (built from Vagrant's own templates) instead of
    the backtrace's last lines, which said nothing (CI: 'vagrant up failed' + warden.rb)."""
    from enos.vagrant.command import tail
    general = _vagrant_locale()
    backtrace = "\n".join(
        f"/usr/share/rubygems-integration/all/gems/vagrant-2.3.4/lib/vagrant/action/warden.rb:{48 + i}:in `call'"
        for i in range(30)) + "\n/usr/share/rubygems-integration/all/gems/vagrant-2.3.4/lib/vagrant/" \
        "batch_action.rb:86:in `block (2 levels) in run'"
    qemu = ("Call to virDomainCreateWithFlags failed: internal error: process exited while connecting "
            "to monitor: accel-tcg-x86_64.so: Permission denied")
    errors = "\n\n".join([
        _ruby_format(general["batch_unexpected_error"], machine="control-1", message=qemu + "\n\n" + backtrace),
        _ruby_format(general["batch_vagrant_error"], machine="compute-1",
                     message="The box 'enos/debian12' could not be found.")])
    log = tmp_path / "vagrant.log"
    log.write_text("Bringing machine 'control-1' up with 'libvirt' provider...\n"
                   "==> compute-1: No version detected for enos/debian12, using timestamp to watch\n"
                   "==> control-1: Removing domain...\n" + errors + "\n")
    said = tail(log)
    assert "control-1: " + qemu in said and "compute-1: The box 'enos/debian12' could not be found." in said, said
    assert "warden.rb" not in said and "batch_action.rb" not in said, said
    # a log without Vagrant's per-machine report: its last lines, as before
    log.write_text("".join(f"line {i}\n" for i in range(40)))
    assert tail(log).splitlines() == [f"line {i}" for i in range(25, 40)]
