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

import ipaddress
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pytest

from enos.errors import Unsupported
from enos.provider import load_provider_class
from enos.provider.provider import EXTEND_WALLTIME, SWEEP


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
        from enos.config import load_config
        return load_provider_class(load_config(str(reservation)).provider_type)

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
        from enos.config import load_config
        config = load_config(str(reservation))
        env_dir = tmp_path / "env"
        self.up(tmp_path, reservation, cli_env, env_dir)
        st = self.state(env_dir)
        run_id = st["run_id"]
        try:
            assert st["phase"] == "ready"
            res = st["resources"]
            hosts = res["hosts"]
            wanted = sum(m.count for m in config.machines)
            assert len(hosts) == wanted, f"asked for {wanted} hosts, got {len(hosts)}"
            aliases = [h["alias"] for h in hosts]
            assert len(set(aliases)) == len(aliases), f"aliases not unique: {aliases}"
            for h in hosts:
                assert h["address"] and h["roles"] and 0 < h["port"] < 65536, h
            asked_roles = {r for m in config.machines for r in m.roles}
            got_roles = {r for h in hosts for r in h["roles"]}
            assert asked_roles <= got_roles, f"roles missing: {asked_roles - got_roles}"
            addrs = {h["address"] for h in hosts}
            for pool in res["networks"]:
                net = ipaddress.ip_network(pool["cidr"], strict=False)
                free = pool["free"]
                assert len(set(free)) == len(free), "IP pool has duplicates"
                assert all(ipaddress.ip_address(a) in net for a in free), "IP pool outside its CIDR"
                assert not (set(free) & addrs), "IP pool overlaps host addresses"
                if pool.get("gateway"):
                    assert pool["gateway"] not in free, "gateway in the IP pool"
            cls = self._provider_class(reservation)
            if "ip_pool" in cls.capabilities:
                assert res["networks"] and any(n["free"] for n in res["networks"]), \
                    "provider declares ip_pool but returned no free address"
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
        from enos.config import load_config
        from enos.provider.provider import ProviderContext
        from enos.state import MemoryJournal
        ctx = ProviderContext(config=load_config(str(reservation)), journal=MemoryJournal(),
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
