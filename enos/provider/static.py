"""The ``static`` provider: machines that already exist, in Enos' static reservation format.

::

    provider:
      type: static
      networks:                      # optional: address ranges the experiment may use
        - cidr: 192.168.143.0/24
          start: 192.168.143.119
          end: 192.168.143.130
          gateway: 192.168.143.1
          dns: 8.8.8.8
          roles: [network_interface]
    resources:
      control:
        - {address: 192.168.143.10, alias: ctl, user: root, keyfile: ~/.ssh/id_ed25519, port: 22}
      compute:
        - address: 192.168.143.11

An address listed under several roles is one host with all those roles. ``init`` books
nothing: it returns the hosts and, per network, the addresses ``start``..``end`` minus the
hosts' addresses and the gateway. ``destroy`` forgets them and touches nothing.
"""
from __future__ import annotations

import ipaddress
import os
from typing import Dict, List

from enos import names
from enos.errors import ConfigError
from enos.model import Check, Host, IpPool, Resources
from enos.provider.provider import DESTROY, IP_POOL, Provider

JOURNAL_KEY = "static"
_IPV4 = {"type": "string", "pattern": r"^\d{1,3}(\.\d{1,3}){3}$", "x-expected": "an IPv4 address like 10.0.0.1"}

SAMPLE = """\
# enos reservation for the 'static' provider: machines that already exist and that you can
# reach over SSH. enos books nothing and 'enos destroy' touches nothing.
provider:
  type: static
  # networks:                  # address ranges your experiment may use (IP pool)
  #   - cidr: 192.168.143.0/24
  #     start: 192.168.143.119
  #     end: 192.168.143.130
  #     gateway: 192.168.143.1
  #     dns: 8.8.8.8
  #     roles: [network_interface]

resources:
  # <role>: list of hosts; an address under several roles is one host with those roles
  control:
    - address: 192.168.143.10
      alias: control-1           # default: the address
      user: root                 # default: root
      # keyfile: ~/.ssh/id_ed25519  # default: your SSH agent / default keys (checked
      #                            # by 'enos validate' when given)
      port: 22
  compute:
    - address: 192.168.143.11
    - address: 192.168.143.12
      extra: {network_interface: eth1}   # Ansible host variables
"""


class StaticProvider(Provider):
    """Machines that already exist: nothing is booked, nothing is released."""

    type = "static"
    description = "machines that already exist (addresses, users, keys given in the reservation)"
    capabilities = frozenset({DESTROY, IP_POOL})
    sample = SAMPLE
    schema = {
        "type": "object",
        "properties": {
            "type": {"const": "static"},
            "networks": {
                "type": "array",
                "x-expected": "a list of networks ({cidr, start, end, gateway, dns, roles})",
                "items": {
                    "type": "object",
                    "required": ["cidr"],
                    "additionalProperties": False,
                    "x-expected": "a network: {cidr, start, end, gateway, dns, roles}",
                    "properties": {
                        "cidr": {"type": "string", "pattern": r"^\d{1,3}(\.\d{1,3}){3}/\d{1,2}$",
                                 "x-expected": "a CIDR like 192.168.143.0/24"},
                        "start": _IPV4, "end": _IPV4, "gateway": _IPV4, "dns": _IPV4,
                        "name": {"type": "string"},
                        "roles": {"type": "array", "items": {"type": "string"},
                                  "x-expected": "a list of role names"},
                    },
                },
            },
        },
        "additionalProperties": False,
    }
    machine_schema = {
        "type": "object",
        "required": ["address"],
        "properties": {
            "address": names.HOST_NAME,
            "alias": names.ALIAS,
            "user": names.USER,
            "keyfile": names.PATH,
            "port": {"type": "integer", "minimum": 1, "maximum": 65535},
            "jump": names.JUMP,
            "host_key": names.HOST_KEY,
            "extra": {"type": "object", "x-expected": "a mapping of Ansible host variables"},
        },
        "additionalProperties": False,
    }

    # ------------------------------------------------------------------ parsing
    @classmethod
    def _hosts(cls, config) -> List[Host]:
        """Return the hosts of ``config`` (an address under several roles merged into one).
        Raises ConfigError when two entries for one address disagree, or an alias is
        given to two addresses."""
        base = getattr(config, "base_dir", None) or (
            os.path.dirname(os.path.abspath(config.file)) if config.file else os.getcwd())
        hosts: Dict[str, Host] = {}
        given: Dict[str, Dict[str, tuple]] = {}      # address -> attr -> (value, keypath)
        by_alias: Dict[str, tuple] = {}               # alias -> (address, keypath)
        attrs = ("alias", "user", "port", "keyfile", "jump", "host_key")
        for m in config.machines:
            o = m.options
            addr = str(o["address"])
            h = hosts.setdefault(addr, Host(alias=addr, address=addr, roles=[]))
            seen = given.setdefault(addr, {})
            for attr in attrs:
                if attr not in o:
                    continue
                value = o[attr]
                if attr == "keyfile":
                    value = os.path.join(base, os.path.expanduser(str(value)))
                elif attr == "port":
                    value = int(value)
                if attr in seen and seen[attr][0] != value:
                    raise config.error(f"{m.keypath}.{attr}", f"{addr} is also listed at {seen[attr][1]} "
                                                              f"with {attr} {seen[attr][0]!r}")
                seen[attr] = (value, m.keypath)
                setattr(h, attr, value)
            h.extra.update(o.get("extra") or {})
            for r in m.roles:
                if r not in h.roles:
                    h.roles.append(r)
        for addr, h in hosts.items():
            if h.alias in by_alias and by_alias[h.alias][0] != addr:
                other, where = by_alias[h.alias]
                here = given[addr].get("alias", (None, ""))[1]
                raise config.error(here or "resources", f"alias '{h.alias}' is already used by {other} ({where})")
            by_alias[h.alias] = (addr, given[addr].get("alias", (None, "resources"))[1])
        return list(hosts.values())

    @classmethod
    def _pools(cls, config, exclude: List[str]) -> List[IpPool]:
        pools = []
        for i, n in enumerate(config.options.get("networks") or []):
            where = f"provider.networks.{i}"
            try:
                net = ipaddress.ip_network(n["cidr"], strict=False)
            except ValueError:
                raise config.error(f"{where}.cidr", f"expected a CIDR like 192.168.143.0/24, got '{n['cidr']}'") from None
            bounds = {}
            for key in ("start", "end", "gateway", "dns"):
                if n.get(key) is None:
                    continue
                try:
                    a = ipaddress.ip_address(n[key])
                except ValueError:
                    raise config.error(f"{where}.{key}", f"expected an IPv4 address, got '{n[key]}'") from None
                if key != "dns" and a not in net:
                    raise config.error(f"{where}.{key}", f"{a} is not inside {net}")
                bounds[key] = a
            if "start" in bounds and "end" in bounds and bounds["start"] > bounds["end"]:
                raise config.error(f"{where}.end", f"end {bounds['end']} comes before start {bounds['start']}")
            pools.append(IpPool.from_range(str(net), exclude=exclude, start=n.get("start"), end=n.get("end"),
                                           gateway=n.get("gateway"), dns=n.get("dns"),
                                           roles=list(n.get("roles") or []), name=n.get("name")))
        return pools

    @classmethod
    def validate(cls, config) -> None:
        """Check hosts (consistent duplicates, unique aliases) and networks (addresses inside
        their CIDR, start ≤ end). Raises ConfigError."""
        hosts = cls._hosts(config)
        cls._pools(config, [h.address for h in hosts])

    @classmethod
    def preflight(cls, config) -> None:
        """Raise ConfigError (naming the machine's ``keyfile`` key) for a key file that does
        not exist, is not readable or is not a regular file (a directory, a device)."""
        for m in config.machines:
            if "keyfile" not in m.options:
                continue
            for h in cls._hosts(config):
                if h.address == str(m.options["address"]) and h.keyfile and not _usable_key(h.keyfile):
                    raise config.error(f"{m.keypath}.keyfile", f"SSH key file {h.keyfile} does not exist, "
                                                               f"is not readable or is not a regular file")

    @staticmethod
    def _missing_keyfiles(hosts: List[Host]) -> Dict[str, str]:
        """Return {keyfile: alias} for the hosts' key files that are not usable."""
        return {h.keyfile: h.alias for h in hosts if h.keyfile and not _usable_key(h.keyfile)}

    def check(self) -> List[Check]:
        """Return one check per SSH key file the reservation names (readable or not)."""
        if not self.ctx.config.machines:
            return []
        hosts = self._hosts(self.ctx.config)
        missing = self._missing_keyfiles(hosts)
        return [Check(f"SSH key {k}", k not in missing, "readable" if k not in missing else "missing or unreadable",
                      f"create it or fix 'keyfile' of {missing.get(k)}")
                for k in sorted({h.keyfile for h in hosts if h.keyfile})]

    # ------------------------------------------------------------------ contract
    def init(self, force_deploy: bool = False) -> Resources:
        """Return the listed hosts and the networks' free addresses; books nothing.
        Raises ConfigError on an inconsistent reservation or a missing key file."""
        hosts = self._hosts(self.ctx.config)
        missing = self._missing_keyfiles(hosts)
        if missing:
            key, alias = next(iter(missing.items()))
            raise ConfigError(f"host {alias}: SSH key file {key} does not exist or is not readable",
                              file=self.ctx.config.file, keypath="resources")
        pools = self._pools(self.ctx.config, [h.address for h in hosts])
        self.ctx.journal.record(JOURNAL_KEY, {"hosts": [h.alias for h in hosts]})
        return Resources(hosts=hosts, networks=pools)

    def destroy(self) -> None:
        """Forget the hosts (they are not ours to release); touches nothing. Idempotent."""
        self.ctx.journal.forget(JOURNAL_KEY)

    def info(self) -> dict:
        """Return the aliases of the hosts in use."""
        return {"hosts": (self.ctx.journal.get(JOURNAL_KEY) or {}).get("hosts", [])}


def _usable_key(path: str) -> bool:
    """True for a readable regular file (ssh reads a key file; a directory or a device is not one)."""
    return os.path.isfile(path) and os.access(path, os.R_OK)


PROVIDER = StaticProvider
