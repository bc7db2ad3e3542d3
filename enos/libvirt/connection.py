"""libvirt-python, imported lazily (``enos --help`` never loads it), and connections to a
daemon with enos' typed errors."""
from __future__ import annotations

from enos.errors import AuthError, Unavailable


def quiet_libvirt():
    """Return the ``libvirt`` module with its default error handler (which prints every
    error on stderr) replaced by one that says nothing: enos reports errors itself."""
    import libvirt
    libvirt.registerErrorHandler(lambda *_: None, None)
    return libvirt


def error_code(err) -> int:
    """Return the libvirt error code of ``err`` (-1 if it is not a libvirtError)."""
    try:
        return int(err.get_error_code())
    except (AttributeError, TypeError, ValueError):   # pragma: no cover - not a libvirtError
        return -1


def connect(uri: str):
    """Return a new connection to the daemon at ``uri``. Raises AuthError (refused) or
    Unavailable (not reachable), naming the URI."""
    lv = quiet_libvirt()
    try:
        return lv.open(uri)
    except lv.libvirtError as e:
        if error_code(e) == lv.VIR_ERR_AUTH_FAILED:
            raise AuthError(f"libvirt at {uri} refused us: {e}") from None
        raise Unavailable(f"cannot reach libvirt at {uri}: {e} (is libvirtd running? "
                          f"for a remote host, does 'virsh -c {uri} list' work?)") from None
