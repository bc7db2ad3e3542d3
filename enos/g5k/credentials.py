"""Grid'5000 API credentials.

Where they come from, first match wins:

1. ``G5K_CREDENTIALS_FILE`` names a YAML file (it must exist and be valid);
2. ``G5K_USERNAME`` and ``G5K_PASSWORD`` environment variables;
3. ``~/.python-grid5000.yaml`` (``username``, ``password``, optional ``uri``, ``verify_ssl``).

The API URL is ``G5K_API_URL`` if set, else the file's ``uri``, else the public API.
A missing, unreadable or incomplete file is an :class:`~enos.errors.AuthError` naming it:
we never fall back to an anonymous client (python-grid5000's ``from_yaml`` does, silently).
The password is kept out of ``repr``/``str`` so it cannot leak into logs or the state.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from enos.errors import AuthError

DEFAULT_API_URL = "https://api.grid5000.fr/stable"
DEFAULT_FILE = "~/.python-grid5000.yaml"


@dataclass(frozen=True)
class Credentials:
    """Login, password (hidden from repr), API URL, TLS verification and where they came from."""

    username: str
    password: str = field(repr=False)
    uri: str = DEFAULT_API_URL
    verify_ssl: Union[bool, str, None] = None
    source: str = ""

    def __str__(self) -> str:
        return f"{self.username} at {self.uri} (from {self.source})"


def _default_file() -> Path:
    return Path(os.path.expanduser(DEFAULT_FILE))


def load_credentials(environ: Optional[dict] = None) -> Credentials:
    """Return the credentials to use (see the module doc for the search order).

    Raises :class:`AuthError` naming the file when it is missing, unreadable, not YAML,
    or lacks ``username``/``password``."""
    env = os.environ if environ is None else environ
    url = env.get("G5K_API_URL") or None
    named = env.get("G5K_CREDENTIALS_FILE")
    if named:
        return _from_file(Path(os.path.expanduser(named)), url, "G5K_CREDENTIALS_FILE")
    if env.get("G5K_USERNAME") and env.get("G5K_PASSWORD"):
        return Credentials(env["G5K_USERNAME"], env["G5K_PASSWORD"], url or DEFAULT_API_URL,
                           _verify(env.get("G5K_VERIFY_SSL")), "G5K_USERNAME/G5K_PASSWORD")
    return _from_file(_default_file(), url, None)


def _verify(value):
    if value is None or isinstance(value, bool):
        return value
    s = str(value).strip()
    if s.lower() in ("false", "no", "0"):
        return False
    if s.lower() in ("true", "yes", "1"):
        return True
    return s


def _from_file(path: Path, url: Optional[str], via: Optional[str]) -> Credentials:
    how = f" (named by {via})" if via else ""
    fix = (f"create {path} with 'username: LOGIN' and 'password: PASSWORD' (mode 600), "
           f"or set G5K_USERNAME and G5K_PASSWORD")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise AuthError(f"Grid'5000 credentials file {path}{how} does not exist: {fix}") from None
    except OSError as e:
        raise AuthError(f"cannot read Grid'5000 credentials file {path}{how}: {e.strerror}") from None
    import yaml
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise AuthError(f"Grid'5000 credentials file {path}{how} is not valid YAML{where}") from None
    if not isinstance(data, dict):
        raise AuthError(f"Grid'5000 credentials file {path}{how} must be a mapping: {fix}")
    user, password = data.get("username"), data.get("password")
    missing = [k for k, v in (("username", user), ("password", password)) if not v]
    if missing:
        raise AuthError(f"Grid'5000 credentials file {path}{how} lacks {' and '.join(missing)}: {fix}")
    return Credentials(str(user), str(password), url or str(data.get("uri") or DEFAULT_API_URL),
                       _verify(data.get("verify_ssl")), str(path))
