"""What can be done with a reservation before anything is booked: validate it (as
``enos validate``), check what its provider needs on this machine (``enos check``), list
the providers and their sample reservations (``enos new``)."""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from dataclasses import dataclass, field
from typing import List, Mapping, Optional, Tuple, Union

from enos import task
from enos.errors import MissingDependency, UsageError
from enos.model import Check
from enos.multi import provider_class
from enos.provider import available_providers, check_requirements, load_provider_class
from enos.provider.provider import ProviderContext
from enos.reservation.config import Config
from enos.state import MemoryJournal


def validate(reservation: Union[str, os.PathLike, Mapping]) -> Config:
    """Return the validated :class:`~enos.reservation.config.Config` of a reservation file
    (or parsed dict). What its provider needs of *this machine* (its preflight: a key or
    image file, a free subnet) is not a defect of the file: it is added to the Config's
    ``warnings`` ("on this machine: ..."); ``enos up`` and ``enos check`` refuse it. Books
    nothing. Raises ConfigError (file, line, key), UsageError, MissingDependency."""
    if isinstance(reservation, Mapping):
        config = task.reservation_from_data(dict(reservation), "(reservation dict)", check_files=True)
    else:
        config = task.load_reservation(os.fspath(reservation))
    try:
        provider_class(config).preflight(config)
    except UsageError as e:
        config.warnings.append(f"on this machine: {e} ('enos up' refuses this until it is fixed; "
                               f"'enos check -f FILE' says what is missing)")
    return config


@dataclass
class CheckReport:
    """What ``enos check`` found: the ``provider`` type and its ``checks`` (in order)."""

    provider: str
    checks: List[Check] = field(default_factory=list)

    @property
    def missing(self) -> List[Check]:
        """The needs that are not met."""
        return [c for c in self.checks if not c.ok]

    @property
    def warnings(self) -> List[Check]:
        """The needs met in a degraded way (e.g. VMs under QEMU emulation)."""
        return [c for c in self.checks if c.ok and c.warn]


def slot(reservation: Union[str, os.PathLike, Mapping], walltime: Optional[str] = None,
         start: Optional[float] = None, until: Optional[float] = None) -> Optional[dict]:
    """Return the earliest window when everything ``reservation`` asks for is free for
    ``walltime`` (``HH:MM[:SS]``; default the reservation's), starting at or after ``start``
    and ending by ``until`` (Unix times; default now, no bound): ``{"start", "end", ...}``
    (Unix times plus the provider's details, e.g. Grid'5000's free nodes per cluster), or
    None when there is none. Books nothing. Raises ConfigError, Unsupported (a provider
    that cannot book ahead), the provider's errors (AuthError, Unavailable...)."""
    if isinstance(reservation, Mapping):
        config = task.reservation_from_data(dict(reservation), "(reservation dict)", check_files=True)
    else:
        config = task.load_reservation(os.fspath(reservation))
    return task.find_slot(config, walltime=walltime, start=start, until=until)


def check(reservation: Union[None, str, os.PathLike] = None, provider: Optional[str] = None) -> CheckReport:
    """Return what the provider of ``reservation`` (or the provider type ``provider``, no
    file needed) needs on this machine and whether it is there: the SSH client and
    ssh-keygen, ansible-playbook, the provider's Python libraries, then the provider's own
    checks (daemons, credentials, privileges); each missing one carries its fix. Books
    nothing. Raises ConfigError (the reservation), ProviderNotFound, UsageError."""
    if provider is None and reservation is None:
        raise UsageError("enos.check: give a reservation file or a provider type")
    config: Optional[Config] = None
    if provider is not None:
        cls = load_provider_class(provider, check=False)
        config = Config(file="(none)", provider_type=cls.type, options={"type": cls.type}, machines=[])
    else:
        try:
            config = task.load_reservation(os.fspath(reservation))
            cls = provider_class(config, loader=lambda t: load_provider_class(t, check=False))
        except MissingDependency as e:      # the library missing is what check reports
            cls = load_provider_class(e.provider, check=False)
    checks = core_checks()
    try:
        check_requirements(cls)
        lib_ok, detail = True, ", ".join(cls.requires) or "none needed"
    except MissingDependency as e:
        lib_ok, detail = False, str(e)
    checks.append(Check(f"python libraries of '{cls.type}'", lib_ok, detail,
                        f"pip install 'enos[{cls.extra}]'" if cls.extra else ""))
    if lib_ok and config is not None:
        with tempfile.TemporaryDirectory(prefix="enos-check-") as tmp:
            ctx = ProviderContext(config=config, journal=MemoryJournal(), env_dir=Path(tmp), run_id="check")
            checks += cls(ctx).check()
    return CheckReport(cls.type, checks)


def core_checks() -> List[Check]:
    """What every provider needs: the ssh client, ssh-keygen, ansible-playbook (in enos'
    virtualenv or on PATH)."""
    venv_bin = str(Path(sys.executable).parent)
    ap = shutil.which("ansible-playbook", path=venv_bin + os.pathsep + os.environ.get("PATH", ""))
    return [
        Check("ssh client", bool(shutil.which("ssh")), shutil.which("ssh") or "", "apt-get install openssh-client"),
        Check("ssh-keygen", bool(shutil.which("ssh-keygen")), shutil.which("ssh-keygen") or "",
              "apt-get install openssh-client"),
        Check("ansible-playbook", bool(ap), ap or "", "pip install ansible-core (in enos' virtualenv)"),
    ]


def providers() -> List[Tuple[str, str]]:
    """Return (type, description) of every provider, built-in or registered; a provider
    that cannot be loaded is listed with the reason."""
    out = []
    for name in available_providers():
        try:
            out.append((name, load_provider_class(name, check=False).description))
        except Exception as e:  # noqa: BLE001 - a broken third-party provider must not hide the others
            out.append((name, f"(cannot load: {e})"))
    return out


def sample(provider: str) -> str:
    """Return the commented sample reservation of provider type ``provider``. Raises
    ProviderNotFound, UsageError (a provider that ships none)."""
    cls = load_provider_class(provider, check=False)
    if not cls.sample:
        raise UsageError(f"provider '{cls.type}' ships no sample reservation")
    return cls.sample if cls.sample.endswith("\n") else cls.sample + "\n"


def network_constraints(reservation: Union[str, os.PathLike]):
    """Return the ``network_constraints`` of a reservation file (for ``env.tc``). Raises
    ConfigError, UsageError when the file has none."""
    config = task.load_reservation(os.fspath(reservation))
    if config.network_constraints is None:
        raise UsageError(f"{reservation} has no 'network_constraints' section (see docs/network-constraints.md)")
    return config.network_constraints
