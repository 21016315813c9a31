"""An instance's history as a timeline: a bar per task over the instance's lifetime, that
tells waiting apart from executing.

Pure: from the snapshot and the history entries (``GET /api/v1/instances/{id}/history``) to
segments in SVG coordinates. A task is *waiting* while it is active but no user code of it
runs: a listener or sensor waiting for its message, a trigger or interval task waiting for
its time, a task waiting for its next retry (an entry with an error that left it
EXECUTING, until the next entry about it). Otherwise an active task is *executing*.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .graph import GROUP_KINDS, TERMINAL, short_label

#: Kinds whose active time is spent waiting for something outside (a message, a time).
WAITING_KINDS = frozenset({"listener", "sensor", "trigger", "interval"})
ACTIVE = frozenset({"SUBMITTED", "EXECUTING"})

LABEL_W = 210
PLOT_W = 780
ROW_H = 22
BAR_H = 12
AXIS_H = 26
MIN_BAR = 3
END_W = 120  # room for the end mark ("✓ completed") right of the plot


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    state: str  # "waiting" | "executing"
    x: int
    w: int

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Row:
    id: str
    name: str
    label: str
    kind: str
    status: str
    y: int
    segments: tuple[Segment, ...]
    #: Where the task ended (x), if it did.
    end_x: int | None


@dataclass(frozen=True)
class Tick:
    x: int
    offset: float  # seconds since the start


@dataclass(frozen=True)
class Timeline:
    start: float
    end: float
    rows: tuple[Row, ...]
    ticks: tuple[Tick, ...]
    width: int
    height: int
    label_w: int = LABEL_W
    axis_y: int = 0


def _code(status: Any) -> str:
    if isinstance(status, Mapping):
        return str(status.get("code", ""))
    return str(status or "")


def _spans(
    node_id: str, kind: str, entries: Sequence[Mapping[str, Any]], created: float
) -> tuple[list[tuple[float, float | None, str]], float | None]:
    """(start, end or None while open, state) spans of one task, and when it ended."""
    spans: list[tuple[float, float | None, str]] = []
    state: str | None = None
    since = created
    ended: float | None = None
    base = "waiting" if kind in WAITING_KINDS else "executing"

    def switch(to: str | None, at: float) -> None:
        nonlocal state, since
        if state is not None and state != to:
            spans.append((since, at, state))
        if state != to:
            since = at
        state = to

    for entry in entries:
        at = float(entry.get("time") or 0)
        mine = [c for c in entry.get("changes") or () if c.get("node") == node_id]
        for change in mine:
            to = str(change.get("to", ""))
            if to in ACTIVE:
                switch(base, at)
                ended = None
            else:
                switch(None, at)
                ended = at if to in TERMINAL else None
        if entry.get("node") == node_id and not mine and state is not None:
            # An outcome that left it active: a failed attempt waiting for its retry, or the
            # timer or message that ends that wait.
            switch("waiting" if entry.get("error") else base, at)
    if state is not None:
        spans.append((since, None, state))
    return spans, ended


def build(snapshot: Mapping[str, Any], entries: Sequence[Mapping[str, Any]], now: float) -> Timeline:
    start = float(snapshot.get("time_created") or 0) or min(
        (float(e.get("time") or 0) for e in entries), default=now
    )
    completed = float(snapshot.get("time_completed") or 0)
    done = _code(snapshot.get("status")) in TERMINAL and completed > 0
    end = completed if done else max(now, float(snapshot.get("lastupdated") or 0))
    span = max(end - start, 1e-3)

    def x_of(t: float) -> int:
        return LABEL_W + round(min(max(t - start, 0.0), span) / span * PLOT_W)

    tasks: Mapping[str, Mapping[str, Any]] = snapshot.get("tasks") or {}
    rows: list[tuple[float, int, Row]] = []
    for order, (nid, node) in enumerate(tasks.items()):
        kind = str(node.get("kind", ""))
        if kind in GROUP_KINDS:
            continue
        spans, ended = _spans(nid, kind, entries, start)
        status = _code(node.get("status"))
        if not spans and ended is None:
            continue
        segments = []
        for s0, s1, state in spans:
            s1 = end if s1 is None else s1
            x0, x1 = x_of(s0), x_of(s1)
            segments.append(Segment(s0, s1, state, x0, max(MIN_BAR, x1 - x0)))
        first = spans[0][0] if spans else (ended or end)
        name = str(node.get("task_name", nid))
        rows.append(
            (first, order, Row(nid, name, short_label(name, 28), kind, status, 0, tuple(segments),
                               x_of(ended) if ended is not None else None))
        )  # fmt: skip
    rows.sort(key=lambda r: (r[0], r[1]))
    placed = tuple(
        Row(r.id, r.name, r.label, r.kind, r.status, AXIS_H + i * ROW_H, r.segments, r.end_x)
        for i, (_, _, r) in enumerate(rows)
    )
    ticks = tuple(Tick(LABEL_W + round(PLOT_W * f / 4), span * f / 4) for f in range(5))
    return Timeline(
        start, end, placed, ticks, LABEL_W + PLOT_W + END_W, AXIS_H + len(placed) * ROW_H + 6, axis_y=AXIS_H - 8
    )
