"""The network of a local env, in-process with pyroute2 (imported lazily): the bridge with
the gateway address, one namespace per host with its veth pair, and their teardown (every
process of a namespace first, then the namespaces — the kernel then drops their veths —,
then whatever veth is left, and the bridge's stale ARP entries)."""
from __future__ import annotations

import ipaddress
import os
import re
import socket
import time
from pathlib import Path
from typing import List, Optional

from enos import process
from enos.errors import ProviderError
from enos.failpoint import checkpoint
from enos.local import netns
from enos.local.plan import (HostPlan, bridge_name, our_arg, pick_subnet, subnet_lock, subnet_option,
                             used_networks)


def ensure_bridge(ipr, rec: dict, config, run_id: str, base_dir: Path, save) -> dict:
    """Return the journal record with subnet and bridge set up (picking a subnet if
    needed; ``save(rec)`` journals it); the bridge exists, is up and holds the gateway
    address when this returns. Raises ConfigError (subnet clash), ProviderError."""
    from pyroute2 import NetlinkError
    wanted = subnet_option(config)
    br = bridge_name(run_id)
    with subnet_lock():
        found = ipr.link_lookup(ifname=br)
        if rec.get("subnet") and wanted is not None and ipaddress.ip_network(rec["subnet"]) != wanted:
            raise config.error(
                "provider.subnet", f"this environment already uses {rec['subnet']}; run 'enos destroy' "
                f"before changing the subnet")
        if rec.get("subnet") and not found:
            # recorded but never put on a bridge (crash): still free?
            used = used_networks(ipr)
            if any(u.overlaps(ipaddress.ip_network(rec["subnet"])) for u in used):
                if wanted is not None:
                    raise config.error("provider.subnet", f"{wanted} is now used on this machine")
                rec["subnet"] = None
        if not rec.get("subnet"):
            used = used_networks(ipr, skip_index=found[0] if found else None)
            if wanted is not None:
                clash = [u for u in used if u.overlaps(wanted)]
                if clash:
                    raise config.error(
                        "provider.subnet", f"{wanted} overlaps {clash[0]}, already used on this "
                        f"machine; choose another subnet or remove the option to pick a free one")
                net = wanted
            else:
                net = pick_subnet(used, int(run_id, 16) if re.fullmatch(r"[0-9a-f]+", run_id)
                                  else sum(run_id.encode()))
            rec.update(subnet=str(net), gateway=str(next(net.hosts())),
                       bridge=br, dir=str(base_dir), hosts=rec.get("hosts") or [])
            save(rec)
            checkpoint("local.subnet_picked")
        net = ipaddress.ip_network(rec["subnet"])
        idx = ipr.link_lookup(ifname=br)
        if not idx:
            try:
                ipr.link("add", ifname=br, kind="bridge")
            except NetlinkError as e:
                raise ProviderError(f"cannot create bridge {br}: {e}") from None
            checkpoint("local.bridge_created")
            idx = ipr.link_lookup(ifname=br)
        idx = idx[0]
        have = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=idx, family=socket.AF_INET)}
        if rec["gateway"] not in have:
            try:
                ipr.addr("add", index=idx, address=rec["gateway"], prefixlen=net.prefixlen)
            except NetlinkError as e:
                raise ProviderError(f"cannot put {rec['gateway']}/{net.prefixlen} on bridge {br}: {e}") from None
            checkpoint("local.bridge_addressed")
        ipr.link("set", index=idx, state="up")
    return rec

def create_netns(ipr, plan: HostPlan, rec: dict) -> None:
    """Create the namespace, its veth pair and addressing; attach the veth to the bridge."""
    from pyroute2 import IPRoute, NetlinkError

    prefix = ipaddress.ip_network(rec["subnet"]).prefixlen
    root_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY)

    def inside():
        checkpoint("local.netns_created")
        with IPRoute() as n:
            n.link("set", index=n.link_lookup(ifname="lo")[0], state="up")
            n.link("add", ifname="eth0", kind="veth", peer={"ifname": plan.veth, "net_ns_fd": root_fd})
            checkpoint("local.veth_created")
            eth0 = n.link_lookup(ifname="eth0")[0]
            n.addr("add", index=eth0, address=plan.address, prefixlen=prefix)
            n.link("set", index=eth0, state="up")
            n.route("add", dst="default", gateway=rec["gateway"])
        checkpoint("local.netns_configured")

    try:
        netns.run_in_new_netns(plan.ns, inside)
        idx = ipr.link_lookup(ifname=plan.veth)
        if not idx:
            raise ProviderError(f"veth {plan.veth} of {plan.alias} vanished right after its creation")
        ipr.link("set", index=idx[0], master=ipr.link_lookup(ifname=rec["bridge"])[0], state="up")
        checkpoint("local.veth_attached")
    except FileExistsError:
        raise ProviderError(f"network namespace {plan.ns} already exists (left over by a crash?); "
                            f"run 'enos destroy' first") from None
    except (OSError, NetlinkError) as e:
        raise ProviderError(f"cannot set up namespace {plan.ns} for {plan.alias}: {e}") from None
    finally:
        os.close(root_fd)

def teardown_hosts(ipr, plans: List[HostPlan], run_id: str) -> List[str]:
    """Kill every process of the hosts' namespaces, remove the namespaces, make sure their
    veths are gone. Return what is left (empty when all went)."""
    from pyroute2 import NetlinkError
    if not plans:
        return []
    left: List[str] = []
    names = [p.ns for p in plans]
    pids = {pid for lst in netns.netns_pids(names).values() for pid in lst}
    pids |= {p.pid for p in plans if p.pid and process.alive(p.pid) and is_ours(p.pid, run_id, p.start)}
    for pid in process.end_pids(pids):
        left.append(f"process {pid}")
    for p in plans:
        try:
            netns.remove_netns(p.ns)
        except OSError as e:
            left.append(f"namespace {p.ns} ({e})")
    # the kernel deletes a removed namespace's veths asynchronously, in one batch
    veths = {p.veth for p in plans}
    deadline = time.monotonic() + 3.0
    while True:
        present = veths & link_names(ipr)
        if not present or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    for v in sorted(present):
        try:
            ipr.link("del", ifname=v)
        except NetlinkError as e:
            if e.code != 19:  # ENODEV: gone meanwhile
                left.append(f"veth {v} ({e})")
    # a re-created host gets a new MAC: drop the bridge's stale ARP entries, or this
    # machine keeps sending to the old MAC until the entry expires (seconds)
    br = ipr.link_lookup(ifname=bridge_name(run_id))
    for p in plans if br else ():
        try:
            ipr.neigh("del", dst=p.address, ifindex=br[0])
        except NetlinkError:
            pass                     # no entry: nothing to drop
    return left

def is_ours(pid: int, run_id: str, start: Optional[int] = None) -> bool:
    """True when ``pid`` is one of this env's sshds: its recorded start time matches
    (``start``), or, not recorded, one of its arguments is a file of this run's host
    dirs (``.../local-<run id>/<alias>/sshd_config``)."""
    if start is not None:
        return process.start_time(pid) == start
    return pid in process.pids_with_arg(lambda arg: our_arg(run_id, arg))

def link_names(ipr) -> set:
    """The names of every link of ``ipr``'s namespace."""
    return {link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}