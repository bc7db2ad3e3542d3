"""What of the user's environment enos hands to the programs it starts.

A researcher's shell holds secrets (``G5K_PASSWORD``, cloud tokens, proxy URLs with a
password): ansible-runner copies the whole environment of its caller into the
``command`` artifact of every run (``<env>/ansible/artifacts/*/command``) and into the
playbook's processes. enos hands on only what SSH, Ansible and a shell need
(:data:`KEEP`, :data:`KEEP_PREFIXES`); the experiment's own values go through the
reservation's ``variables:``.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Dict, Iterator, Mapping, Optional

#: variables passed on as they are
KEEP = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TERM", "TMPDIR",
    "SSH_AUTH_SOCK", "VIRTUAL_ENV", "PYTHONPATH", "XDG_RUNTIME_DIR",
})
#: variables passed on by prefix: locale, Ansible's own settings, enos' test hooks
KEEP_PREFIXES = ("LC_", "ANSIBLE_", "ENOS_")


def kept(name: str) -> bool:
    """True when the environment variable ``name`` is handed on to child programs."""
    return name in KEEP or name.startswith(KEEP_PREFIXES)


def child_environ(extra: Optional[Mapping[str, str]] = None,
                  environ: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """Return the environment for a child program: the kept variables of ``environ``
    (default: this process's) updated with ``extra``."""
    src = os.environ if environ is None else environ
    env = {k: v for k, v in src.items() if kept(k)}
    env.update(extra or {})
    return env


@contextmanager
def scrubbed_environ() -> Iterator[None]:
    """Within the block, this process's ``os.environ`` holds only the kept variables (for
    libraries, like ansible-runner, that copy it whole into files and child processes);
    restored on the way out, exceptions included."""
    saved = dict(os.environ)
    for k in [k for k in os.environ if not kept(k)]:
        del os.environ[k]
    try:
        yield
    finally:
        for k in [k for k in os.environ if k not in saved]:
            del os.environ[k]
        os.environ.update(saved)
