"""bench case ``provision``: enos' provisioning against a hand-tuned ``ansible-playbook``
(issue 22: ≥ 2× faster, at 20 and 100 local hosts).

On an env of N local hosts (``control: 1``, ``compute: N-1``, the sample reservation's
shape) brought up without provisioning, per repetition, interleaved:

* **enos**: what ``enos up`` runs once every host answers SSH (:func:`provision_enos`,
  ``enos.provision.provision``): its preinstall and the user playbook
  ``examples/sample-playbook.yml`` (the one ``reservation.yaml.sample`` provisions), timed
  in this process;
* **hand-tuned** (the target's baseline, as the issue measured it): one
  ``ansible-playbook -f N`` process with ``ANSIBLE_PIPELINING=True``, the env's inventory
  (its ssh_config, so the env's connection masters), running enos' old preinstall playbook
  (``bench/preinstall-0.yml``, a frozen copy: python3 check, then min+network facts) then the user
  playbook;
* **play alone** (reference): the same ``ansible-playbook`` on the user playbook only — the
  least a hand-tuned run can do on hosts that already have python3;
* at the first host count, **ansible-runner defaults** (reference for the earlier target):
  ``ansible_runner.run`` per playbook, nothing set but PATH.

Before each variant the play's end state is removed from the hosts (untimed); after it the
end state is checked on every host — ``identity.txt`` in the host's scratch directory with
exactly what the play writes — so every variant does the same work and reaches the same
state. A variant that fails or leaves another state stops the benchmark (exit 2).
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Dict, List

from harness import ROOT, VENV_BIN, clean_env, log, open_env, timed

SAMPLE = ROOT / "examples" / "sample-playbook.yml"
OLD_PREINSTALL = ROOT / "bench" / "preinstall-0.yml"
GREETING = "hello from enos"


def expected_identity(host) -> str:
    """Return what the sample playbook writes into ``host``'s ``identity.txt``."""
    return (f"{GREETING} from {host.alias}\nroles: {','.join(host.roles)}\n"
            f"address: {host.address}\n")


def _identity_file(host) -> Path:
    return Path(host.extra["enos_scratch"]) / "identity.txt"


def clear_state(env) -> None:
    """Remove the sample playbook's end state from every host (local hosts share this
    machine's filesystem: each host's scratch directory is a local path)."""
    for h in env.resources.hosts:
        _identity_file(h).unlink(missing_ok=True)


def check_state(env, who: str) -> None:
    """Raise RuntimeError naming the hosts whose ``identity.txt`` is missing or wrong."""
    bad = []
    for h in env.resources.hosts:
        try:
            ok = _identity_file(h).read_text() == expected_identity(h)
        except OSError:
            ok = False
        if not ok:
            bad.append(h.alias)
    if bad:
        raise RuntimeError(f"{who}: wrong end state on {len(bad)} host(s): {', '.join(bad[:10])}")


def _vars(env) -> Dict[str, str]:
    return {"greeting": GREETING, "enos_env_dir": str(env.env_dir), "enos_run_id": env.run_id}


def provision_enos(env, playbooks: List[Path]) -> float:
    """Time enos' provisioning of ``env`` (what ``enos up`` runs once every host answers
    SSH: ``enos.provision.provision``, its preinstall then ``playbooks``) in this process;
    return seconds."""
    from enos.provider import load_provider_class
    from enos.provision import provision
    shared = load_provider_class(env.state.data["provider"]).hosts_share_this_machine
    t = time.perf_counter()
    provision(env, playbooks, _vars(env), hosts_share_this_machine=shared)
    return time.perf_counter() - t


def tuned_env() -> Dict[str, str]:
    """Return the environment of the hand-tuned ``ansible-playbook``: pipelining, host keys
    checked, no retry files, no colour."""
    e = clean_env()
    e.update(ANSIBLE_PIPELINING="True", ANSIBLE_HOST_KEY_CHECKING="True", ANSIBLE_RETRY_FILES_ENABLED="False",
             ANSIBLE_NOCOLOR="True")
    return e


def provision_tuned(env, inventory: Path, playbooks: List[Path]) -> float:
    """Time one hand-tuned ``ansible-playbook -f N`` (pipelining, ``inventory``: the env's
    as ``enos up --no-provision`` wrote it, so its connection masters) running
    ``playbooks``; return seconds."""
    n = len(env.resources.hosts)
    extra = " ".join(f"{k}={v!r}" if " " in v else f"{k}={v}" for k, v in _vars(env).items())
    return timed([str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), "-f", str(n), "-e", extra,
                  *map(str, playbooks)], cwd=env.env_dir, env=tuned_env())


def provision_runner_defaults(env, inventory: Path, playbooks: List[Path], tmp: Path) -> float:
    """Time ``ansible_runner.run`` with its defaults (one run per playbook, as its API takes
    one), only PATH set so it finds ansible-playbook; return seconds."""
    import ansible_runner
    t = time.perf_counter()
    for pb in playbooks:
        r = ansible_runner.run(private_data_dir=str(tmp), playbook=str(pb), inventory=str(inventory),
                               extravars=_vars(env), envvars={"PATH": clean_env()["PATH"]}, quiet=True,
                               project_dir=str(pb.parent))
        if r.rc != 0:
            raise RuntimeError(f"ansible-runner (defaults) failed on {pb}: rc {r.rc}")
    return time.perf_counter() - t


def _one(env, name: str, fn) -> float:
    """Clear the end state, run ``fn`` (returns seconds), check the end state; return seconds."""
    clear_state(env)
    dt = fn()
    check_state(env, name)
    return dt


def bench_provision(table, env_dir: Path, repeat: int, tmp: Path, first: bool) -> None:
    """Provisioning rows on the env at ``env_dir`` (its host count N)."""
    env = open_env(env_dir)
    n = len(env.resources.hosts)
    rtmp = tmp / f"runner-defaults-{n}"
    rtmp.mkdir(exist_ok=True)
    inv = tmp / f"inventory-{n}.yml"           # as 'enos up --no-provision' wrote it (enos' own
    shutil.copyfile(env.inventory, inv)        # provisioning adds the interpreters it found)
    _one(env, "warm-up", lambda: provision_tuned(env, inv, [SAMPLE]))   # masters, byte code
    s: Dict[str, List[float]] = {"enos": [], "tuned": [], "play": [], "runner": []}
    for i in range(repeat):
        s["enos"].append(_one(env, "enos", lambda: provision_enos(env, [SAMPLE])))
        s["tuned"].append(_one(env, "hand-tuned", lambda: provision_tuned(env, inv, [OLD_PREINSTALL, SAMPLE])))
        s["play"].append(_one(env, "play alone", lambda: provision_tuned(env, inv, [SAMPLE])))
        if first:
            s["runner"].append(_one(env, "runner defaults",
                                    lambda: provision_runner_defaults(env, inv, [OLD_PREINSTALL, SAMPLE], rtmp)))
        log(f"provision {n} hosts, round {i + 1}/{repeat}: enos {s['enos'][-1]:.2f} "
            f"hand-tuned {s['tuned'][-1]:.2f} play-alone {s['play'][-1]:.2f}"
            + (f" runner-defaults {s['runner'][-1]:.2f}" if first else "") + f" (load {os.getloadavg()[0]:.1f})")
    faster = lambda x: (lambda e, r: r is not None and r >= x)  # noqa: E731
    table.add(f"provisioning {n} hosts (sample playbook) vs hand-tuned `ansible-playbook -f {n}` "
              f"(pipelined, preinstall + play), end state checked", s["enos"], s["tuned"], "≥ 2.0× faster",
              faster(2.0), ratio_kind="base/enos", base_name="(hand-tuned)")
    table.add(f"provisioning {n} hosts vs the play alone, hand-tuned (no preinstall)", s["enos"], s["play"],
              "(reference)", lambda e, r: None, ratio_kind="base/enos", base_name="(play alone)")
    if first:
        table.add(f"provisioning {n} hosts vs ansible-runner defaults", s["enos"], s["runner"], "≥ 1.3× faster",
                  faster(1.3), ratio_kind="base/enos", base_name="(runner defaults)")
