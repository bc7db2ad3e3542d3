"""Shared test setup: root-only tests are skipped with a reason for other users (and fail
under CI=true, see tests/prereq.py); the network guard (tests/netguard/sitecustomize.py)
runs in this process and in every Python process the tests start, and the session fails
at its end if anything tried to reach a real Grid'5000 name or a non-local address.

SIGINT is given back its default here when the suite was started with it ignored: a
background job of a non-interactive shell (``bash .ci/run > log &``) inherits SIGINT as
SIG_IGN, every process the tests start inherits it in turn, and a Python script started
that way never sees the Ctrl-C a test sends it (it hung in ci-3, ci-4 and ci-5 and passed
in the foreground). A terminal's foreground job, what the Ctrl-C tests stand for, has it
at its default."""
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
NETGUARD = Path(__file__).resolve().parent / "netguard"

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prereq import CI, missing  # noqa: E402

if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    # a Python handler (unlike SIG_IGN) is reset to SIG_DFL in every program this
    # process starts, so their Ctrl-C works as in a terminal
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _start_netguard() -> str:
    """Put the guard on PYTHONPATH for child processes and install it here; return its log."""
    log = os.environ.get("ENOS_NETGUARD_LOG") or tempfile.mkstemp(prefix="enos-netguard-", suffix=".log")[1]
    os.environ["ENOS_NETGUARD_LOG"] = log
    os.environ["ENOS_NETGUARD"] = "1"
    os.environ["PYTHONPATH"] = os.pathsep.join([str(NETGUARD)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    if "sitecustomize" not in sys.modules or not hasattr(sys.modules["sitecustomize"], "_install"):
        sys.path.insert(0, str(NETGUARD))
        import sitecustomize  # noqa: F401  (installs the audit hook: ENOS_NETGUARD=1)
    return log


NETGUARD_LOG = _start_netguard()


@pytest.fixture(scope="session", autouse=True)
def network_guard():
    """Fail the session loudly if any test (or a process it started) was refused by the
    network guard, even if the refusal was swallowed."""
    yield NETGUARD_LOG
    text = Path(NETGUARD_LOG).read_text() if os.path.exists(NETGUARD_LOG) else ""
    if text.strip():
        pytest.fail("the network guard refused traffic that would have left this machine:\n" + text,
                    pytrace=False)


@pytest.fixture(autouse=True)
def _needs_root(request):
    """Tests marked ``root`` skip for other users (fail under CI=true)."""
    if not IS_ROOT and request.node.get_closest_marker("root") is not None:
        missing("needs root (network namespaces, bridges, libvirtd); run the suite as root")


@pytest.fixture
def enos_cmd():
    """The enos CLI as a subprocess argv prefix (the venv's interpreter, this checkout)."""
    return [sys.executable, "-m", "enos"]


@pytest.fixture
def sshd_available():
    """Skip (fail under CI=true) unless an sshd binary is installed."""
    if not (shutil.which("sshd") or Path("/usr/sbin/sshd").exists()):
        missing("sshd not installed (apt-get install openssh-server)")


@pytest.fixture(scope="session", autouse=True)
def local_range_kept_local():
    """Install the policy rules that make the local provider's address range unreachable
    except through live environments' bridges (enos.local.guard), as 'enos up' does: no
    test packet for a 10.2xx address ever leaves the machine, even from a stray process."""
    if not IS_ROOT or not shutil.which("ip"):
        yield
        return
    from enos.local import guard
    guard.ensure_rules()
    assert not guard.missing_rules()
    yield
