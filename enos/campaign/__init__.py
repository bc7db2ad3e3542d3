"""Benchmark campaigns: resumable parameter sweeps on an environment's hosts, ending in a
table, figures and a report (``enos campaign run|status|report FILE``).

Python API::

    import enos.campaign
    enos.campaign.run("campaign.yaml")                      # or a dict
    enos.campaign.report("campaign.yaml")
    df = enos.campaign.results("campaign.yaml")             # a pandas DataFrame of every value
    enos.campaign.validate("campaign.yaml")                 # what 'run' checks before booking
    for params in enos.campaign.sweep({"size": [1, 2]}, results="out", repeat=3):
        ...   # done when the body completes; redone if the script dies inside it

Heavy modules (execo_engine, jinja2, matplotlib) are imported inside the functions.
"""
from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional


def run(source, results=None, env: Optional[str] = None, stop_on_error: bool = False,
        destroy: bool = False, progress=None, rerun_changed: bool = False) -> Dict[str, Any]:
    """Run a campaign (file path or dict) to its end, resuming where it stopped; return
    its counts (see :func:`enos.campaign.runner.run`). Raises CampaignChanged when finished
    runs were made with another definition, unless ``rerun_changed``."""
    from enos.campaign.runner import run as _run
    return _run(source, results=results, env=env, stop_on_error=stop_on_error, destroy=destroy,
                progress=progress, rerun_changed=rerun_changed)


def validate(source) -> Dict[str, Any]:
    """Check a campaign as ``run`` does before booking anything; return a summary (see
    :func:`enos.campaign.runner.validate`). Raises ConfigError."""
    from enos.campaign.runner import validate as _validate
    return _validate(source)


def results(source, results=None):
    """Return every value of a campaign's runs (columns: the parameters, repeat, host,
    role, metric, value, unit) as a pandas DataFrame, read again from the runs (see
    :func:`enos.campaign.reporting.results_frame`). Raises MissingDependency without pandas."""
    from enos.campaign.reporting import results_frame
    return results_frame(source, results=results)


def report(source, results=None) -> Dict[str, Any]:
    """Write results.csv, figures and report.html of a campaign; return their paths
    (see :func:`enos.campaign.reporting.report`)."""
    from enos.campaign.reporting import report as _report
    return _report(source, results=results)


def status(source, results=None) -> Dict[str, Any]:
    """Return the counts of a campaign (done, remaining, in_progress, failed, total, ...)."""
    from enos.campaign.reporting import status as _status
    return _status(source, results=results)


def sweep(parameters: Dict[str, List[Any]], results, repeat: int = 1,
          exclude: Optional[List[Dict[str, Any]]] = None) -> Iterator[Dict[str, Any]]:
    """The persistent sweep of :func:`enos.experiment.sweep.sweep` (also ``env.sweep``):
    yield each combination × repetition not done yet in ``results``."""
    from enos.experiment.sweep import sweep as _sweep
    return _sweep(parameters, results, repeat=repeat, exclude=exclude)
