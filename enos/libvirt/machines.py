"""The machines of a libvirt env: networks, overlays, seeds, domains, started; their DHCP
leases and sshd waited for; the SSH hosts and IP pools they give; the env's host names in
each VM's /etc/hosts. Every step is journalled before and after its side effect."""
from __future__ import annotations

import ipaddress
import shlex
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import List, Optional

from enos.errors import ProviderError, SshUnreachable, Timeout
from enos.failpoint import checkpoint
from enos.libvirt.cleanup import not_found
from enos.libvirt.connection import quiet_libvirt
from enos.libvirt.plan import default_cidrs, jump_default
from enos.libvirt.seed import build_seed, host_key
from enos.libvirt.storage import upload, volume
from enos.libvirt.xml import domain_xml, network_xml, split_network, volume_xml
from enos.model import Host, IpPool
from enos.ssh.client import render_known_hosts, render_ssh_config, wait_for_ssh
from enos.ssh.remote import run_command
from enos.state import atomic_write


def ensure_network(session, conn, rec: dict, net: dict) -> None:
    """Define and start network ``net`` unless it runs (journalled); an automatic CIDR
    in use on the hypervisor moves to the next candidate /24. Raises ProviderError."""
    lv = quiet_libvirt()
    candidates = default_cidrs(session.ctx.run_id) if net["auto_cidr"] else [net["cidr"]]
    while True:
        try:
            n = conn.networkLookupByName(net["name"])
        except lv.libvirtError as e:
            if not not_found(e):
                raise ProviderError(f"network {net['name']}: {e}") from None
            n = conn.networkDefineXML(network_xml(net["name"], net["bridge"], net["cidr"],
                                                  session.ctx.run_id, nat=net["nat"], dhcp=net["dhcp"]))
            net["uuid"] = n.UUIDString()
            session.save(rec)
            checkpoint("libvirt.network_defined")
        if n.isActive():
            return
        try:
            n.create()
            checkpoint("libvirt.network_started")
            return
        except lv.libvirtError as e:
            # the subnet is in use on the hypervisor: try the next candidate /24
            if not net["auto_cidr"] or net["attempt"] + 1 >= len(candidates):
                raise ProviderError(f"cannot start network {net['name']} ({net['cidr']}): {e}") from None
            n.undefine()
            net["attempt"] += 1
            net["cidr"] = candidates[net["attempt"]]
            net["uuid"] = None
            session.save(rec)


def ensure_vm(session, conn, pool, rec: dict, vm: dict, base: dict, cmdline: Optional[str]) -> None:
    """Create what VM ``vm`` lacks: its overlay on the base image, host key, seed volume,
    console log volume, domain (each journalled, then a checkpoint). Raises ProviderError."""
    lv = quiet_libvirt()
    vdir = Path(session.ctx.env_dir) / "libvirt" / vm["alias"]
    if volume(pool, vm["overlay"]) is None:
        pool.createXML(volume_xml(vm["overlay"], base["capacity"], backing=base["disk"]), 0)
        checkpoint("libvirt.overlay_created")
    if vm.get("host_key") is None:
        vm["host_key"] = host_key(vdir / "seed", f"{vm['alias']}@enos-{session.ctx.run_id}")
        session.save(rec)
    if volume(pool, vm["seed"]) is None:
        dns = split_network(rec["networks"][0]["cidr"])["gateway"]   # libvirt's dnsmasq
        img = build_seed(vdir, vm["alias"], session.ctx.ssh_pubkey, f"{vm['alias']}@enos-{session.ctx.run_id}",
                         resolv_conf=f"nameserver {dns}\n")
        upload(session.conn(), pool, vm["seed"], img)
        checkpoint("libvirt.seed_created")
    if vm.get("console") and not vm.get("console_path"):
        # the serial console log is a volume of the pool: its path comes from libvirt,
        # and destroy deletes it through libvirt (remote hypervisors too)
        vol = volume(pool, vm["console"]) or pool.createXML(volume_xml(vm["console"], 0, fmt="raw"), 0)
        vm["console_path"] = vol.path()
        session.save(rec)
    try:
        conn.lookupByUUIDString(vm["uuid"])
        return
    except lv.libvirtError as e:
        if not not_found(e):
            raise ProviderError(f"domain {vm['name']}: {e}") from None
    nets = {n["key"]: n["name"] for n in rec["networks"]}
    xml = domain_xml(name=vm["name"], uuid=vm["uuid"], run_id=session.ctx.run_id, alias=vm["alias"],
                     domain_type=rec["domain_type"], cpus=vm["cpus"], memory_mib=vm["memory"],
                     pool=pool.name(), overlay=vm["overlay"], seed=vm["seed"],
                     nics=[(nets[k], mac) for k, mac in vm["nics"]],
                     kernel=base.get("kernel"), initrd=base.get("initrd"), cmdline=cmdline,
                     console_log=console_log(vm), arch=base.get("arch", "x86_64"),
                     machine=base.get("machine"))
    try:
        conn.defineXML(xml)
    except lv.libvirtError as e:
        raise ProviderError(f"cannot define domain {vm['name']}: {e}") from None
    checkpoint("libvirt.domain_defined")


def console_log(vm: dict) -> Optional[str]:
    """The hypervisor-side path of the VM's serial console log (a volume of the pool)."""
    return vm.get("console_path")


def start_all(conn, rec: dict) -> None:
    """Start every domain of ``rec`` not running yet (8 at a time). Raises ProviderError
    naming the VMs that would not start."""
    lv = quiet_libvirt()

    def start(vm):
        dom = conn.lookupByUUIDString(vm["uuid"])
        if not dom.isActive():
            try:
                dom.create()
            except lv.libvirtError as e:
                return f"{vm['alias']}: {e}"
        return None
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(rec["vms"])))) as ex:
        errors = [e for e in ex.map(start, rec["vms"]) if e]
    if errors:
        raise ProviderError("cannot start VMs: " + "; ".join(errors))


def address_of(conn, rec: dict, vm: dict) -> Optional[str]:
    """Return the IPv4 address of the VM's first NIC from its DHCP lease, or None yet."""
    lv = quiet_libvirt()
    net0 = ipaddress.ip_network(rec["networks"][0]["cidr"], strict=False)
    mac = vm["nics"][0][1].lower()
    dom = conn.lookupByUUIDString(vm["uuid"])
    try:
        ifaces = dom.interfaceAddresses(lv.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE) or {}
    except lv.libvirtError:
        ifaces = {}
    for info in ifaces.values():
        if (info.get("hwaddr") or "").lower() != mac:
            continue
        for a in info.get("addrs") or []:
            if a.get("type") == lv.VIR_IP_ADDR_TYPE_IPV4 and ipaddress.ip_address(a["addr"]) in net0:
                return a["addr"]
    return None


def wait_addresses(session, conn, rec: dict) -> None:
    """Wait (with progress) until every VM has a DHCP lease; journal each address.
    Raises Timeout after ``boot_timeout`` naming the VMs and their console logs."""
    timeout = float(session.opts["boot_timeout"])
    deadline = time.monotonic() + timeout
    pending = [vm for vm in rec["vms"] if not vm.get("address")]
    with session.ctx.progress.task("waiting for the VMs' DHCP leases", total=len(rec["vms"])) as t:
        t.update(completed=len(rec["vms"]) - len(pending))
        while pending:
            for vm in list(pending):
                addr = address_of(conn, rec, vm)
                if addr:
                    vm["address"] = addr
                    pending.remove(vm)
                    session.save(rec)
                    t.update(f"{len(pending)} left" if pending else "")
                    t.advance()
            if not pending:
                break
            if time.monotonic() > deadline:
                late = ", ".join(f"{vm['alias']} (console log: {console_log(vm)} on the "
                                 f"hypervisor)" for vm in pending)
                raise Timeout(f"no DHCP lease within {timeout:.0f}s for {late}")
            t.update(f"{len(pending)} left, e.g. {pending[0]['alias']}")
            time.sleep(1.0)
    checkpoint("libvirt.addresses")


def vm_hosts(session, rec: dict) -> List[Host]:
    """Return the SSH hosts of the VMs (their host keys pinned, jump host if remote)."""
    jump = session.opts.get("jump") or jump_default(session.opts["uri"])
    nets = {n["key"]: n["name"] for n in rec["networks"]}
    return [Host(alias=vm["alias"], address=vm["address"], user=session.opts["user"], port=22,
                 keyfile=str(session.ctx.ssh_key), roles=list(vm["roles"]), jump=jump,
                 host_key=vm.get("host_key"),
                 extra={"enos_libvirt_domain": vm["name"],
                        "enos_libvirt_console_log": console_log(vm),
                        "enos_libvirt_networks": {nets[k]: mac for k, mac in vm["nics"]}})
            for vm in rec["vms"]]


def wait_ssh(session, hosts: List[Host], rec: dict) -> None:
    """Wait until every VM's sshd answers (an ssh_config of its own under
    ``<env>/libvirt``). Raises Timeout naming the late VMs and their console logs."""
    d = Path(session.ctx.env_dir) / "libvirt"
    d.mkdir(parents=True, exist_ok=True)
    kh = d / "known_hosts"
    atomic_write(kh, render_known_hosts(hosts))
    cfg = d / "ssh_config"
    atomic_write(cfg, render_ssh_config(hosts, kh, session.ctx.run_id))
    try:
        wait_for_ssh(cfg, [h.alias for h in hosts], timeout=float(session.opts["boot_timeout"]),
                     progress=session.ctx.progress, description="booting the VMs (until sshd answers)")
    except SshUnreachable as e:
        logs = {vm["alias"]: console_log(vm) for vm in rec["vms"]}
        late = "; ".join(f"{a}: {err} (console log: {logs.get(a)} on the hypervisor)"
                         for a, err in sorted(e.hosts.items()))
        raise Timeout(f"VMs did not answer SSH within {session.opts['boot_timeout']}s: {late}") from None
    checkpoint("libvirt.ssh_ready")


def vm_pools(rec: dict, hosts: List[Host]) -> List[IpPool]:
    """Return one IP pool per network: the DHCP range's free addresses."""
    used = {h.address for h in hosts}
    out = []
    for n in rec["networks"]:
        plan = split_network(n["cidr"])
        roles = sorted({r for vm in rec["vms"] for k, _ in vm["nics"] if k == n["key"]
                        for r in vm["roles"]}) if n["key"] != "net0" else []
        out.append(IpPool.from_range(plan["cidr"], exclude=used, start=plan["pool_start"],
                                     end=plan["pool_end"], gateway=plan["gateway"],
                                     dns=plan["gateway"] if n["nat"] else None,
                                     roles=roles, name=n["name"]))
    return out


def set_host_names(session, env) -> None:
    """Give every VM the env's host names: an ``# enos env`` block (``address alias``
    per VM, first NIC) replaces any earlier one in each VM's ``/etc/hosts``, so VMs
    reach each other by alias. Raises CommandFailed naming the VMs where it failed."""
    hosts = env.resources.hosts if env.resources else []
    if not hosts:
        return
    block = (f"# BEGIN enos env {session.ctx.run_id}\n"
             + "".join(f"{h.address}\t{h.alias}\n" for h in hosts)
             + f"# END enos env {session.ctx.run_id}\n")
    cmd = (f"sed -i '/^# BEGIN enos env /,/^# END enos env /d' /etc/hosts && "
           f"printf %s {shlex.quote(block)} >> /etc/hosts")
    if session.opts["user"] != "root":
        cmd = f"sudo -n sh -c {shlex.quote(cmd)}"
    run_command(env.ssh_config, hosts, cmd)
