"""enos — book testbed machines, provision them with Ansible, run the experiment, give
them back.

The Python API (loaded on first use, so that ``import enos`` stays fast)::

    import enos
    with enos.up("reservation.yaml") as env:     # an enos.experiment.env.Env
        env.run("hostname", roles="compute")

``enos.up``, ``enos.load``, ``enos.current``, ``enos.destroy`` are
:mod:`enos.experiment.env`'s; ``enos.Env`` its class; ``enos.validate``, ``enos.check`` and
``enos.slot`` (a reservation before booking) :mod:`enos.experiment.reservation`'s; ``enos.Results`` and
``enos.Result`` (one command on hosts) :mod:`enos.results`'.
"""
__version__ = "0.1.0"

_API = {"up": "enos.experiment.env", "load": "enos.experiment.env", "current": "enos.experiment.env",
        "destroy": "enos.experiment.env", "Env": "enos.experiment.env",
        "validate": "enos.experiment.reservation", "check": "enos.experiment.reservation",
        "slot": "enos.experiment.reservation",
        "Results": "enos.results", "Result": "enos.results",
        "CommandFailed": "enos.errors", "EnosError": "enos.errors"}
#: submodules reachable as attributes without an import of their own (``enos.errors.X``)
_SUBMODULES = ("errors",)
__all__ = ["__version__", *_API]


def __getattr__(name):
    import importlib
    if name in _SUBMODULES:
        return importlib.import_module(f"enos.{name}")
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'enos' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_API))
