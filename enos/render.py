"""HTML tables for Jupyter (``_repr_html_``) of the experiment layer's objects.

Every value is escaped; every table is a complete, well-formed ``<table>`` (checked by
tests with an HTML parser)."""
from __future__ import annotations

from html import escape
from typing import Iterable, List, Optional, Sequence

#: colours of a result's status cell
OK_COLOUR = "#1a7f37"
FAIL_COLOUR = "#cf222e"
WARN_COLOUR = "#9a6700"

_STYLE = "border-collapse:collapse;font-family:monospace;font-size:12px"
_CELL = "border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top"


def table(headers: Sequence[str], rows: Iterable[Sequence], caption: Optional[str] = None,
          colours: Optional[List[Optional[str]]] = None, css_class: str = "enos") -> str:
    """Return an HTML table: ``headers``, ``rows`` (values are escaped; ``None`` shows as
    empty), an optional ``caption``; ``colours[i]`` colours row i's cells named by the
    caller through a ``(text, colour)`` tuple value."""
    out = [f'<table class="{escape(css_class)}" style="{_STYLE}">']
    if caption:
        out.append(f"<caption style=\"text-align:left\">{escape(str(caption))}</caption>")
    out.append("<thead><tr>" + "".join(f'<th style="{_CELL}">{escape(h)}</th>' for h in headers)
               + "</tr></thead>")
    out.append("<tbody>")
    for row in rows:
        cells = []
        for v in row:
            colour = None
            if isinstance(v, tuple):
                v, colour = v
            style = _CELL + (f";color:{colour};font-weight:bold" if colour else "")
            text = "" if v is None else str(v)
            cells.append(f'<td style="{style}">{escape(text).replace(chr(10), "<br>")}</td>')
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _short(text: str, limit: int = 400) -> str:
    text = text.rstrip("\n")
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} chars)"


def results_table(results, caption: Optional[str] = None) -> str:
    """Return the HTML table of command results: host, roles, status (rc coloured green
    for 0, red otherwise), duration, stdout, stderr."""
    rows = []
    for r in results:
        rows.append([r.host.alias, ", ".join(r.host.roles),
                     (r.status, OK_COLOUR if r.ok else FAIL_COLOUR),
                     f"{r.duration:.3f}s", _short(r.stdout), _short(r.stderr)])
    return table(["host", "roles", "status", "duration", "stdout", "stderr"], rows,
                 caption=caption, css_class="enos-results")


def hosts_table(roles: dict, caption: Optional[str] = None) -> str:
    """Return the HTML table of hosts by role: role, alias, address, user, port, extra."""
    rows = []
    for role, hosts in roles.items():
        for h in hosts:
            extra = ", ".join(f"{k}={v}" for k, v in sorted(h.extra.items())) if h.extra else ""
            rows.append([role, h.alias, h.address, h.user, h.port, extra])
    return table(["role", "alias", "address", "user", "port", "extra"], rows, caption=caption,
                 css_class="enos-hosts")
