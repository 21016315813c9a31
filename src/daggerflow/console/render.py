"""HTML from the console's Jinja2 templates, with the filters every page uses.

Autoescaping is on for every template and undefined names are errors, so a typo in a
template fails its test instead of rendering an empty cell. Times shown relative to "now"
use the console's clock, so tests can fix it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from .session import CSRF_FIELD, CSRF_STATE, Session

#: Statuses as the API spells them, and the word and CSS class the console shows for each.
STATUS_CLASSES = {
    "NOT_STARTED": "idle",
    "PENDING": "waiting",
    "EXECUTING": "running",
    "COMPLETED": "done",
    "FAILURE": "failed",
    "SKIPPED": "skipped",
    "STOPPED": "stopped",
}


#: What a cell shows for "not yet" or "none" (an en dash).
NOTHING = "\u2013"


def timestamp(value: float | None) -> str:
    """Epoch seconds as UTC, to the second; 0 or None (not yet) as a dash."""
    if not value:
        return NOTHING
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def iso(value: float | None) -> str:
    if not value:
        return ""
    return datetime.fromtimestamp(value, UTC).isoformat(timespec="seconds")


def duration(seconds: float | None) -> str:
    """A length of time a person reads at a glance: ``850 ms``, ``12.4 s``, ``3m 20s``, ``2h 5m``, ``3d 4h``."""
    if seconds is None or math.isnan(seconds):
        return NOTHING
    s = max(0.0, float(seconds))
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 60:
        return f"{s:.1f} s"
    minutes, sec = divmod(int(s), 60)
    if minutes < 60:
        return f"{minutes}m {sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def dom_id(text: str) -> str:
    """An HTML id for any string (an action URL, an instance or node id): ids may not hold
    spaces, and ours may hold anything."""
    return "d" + hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:12]


#: The main navigation: (key a page sets as ``nav``, label, path).
NAV = (
    ("dashboard", "Dashboard", "/"),
    ("instances", "Instances", "/instances"),
    ("waiting", "Waiting", "/waiting"),
    ("messages", "Messages", "/messages"),
    ("templates", "Templates", "/templates"),
    ("schedules", "Schedules", "/schedules"),
    ("bulk", "Bulk jobs", "/bulk"),
)


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def pretty_value(text: Any) -> str:
    """A message value: indented when it is JSON text, else as it is."""
    if isinstance(text, str) and text[:1] in ("{", "["):
        try:
            return pretty_json(json.loads(text))
        except ValueError:
            pass
    return str(text)


def status_class(code: str | None) -> str:
    return STATUS_CLASSES.get(code or "", "idle")


def status_code(status: Any) -> str:
    """A status as the API gives it (``{"code", "value"}``, or a bare string) -> its code."""
    if isinstance(status, Mapping):
        return str(status.get("code", ""))
    return str(status or "")


class Renderer:
    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.env = Environment(
            loader=PackageLoader("daggerflow.console", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(
            ts=timestamp,
            iso=iso,
            duration=duration,
            pretty_json=pretty_json,
            pretty_value=pretty_value,
            status_class=status_class,
            status_code=status_code,
            dom_id=dom_id,
            ago=lambda t: duration(self.clock() - t) if t else NOTHING,
        )
        self.env.globals.update(STATUS_CLASSES=STATUS_CLASSES, CSRF_FIELD=CSRF_FIELD, NAV=NAV)

    def html(self, request: Request, name: str, context: Mapping[str, Any], session: Session | None) -> str:
        root = str(request.scope.get("root_path", ""))

        def url(path: str = "/") -> str:
            return root + path

        values = {
            "request": request,
            "session": session,
            "csrf": session.csrf if session is not None else getattr(request.state, CSRF_STATE, ""),
            "can_act": session.can_act if session is not None else False,
            "url": url,
            "now": self.clock(),
            **context,
        }
        html: str = self.env.get_template(name).render(values)
        return html

    def page(
        self, request: Request, name: str, context: Mapping[str, Any], session: Session | None, status: int = 200
    ) -> HTMLResponse:
        return HTMLResponse(self.html(request, name, context, session), status_code=status)
