"""Several providers in one environment (a reservation with ``providers:``), seen by the
task runner as one provider that knows nothing of any testbed: every method of the
contract is the parts' own, called on each.

* Each part gets its own :class:`~enos.provider.provider.ProviderContext`: the env's dir,
  key and progress, its own journal inside the env's (``journal["part:<name>"]``: what
  each part records is kept apart), and a run id of its own derived from the env's
  (``sha1(<run id>:<name>)[:8]``), so two parts of one type never tag their resources
  alike; :meth:`Providers.sweep` derives them again from the run id alone.
* ``init`` books all parts at once (one thread each); a part that fails does not stop the
  others: what they booked stays journalled and the first error is raised (``enos destroy``
  frees everything, ``enos up`` resumes). A signal stops the wait at once (the parts see
  :data:`enos.signals.STOP` themselves).
* Resources are merged: every host also gets its part's name as a role (``enos run
  --roles g5k``) and ``enos_provider`` as a variable; aliases met in two parts are
  prefixed with their part's name.
* ``destroy`` destroys every part, even when one fails, then raises one
  ``DestroyIncomplete`` listing what is left.
* ``earliest_slot``: the common start of the parts that book ahead (the others start
  when asked): each finds its earliest slot from the latest so far, until they agree.
"""
from __future__ import annotations

import hashlib
import threading
from dataclasses import replace
from typing import Any, Dict, List, Optional, Tuple, Type

from enos import signals
from enos.errors import DestroyIncomplete, EnosError, Unsupported
from enos.model import Check, Resources
from enos.provider import load_provider_class
from enos.provider.provider import ADVANCE_RESERVATION, EXTEND_WALLTIME, SWEEP, Provider, ProviderContext
from enos.reservation.multi import MULTI
from enos.state import Journal

#: rounds of the common-slot search before giving up
SLOT_ROUNDS = 20


def part_run_id(run_id: str, name: str) -> str:
    """The run id of part ``name`` of env ``run_id`` (8 hex characters, stable)."""
    return hashlib.sha1(f"{run_id}:{name}".encode()).hexdigest()[:8]


class PartJournal(Journal):
    """One part's journal: a dict of its own inside the env's journal, saved with it."""

    def __init__(self, parent: Journal, name: str):
        super().__init__(parent._state)
        self.key = f"part:{name}"

    @property
    def data(self) -> dict:
        """The part's own records."""
        return self._state.data.setdefault("journal", {}).setdefault(self.key, {})


def provider_class(config, loader=load_provider_class) -> Type[Provider]:
    """Return the class for ``config``: its provider's, or, for a ``providers:`` reservation,
    a :class:`Providers` whose capabilities are its parts' (any of them)."""
    if config.provider_type != MULTI:
        return loader(config.provider_type)
    classes = {name: loader(part.provider_type) for name, part in config.parts}
    caps = frozenset().union(*(c.capabilities for c in classes.values()))
    requires = tuple(sorted({m for c in classes.values() for m in c.requires}))
    # hosts on this machine in any part: provisioning bounds Mitogen's memory for all (enos.provision)
    shared = any(c.hosts_share_this_machine for c in classes.values())
    return type("Providers", (Providers,), {"capabilities": caps, "part_classes": classes, "requires": requires,
                                            "hosts_share_this_machine": shared})


class Providers(Provider):
    """The parts of a ``providers:`` reservation as one provider (see the module)."""

    type = MULTI
    description = "several providers in one environment (providers: in reservation.yaml)"
    part_classes: Dict[str, Type[Provider]] = {}

    def __init__(self, ctx: ProviderContext):
        super().__init__(ctx)
        self.parts: Dict[str, Provider] = {}
        for name, part in ctx.config.parts:
            sub = ProviderContext(config=part, journal=PartJournal(ctx.journal, name), env_dir=ctx.env_dir,
                                  run_id=part_run_id(ctx.run_id, name), progress=ctx.progress,
                                  ssh_key=ctx.ssh_key, log=ctx.log.getChild(name))
            self.parts[name] = self.part_classes[name](sub)

    @classmethod
    def validate(cls, config) -> None:
        """Each part's own checks (they ran when the parts were built; again on demand)."""
        for name, part in config.parts:
            cls.part_classes[name].validate(part)

    @classmethod
    def preflight(cls, config) -> None:
        """Each part's preflight. Raises what the first failing one raises."""
        for name, part in config.parts:
            cls.part_classes[name].preflight(part)

    # --- booking ------------------------------------------------------------------------
    def _each(self, call, names: Optional[List[str]] = None) -> Tuple[Dict[str, Any], List[Tuple[str, BaseException]]]:
        """Run ``call(name, part)`` for every part at once (daemon threads, so a signal
        never waits for a testbed); return ({name: result}, [(name, error)])."""
        names = names if names is not None else list(self.parts)
        results: Dict[str, Any] = {}
        errors: List[Tuple[str, BaseException]] = []
        lock = threading.Lock()

        def run(name: str) -> None:
            try:
                value = call(name, self.parts[name])
                with lock:
                    results[name] = value
            except BaseException as e:  # noqa: B902 - handed to the caller
                with lock:
                    errors.append((name, e))
        threads = [threading.Thread(target=run, args=(n,), name=f"enos-part-{n}", daemon=True) for n in names]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.1)
                signals.check()          # KeyboardInterrupt at once: the parts stop on STOP
        return results, errors

    def init(self, force_deploy: bool = False) -> Resources:
        """Book every part at once; return their merged resources. Raises the first part's
        error (the others' bookings stay journalled)."""
        self.ctx.journal.record("parts", sorted(self.parts))
        for p in self.parts.values():
            if ADVANCE_RESERVATION in p.capabilities:
                p.ctx.start_at = self.ctx.start_at
        results, errors = self._each(lambda n, p: p.init(force_deploy=force_deploy))
        if errors:
            name, e = sorted(errors, key=lambda x: list(self.parts).index(x[0]))[0]
            if isinstance(e, EnosError):
                e.args = (f"{name}: {e}",) + e.args[1:]
            raise e
        return merge([(n, results[n]) for n in self.parts])

    def before_preinstall(self, env: Any) -> None:
        """Each part's hook, in order."""
        for p in self.parts.values():
            p.before_preinstall(env)

    def after_preinstall(self, env: Any) -> None:
        """Each part's hook, in order."""
        for p in self.parts.values():
            p.after_preinstall(env)

    # --- giving back ----------------------------------------------------------------------
    def destroy(self) -> None:
        """Destroy every part (all at once, each from its own journal), even when one
        fails. Raises DestroyIncomplete listing what every failing part left."""
        for p in self.parts.values():
            p.ctx.release_reused = self.ctx.release_reused
        _, errors = self._each(lambda n, p: p.destroy())
        left: List[str] = []
        for name, e in errors:
            if isinstance(e, DestroyIncomplete):
                left += [f"{name}: {x}" for x in e.leftovers]
            elif isinstance(e, EnosError):
                left.append(f"{name}: {e}")
            else:
                raise e
        if left:
            raise DestroyIncomplete(left)

    def sweep(self) -> List[str]:
        """Sweep every part that can (their run ids derived from the env's). Raises
        DestroyIncomplete listing what could not be removed."""
        able = [n for n, p in self.parts.items() if SWEEP in p.capabilities]
        results, errors = self._each(lambda n, p: p.sweep(), able)
        if errors:
            raise DestroyIncomplete([f"{n}: {e}" for n, e in errors])
        return [f"{n}: {r}" for n in able for r in results.get(n, [])]

    # --- while it runs ------------------------------------------------------------------------
    def extend(self, walltime: str) -> dict:
        """Extend the parts that can; return {part: its answer}."""
        able = {n: p for n, p in self.parts.items() if EXTEND_WALLTIME in p.capabilities}
        if not able:
            raise Unsupported("no provider of this environment can extend a reservation")
        return {n: p.extend(walltime) for n, p in able.items()}

    def info(self) -> dict:
        """Return {part: its info} (an error text for a part that cannot say)."""
        out: Dict[str, Any] = {}
        for n, p in self.parts.items():
            try:
                out[n] = p.info()
            except EnosError as e:
                out[n] = {"error": str(e)}
        return out

    def check(self) -> List[Check]:
        """Every part's checks, named after their part."""
        return [replace(c, what=f"{n}: {c.what}") for n, p in self.parts.items() for c in p.check()]

    def earliest_slot(self, walltime: Optional[str], start: float, until: Optional[float] = None) -> Optional[dict]:
        """The common earliest window of the parts that book ahead: each part's earliest
        slot from the latest start so far, until all agree (at most :data:`SLOT_ROUNDS`
        rounds). Returns ``{"start", "end", "providers": {part: its slot}}`` or None."""
        able = {n: p for n, p in self.parts.items() if ADVANCE_RESERVATION in p.capabilities}
        if not able:
            raise Unsupported("no provider of this environment can book ahead")
        t = start
        for _ in range(SLOT_ROUNDS):
            slots = {n: p.earliest_slot(walltime, t, until) for n, p in able.items()}
            if any(s is None for s in slots.values()):
                return None
            latest = max(s["start"] for s in slots.values())
            if all(s["start"] == latest for s in slots.values()):
                return {"start": latest, "end": max(s["end"] for s in slots.values()), "providers": slots}
            t = latest
        return None


def merge(parts: List[Tuple[str, Resources]]) -> Resources:
    """Return one Resources of the parts': hosts get their part's name as a role and as
    ``enos_provider``; aliases met in two parts are prefixed ``<part>-``."""
    seen: Dict[str, int] = {}
    for _, res in parts:
        for h in res.hosts:
            seen[h.alias] = seen.get(h.alias, 0) + 1
    hosts, networks = [], []
    for name, res in parts:
        for h in res.hosts:
            alias = f"{name}-{h.alias}" if seen[h.alias] > 1 else h.alias
            roles = list(h.roles) + ([name] if name not in h.roles else [])
            hosts.append(replace(h, alias=alias, roles=roles, extra={**h.extra, "enos_provider": name}))
        networks += res.networks
    return Resources(hosts=hosts, networks=networks)
