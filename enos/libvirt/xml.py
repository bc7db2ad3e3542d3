"""libvirt XML documents of the libvirt provider: networks, volumes, domains.

Every network and domain carries ``<metadata><enos:env run_id=... /></metadata>`` in the
namespace :data:`NS`, so :meth:`LibvirtProvider.sweep` finds them without any state.
"""
from __future__ import annotations

import ipaddress
import re
from typing import List, Optional, Sequence
from xml.sax.saxutils import quoteattr, escape

NS = "https://enos.example/libvirt/1"
NS_PREFIX = "enos"
DNSMASQ_NS = "http://libvirt.org/schemas/network/dnsmasq/1.0"


def metadata_xml(run_id: str, **attrs: str) -> str:
    """Return the ``<metadata>`` element tagging a resource with ``run_id``."""
    more = "".join(f" {k}={quoteattr(str(v))}" for k, v in sorted(attrs.items()))
    return (f"<metadata><{NS_PREFIX}:env xmlns:{NS_PREFIX}={quoteattr(NS)} "
            f"run_id={quoteattr(run_id)}{more}/></metadata>")


def run_id_of(xml: str) -> Optional[str]:
    """Return the enos run id found in a network's or domain's XML, or None."""
    m = re.search(r"<(\w+:)?env\s[^>]*xmlns(:\w+)?=['\"]" + re.escape(NS) + r"['\"][^>]*>", xml)
    if not m:
        return None
    r = re.search(r"run_id=['\"]([^'\"]+)['\"]", m.group(0))
    return r.group(1) if r else None


def split_network(cidr: str) -> dict:
    """Return the address plan of a NAT network: ``gateway`` (first address),
    ``netmask``, the DHCP range (upper half of the hosts: ``dhcp_start``..``dhcp_end``)
    and the IP pool (lower half, gateway excluded: ``pool_start``..``pool_end``).
    Raises ValueError if the network is too small (fewer than 6 host addresses)."""
    net = ipaddress.ip_network(cidr, strict=False)
    hosts = list(net.hosts()) if net.num_addresses <= 65536 else None
    if hosts is None:
        first, last = net.network_address + 1, net.broadcast_address - 1
        n = int(last) - int(first) + 1
        mid = first + n // 2
        return {"cidr": str(net), "gateway": str(first), "netmask": str(net.netmask),
                "pool_start": str(first + 1), "pool_end": str(mid - 1),
                "dhcp_start": str(mid), "dhcp_end": str(last)}
    if len(hosts) < 6:
        raise ValueError(f"{net} is too small (needs at least 6 host addresses)")
    mid = len(hosts) // 2
    return {"cidr": str(net), "gateway": str(hosts[0]), "netmask": str(net.netmask),
            "pool_start": str(hosts[1]), "pool_end": str(hosts[mid - 1]),
            "dhcp_start": str(hosts[mid]), "dhcp_end": str(hosts[-1])}


def network_xml(name: str, bridge: str, cidr: str, run_id: str, nat: bool = True,
                dhcp: bool = True) -> str:
    """Return the XML of a network: NAT (or isolated) with DHCP on the upper half of
    ``cidr`` and the dnsmasq ``no-ping`` option (dnsmasq otherwise pings each address for
    3-7 s before offering it)."""
    plan = split_network(cidr)
    fwd = "<forward mode='nat'/>" if nat else ""
    dh = (f"<dhcp><range start='{plan['dhcp_start']}' end='{plan['dhcp_end']}'/></dhcp>"
          if dhcp else "")
    return (f"<network xmlns:dnsmasq='{DNSMASQ_NS}'>"
            f"<name>{escape(name)}</name>{metadata_xml(run_id)}{fwd}"
            f"<bridge name='{escape(bridge)}' stp='off' delay='0'/>"
            f"<ip address='{plan['gateway']}' netmask='{plan['netmask']}'>{dh}</ip>"
            f"<dnsmasq:options><dnsmasq:option value='no-ping'/></dnsmasq:options>"
            f"</network>")


def volume_xml(name: str, capacity: int, fmt: str = "qcow2",
               backing: Optional[str] = None, mode: str = "0600") -> str:
    """Return the XML of a storage volume; with ``backing`` (a path), a copy-on-write
    overlay on it (qcow2 backing file). ``mode`` defaults to owner-only: a VM's disk and
    its seed (which holds the VM's SSH host private key) are nobody else's business;
    only the shared base image is given ``0644``."""
    back = (f"<backingStore><path>{escape(backing)}</path><format type='qcow2'/></backingStore>"
            if backing else "")
    return (f"<volume><name>{escape(name)}</name><capacity unit='bytes'>{int(capacity)}</capacity>"
            f"<allocation unit='bytes'>0</allocation>"
            f"<target><format type='{fmt}'/><permissions><mode>{escape(mode)}</mode></permissions></target>"
            f"{back}</volume>")


def domain_xml(*, name: str, uuid: str, run_id: str, alias: str, domain_type: str,
               cpus: int, memory_mib: int, pool: str, overlay: str, seed: Optional[str],
               nics: Sequence[tuple], kernel: Optional[str] = None, initrd: Optional[str] = None,
               cmdline: Optional[str] = None, console_log: Optional[str] = None,
               arch: str = "x86_64", machine: Optional[str] = None) -> str:
    """Return the XML of one VM.

    ``nics`` is a list of ``(network name, MAC)``; ``overlay``/``seed`` are volume names
    in ``pool`` (the seed is attached read-only as the second disk). With ``kernel`` the
    guest boots that kernel directly (``initrd``, ``cmdline``); otherwise from its disk.
    ``console_log`` is the hypervisor-side file the serial console is logged to; ``arch``
    and ``machine`` the guest architecture (the image's) and machine type."""
    if kernel:
        boot = f"<kernel>{escape(kernel)}</kernel>"
        if initrd:
            boot += f"<initrd>{escape(initrd)}</initrd>"
        if cmdline:
            boot += f"<cmdline>{escape(cmdline)}</cmdline>"
    else:
        boot = "<boot dev='hd'/>"
    cpu = "<cpu mode='host-passthrough'/>" if domain_type == "kvm" else ""
    disks = (f"<disk type='volume' device='disk'><driver name='qemu' type='qcow2' cache='unsafe'/>"
             f"<source pool={quoteattr(pool)} volume={quoteattr(overlay)}/>"
             f"<target dev='vda' bus='virtio'/></disk>")
    if seed:
        disks += (f"<disk type='volume' device='disk'><driver name='qemu' type='raw'/>"
                  f"<source pool={quoteattr(pool)} volume={quoteattr(seed)}/>"
                  f"<target dev='vdb' bus='virtio'/><readonly/></disk>")
    ifaces = "".join(f"<interface type='network'><source network={quoteattr(net)}/>"
                     f"<mac address='{mac}'/><model type='virtio'/></interface>"
                     for net, mac in nics)
    log = f"<log file={quoteattr(console_log)} append='off'/>" if console_log else ""
    mach = f" machine={quoteattr(machine)}" if machine else ""
    return (f"<domain type='{domain_type}'><name>{escape(name)}</name><uuid>{uuid}</uuid>"
            f"{metadata_xml(run_id, alias=alias)}"
            f"<memory unit='MiB'>{int(memory_mib)}</memory><vcpu>{int(cpus)}</vcpu>"
            f"<os><type arch={quoteattr(arch)}{mach}>hvm</type>{boot}</os>"
            f"<features><acpi/><apic/></features>{cpu}"
            f"<on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot>"
            f"<on_crash>destroy</on_crash>"
            f"<devices>{disks}{ifaces}"
            f"<serial type='pty'>{log}<target port='0'/></serial>"
            f"<console type='pty'><target type='serial' port='0'/></console>"
            f"<rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>"
            f"<memballoon model='none'/></devices></domain>")


def domain_types(capabilities_xml: str, arch: str = "x86_64") -> List[str]:
    """Return the domain types (``kvm``, ``qemu``, ``test``...) the hypervisor offers
    for ``arch`` (for any arch if ``arch`` has no guest), from its capabilities XML."""
    types: List[str] = []
    any_types: List[str] = []
    for guest in re.findall(r"<guest>.*?</guest>", capabilities_xml, re.S):
        found = re.findall(r"<domain type='(\w+)'", guest)
        any_types += found
        if re.search(rf"<arch name='{arch}'>", guest):
            types += found
    out = types or any_types
    return list(dict.fromkeys(out))


def emulator_of(capabilities_xml: str, arch: str = "x86_64") -> Optional[str]:
    """Return the emulator binary path for ``arch`` from the capabilities XML, or None."""
    for guest in re.findall(r"<guest>.*?</guest>", capabilities_xml, re.S):
        if re.search(rf"<arch name='{arch}'>", guest):
            m = re.search(r"<emulator>([^<]+)</emulator>", guest)
            if m:
                return m.group(1)
    return None
