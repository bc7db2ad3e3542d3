"""The provider conformance suite (design.md §2).

A provider's test module subclasses :class:`ConformanceSuite` and provides:

* a fixture ``reservation(self, tmp_path) -> Path``: a reservation.yaml booking ≥ 2 hosts
  in ≥ 2 roles;
* optionally a fixture ``cli_env(self) -> dict``: environment variables for the ``enos``
  subprocesses (e.g. the URL of a test API server);
* a method ``leftovers(self, run_id) -> list[str]``: what of that run id still exists on
  the testbed (namespaces, jobs, domains, ...), probed independently of enos' state.

Class attributes tune it: ``up_args`` (extra ``enos up`` arguments, e.g.
``("--no-provision",)``), ``min_crash_points`` (the fewest failpoints a full ``up`` must
pass), ``crash_points`` (restrict crash injection to these names; default: every
checkpoint recorded during a full ``up``), ``command_timeout``.

Everything runs through the real CLI in subprocesses (``python -m enos``), so
``destroy`` is always *cold*: a new process with nothing but the env dir.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pytest

from enos.errors import FailpointHit, Unsupported
from enos.provider import load_provider_class
from enos.provider.provider import EXTEND_WALLTIME, SWEEP, ProviderContext
from enos.state import MemoryJournal, State, new_run_id
from enos.task import load_reservation
from enos.testing.checks import check_resources


class ConformanceSuite:
    """Checks every provider must pass. See the module docstring for what to provide."""

    up_args: Sequence[str] = ()
    min_crash_points: int = 6
    crash_points: Optional[Sequence[str]] = None
    command_timeout: float = 600.0

    # --- to provide ---------------------------------------------------------------------
    @pytest.fixture
    def reservation(self, tmp_path) -> Path:  # pragma: no cover - abstract
        raise NotImplementedError("the provider's test class must provide a 'reservation' fixture")

    @pytest.fixture
    def cli_env(self) -> Dict[str, str]:
        return {}

    def leftovers(self, run_id: str) -> List[str]:  # pragma: no cover - abstract
        raise NotImplementedError("the provider's test class must implement leftovers(run_id)")

    # --- helpers ------------------------------------------------------------------------
    def enos(self, cwd: Path, cli_env: Dict[str, str], *args: str, extra_env: Optional[dict] = None,
             expect: Optional[int] = 0) -> subprocess.CompletedProcess:
        """Run ``python -m enos ARGS`` in ``cwd``; assert its exit code is ``expect``
        (unless None); return the CompletedProcess."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENOS_FAILPOINT")}
        env.update(cli_env)
        env.update(extra_env or {})
        p = subprocess.run([sys.executable, "-m", "enos", *args], cwd=str(cwd), env=env,
                           stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=self.command_timeout)
        if expect is not None:
            assert p.returncode == expect, (
                f"enos {' '.join(args)} exited {p.returncode}, expected {expect}\n"
                f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}")
        return p

    @staticmethod
    def state(env_dir: Path) -> dict:
        """Return the saved state of ``env_dir``."""
        return json.loads((Path(env_dir) / "state.json").read_text())

    def up(self, work: Path, reservation: Path, cli_env, env_dir: Path, extra_env=None, expect=0):
        """``enos up`` of ``reservation`` into ``env_dir``; return the CompletedProcess."""
        return self.enos(work, cli_env, "up", "-f", str(reservation), "--env", str(env_dir),
                         *self.up_args, extra_env=extra_env, expect=expect)

    def destroy(self, work: Path, cli_env, env_dir: Path, expect=0):
        """Cold ``enos destroy`` of ``env_dir``; return the CompletedProcess."""
        return self.enos(work, cli_env, "destroy", "--env", str(env_dir), expect=expect)

    def _assert_clean(self, run_id: str, when: str) -> None:
        left = self.leftovers(run_id)
        assert left == [], f"{when}: resources of run {run_id} left behind: {left}"

    def _provider_class(self, reservation: Path):
        return load_provider_class(load_reservation(str(reservation)).provider_type)

    # --- the checks -----------------------------------------------------------------------
    def test_validate_books_nothing(self, reservation, cli_env, tmp_path):
        """validate succeeds, creates no env dir and books nothing."""
        before = set(os.listdir(tmp_path))
        p = self.enos(tmp_path, cli_env, "validate", "-f", str(reservation))
        assert "valid" in p.stdout
        assert set(os.listdir(tmp_path)) == before

    def test_up_shape_then_cold_destroy(self, reservation, cli_env, tmp_path):
        """up returns well-formed resources, the testbed really has them, cold destroy frees
        them, and a second destroy is harmless."""
        config = load_reservation(str(reservation))
        env_dir = tmp_path / "env"
        self.up(tmp_path, reservation, cli_env, env_dir)
        st = self.state(env_dir)
        run_id = st["run_id"]
        try:
            assert st["phase"] == "ready"
            cls = self._provider_class(reservation)
            check_resources(st["resources"], config.machines, cls.capabilities)
            hosts = st["resources"]["hosts"]
            wanted = len(hosts)
            aliases = [h["alias"] for h in hosts]
            if "reserve" in cls.capabilities:
                assert self.leftovers(run_id), "leftovers() sees nothing while the env is up: the probe is blind"
            info = json.loads(self.enos(tmp_path, cli_env, "info", "--env", str(env_dir), "-o", "json").stdout)
            assert info["run_id"] == run_id and len(info["hosts"]) == wanted
            inv = self.enos(tmp_path, cli_env, "inventory", "--env", str(env_dir)).stdout
            for a in aliases:
                assert a in inv
        finally:
            self.destroy(tmp_path, cli_env, env_dir)
        assert self.state(env_dir)["phase"] == "destroyed"
        self._assert_clean(run_id, "after destroy")
        self.destroy(tmp_path, cli_env, env_dir)          # twice is fine
        self._assert_clean(run_id, "after a second destroy")

    def test_up_twice_books_once(self, reservation, cli_env, tmp_path):
        """A second up on the same env re-finds what was booked instead of booking again."""
        env_dir = tmp_path / "env"
        self.up(tmp_path, reservation, cli_env, env_dir)
        first = self.state(env_dir)
        try:
            left_first = sorted(self.leftovers(first["run_id"]))
            self.up(tmp_path, reservation, cli_env, env_dir)
            second = self.state(env_dir)
            assert second["run_id"] == first["run_id"]
            assert [(h["alias"], h["address"]) for h in second["resources"]["hosts"]] == \
                [(h["alias"], h["address"]) for h in first["resources"]["hosts"]]
            assert sorted(self.leftovers(first["run_id"])) == left_first, "second up booked more"
            assert second["serial"] > first["serial"]
        finally:
            self.destroy(tmp_path, cli_env, env_dir)
        self._assert_clean(first["run_id"], "after destroy")

    def _recorded_points(self, reservation, cli_env, tmp_path) -> List[str]:
        log = tmp_path / "failpoints.log"
        env_dir = tmp_path / "record-env"
        self.up(tmp_path, reservation, cli_env, env_dir, extra_env={"ENOS_FAILPOINT_LOG": str(log)})
        run_id = self.state(env_dir)["run_id"]
        self.destroy(tmp_path, cli_env, env_dir)
        self._assert_clean(run_id, "after the recording run")
        seen: List[str] = []
        for name in log.read_text().split():
            if name not in seen and not name.startswith("task.destroy"):
                seen.append(name)
        return seen

    def test_crash_at_every_failpoint_then_destroy(self, reservation, cli_env, tmp_path):
        """Kill -9 'enos up' at every checkpoint it passes; a cold destroy frees everything."""
        points = list(self.crash_points or self._recorded_points(reservation, cli_env, tmp_path))
        assert len(points) >= self.min_crash_points, f"only {len(points)} failpoints: {points}"
        failures = []
        for i, point in enumerate(points):
            env_dir = tmp_path / f"crash-{i}"
            p = self.up(tmp_path, reservation, cli_env, env_dir,
                        extra_env={"ENOS_FAILPOINTS": f"{point}=kill"}, expect=None)
            assert p.returncode == -signal.SIGKILL, f"{point}: up was not killed (rc {p.returncode}): {p.stderr}"
            if not (env_dir / "state.json").exists():
                continue                                   # killed before anything was recorded
            run_id = self.state(env_dir)["run_id"]
            d = self.destroy(tmp_path, cli_env, env_dir, expect=None)
            left = self.leftovers(run_id)
            if d.returncode != 0 or left:
                failures.append(f"{point}: destroy rc {d.returncode} {d.stderr.strip()[-300:]} leftovers {left}")
        assert not failures, "\n".join(failures)

    def test_interrupt_then_destroy(self, reservation, cli_env, tmp_path):
        """Ctrl-C right after booking exits 130 with a hint; destroy frees everything."""
        env_dir = tmp_path / "env"
        p = self.up(tmp_path, reservation, cli_env, env_dir,
                    extra_env={"ENOS_FAILPOINTS": "task.booked=interrupt"}, expect=130)
        assert "enos destroy" in p.stderr and "Traceback" not in p.stderr
        run_id = self.state(env_dir)["run_id"]
        self.destroy(tmp_path, cli_env, env_dir)
        self._assert_clean(run_id, "after interrupt + destroy")

    def test_capability_honesty(self, reservation, cli_env, tmp_path):
        """Undeclared capabilities raise Unsupported; a declared sweep really sweeps."""
        cls = self._provider_class(reservation)
        ctx = ProviderContext(config=load_reservation(str(reservation)), journal=MemoryJournal(),
                              env_dir=tmp_path, run_id="00000000")
        prov = cls(ctx)
        if EXTEND_WALLTIME not in cls.capabilities:
            with pytest.raises(Unsupported):
                prov.extend("1:00")
        if SWEEP not in cls.capabilities:
            with pytest.raises(Unsupported):
                prov.sweep()
            return
        # sweep: book, lose the state, sweep by run id
        env_dir = tmp_path / "env"
        self.up(tmp_path, reservation, cli_env, env_dir, extra_env={"ENOS_FAILPOINTS": "task.booked=kill"},
                expect=None)
        run_id = self.state(env_dir)["run_id"]
        assert self.leftovers(run_id), "nothing booked before the kill"
        (env_dir / "state.json").unlink()
        self.enos(tmp_path, cli_env, "destroy", "--sweep", "--run-id", run_id, "-f", str(reservation))
        self._assert_clean(run_id, "after sweep")


class ProviderConformance:
    """The same contract checked in-process, parametrised by a provider factory — for
    testbeds that cannot be reached from a new process (libvirt's ``test:///default``
    keeps its state per process) and for fast runs.

    Provide a fixture ``make_provider(self, tmp_path)`` returning a callable
    ``factory(journal, run_id) -> Provider`` (same config every call) and a method
    ``leftovers(self, run_id) -> list[str]``. "Cold" here means a *new provider object*
    built from the journal re-read from disk, nothing else. Crashes are simulated with
    failpoints set to ``raise`` (the CLI suite kills with SIGKILL instead).
    """

    min_checkpoints: int = 3

    @pytest.fixture
    def make_provider(self, tmp_path):  # pragma: no cover - abstract
        raise NotImplementedError("the provider's test class must provide a 'make_provider' fixture")

    def leftovers(self, run_id: str) -> List[str]:  # pragma: no cover - abstract
        raise NotImplementedError("the provider's test class must implement leftovers(run_id)")

    # --- helpers ------------------------------------------------------------------------
    @staticmethod
    def _fresh_state(tmp_path: Path, name: str):
        d = tmp_path / name
        d.mkdir()
        return State.create(d, "reservation.yaml", {}, "conformance", run_id=new_run_id())

    @staticmethod
    def _reloaded(state):
        return State.load(state.env_dir).journal

    def _clean(self, run_id: str, when: str) -> None:
        left = self.leftovers(run_id)
        assert left == [], f"{when}: resources of run {run_id} left behind: {left}"

    # --- the checks -----------------------------------------------------------------------
    def test_init_shape_then_cold_destroy(self, make_provider, tmp_path):
        """init returns well-formed resources that exist; a new provider object holding only
        the journal destroys them; destroying again is harmless."""
        st = self._fresh_state(tmp_path, "env")
        prov = make_provider(st.journal, st.run_id)
        try:
            res = prov.init()
            check_resources(res.to_dict(), prov.ctx.config.machines, prov.capabilities)
            json.dumps(res.to_dict())
            json.dumps(st.data["journal"])
            if "reserve" in prov.capabilities:
                assert self.leftovers(st.run_id), "leftovers() sees nothing after init: the probe is blind"
        finally:
            make_provider(self._reloaded(st), st.run_id).destroy()
        self._clean(st.run_id, "after a cold destroy")
        make_provider(self._reloaded(st), st.run_id).destroy()
        self._clean(st.run_id, "after a second destroy")

    def test_init_twice_books_once(self, make_provider, tmp_path):
        """A second init (new object, same journal) returns the same hosts and books nothing."""
        st = self._fresh_state(tmp_path, "env")
        try:
            first = make_provider(st.journal, st.run_id).init()
            before = sorted(self.leftovers(st.run_id))
            second = make_provider(self._reloaded(st), st.run_id).init()
            assert [(h.alias, h.address) for h in second.hosts] == [(h.alias, h.address) for h in first.hosts]
            assert sorted(self.leftovers(st.run_id)) == before, "second init booked more"
        finally:
            make_provider(self._reloaded(st), st.run_id).destroy()
        self._clean(st.run_id, "after destroy")

    def test_crash_at_every_checkpoint_then_destroy(self, make_provider, tmp_path, monkeypatch):
        """init stopped at each checkpoint it passes; destroy from the journal frees everything."""
        log = tmp_path / "checkpoints.log"
        monkeypatch.delenv("ENOS_FAILPOINTS", raising=False)
        monkeypatch.setenv("ENOS_FAILPOINT_LOG", str(log))
        st = self._fresh_state(tmp_path, "record")
        prov = make_provider(st.journal, st.run_id)
        try:
            prov.init()
            points: List[str] = []
            for name in log.read_text().split():
                if name not in points:
                    points.append(name)
        finally:
            monkeypatch.delenv("ENOS_FAILPOINT_LOG")
            make_provider(self._reloaded(st), st.run_id).destroy()
        self._clean(st.run_id, "after the recording run")
        assert len(points) >= self.min_checkpoints, f"only {len(points)} checkpoints in init: {points}"
        failures = []
        for i, point in enumerate(points):
            st = self._fresh_state(tmp_path, f"crash-{i}")
            monkeypatch.setenv("ENOS_FAILPOINTS", f"{point}=raise")
            try:
                with pytest.raises(FailpointHit):
                    make_provider(st.journal, st.run_id).init()
            finally:
                monkeypatch.delenv("ENOS_FAILPOINTS")
            try:
                make_provider(self._reloaded(st), st.run_id).destroy()
            except Exception as e:  # report all points, not just the first
                failures.append(f"{point}: destroy raised {e!r}")
            left = self.leftovers(st.run_id)
            if left:
                failures.append(f"{point}: left {left}")
        assert not failures, "\n".join(failures)

    def test_capability_honesty(self, make_provider, tmp_path):
        """Undeclared capabilities raise Unsupported; a declared sweep finds resources by run
        id with an empty journal."""
        st = self._fresh_state(tmp_path, "env")
        prov = make_provider(st.journal, st.run_id)
        if EXTEND_WALLTIME not in prov.capabilities:
            with pytest.raises(Unsupported):
                prov.extend("1:00")
        if SWEEP not in prov.capabilities:
            with pytest.raises(Unsupported):
                prov.sweep()
            return
        try:
            prov.init()
            assert self.leftovers(st.run_id)
            removed = make_provider(MemoryJournal(), st.run_id).sweep()
            assert removed, "sweep removed nothing"
            self._clean(st.run_id, "after sweep")
        finally:
            make_provider(self._reloaded(st), st.run_id).destroy()
