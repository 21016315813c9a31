"""One instance: its header and current tasks, its graph with each node's details, its
runtime parameters and history timeline, live; and the operators' actions on it.

Everything comes from ``GET /api/v1/instances/{id}`` and its ``/history``. The live stream
reads the snapshot every interval and re-renders only when the instance changed (its
``update_count``, ``history_seq`` or ``lastupdated``): between changes a tab costs one read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..client import ApiError
from ..graph import GROUP_KINDS, TERMINAL, Graph, from_snapshot, layout, short_label
from ..session import Session
from ..timeline import WAITING_KINDS, build
from .common import act, console_of, form_text, fragment, live, page, session

#: Who the history names for an action taken from the console.
ACTOR = "console"
#: Entries of the history list per page, and the most entries read for the timeline.
PAGE = 100
HISTORY_CAP = 20_000
#: Kinds that ``complete`` applies to (a task waiting for something outside).
COMPLETABLE = WAITING_KINDS


def api_path(instance_id: str, *rest: str) -> str:
    return "/".join(["/api/v1/instances", quote(instance_id, safe=""), *(quote(r, safe="") for r in rest)])


def page_path(instance_id: str) -> str:
    return "/instances/" + quote(instance_id, safe="")


def _code(status: Any) -> str:
    return str(status.get("code", "")) if isinstance(status, Mapping) else str(status or "")


@dataclass
class History:
    entries: list[dict[str, Any]]
    truncated: bool


async def _history(s: Session, instance_id: str) -> History:
    entries: list[dict[str, Any]] = []
    after = -1
    while True:
        answer = await s.api.get(api_path(instance_id, "history"), {"after": after, "limit": 1000})
        entries.extend(answer["items"])
        after = answer.get("next")
        if after is None:
            return History(entries, False)
        if len(entries) >= HISTORY_CAP:
            return History(entries, True)


def sent_by_node(history: History) -> dict[str, list[dict[str, Any]]]:
    """What each task sent, by node id, from its history (a job's ``done`` entry keeps the
    topic, key, size and the start of the value of each message it sent), newest attempt last."""
    by_node: dict[str, list[dict[str, Any]]] = {}
    for entry in history.entries:
        for message in entry.get("sent") or ():
            by_node.setdefault(str(entry.get("node")), []).append({**message, "time": entry.get("time")})
    return by_node


def _current(snapshot: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The tasks the workflow is at: active leaves, oldest first."""
    tasks: Mapping[str, dict[str, Any]] = snapshot.get("tasks") or {}
    active = [
        t for t in tasks.values()
        if t.get("kind") not in GROUP_KINDS and _code(t.get("status")) in ("SUBMITTED", "EXECUTING")
    ]  # fmt: skip
    return sorted(active, key=lambda t: float(t.get("time_submitted") or t.get("time_created") or 0))


def node_actions(snapshot: Mapping[str, Any], node: Mapping[str, Any]) -> list[str]:
    """Which of skip and complete apply to a node, as far as the snapshot tells: the API
    refuses them (409) for a task whose user code runs at that moment."""
    if _code(snapshot.get("status")) in TERMINAL or node.get("kind") in GROUP_KINDS:
        return []
    if _code(node.get("status")) != "EXECUTING":
        return []
    waiting = node.get("kind") in COMPLETABLE
    retrying = any(str(t.get("purpose", "")).startswith("retry") for t in node.get("timers") or ())
    return (["complete"] if waiting else []) + (["skip"] if waiting or retrying or node.get("error") else [])


def instance_actions(snapshot: Mapping[str, Any]) -> list[str]:
    status = _code(snapshot.get("status"))
    if status == "NOT_STARTED":
        return ["submit", "patch", "stop"]
    if status == "FAILURE":
        return ["retry"]
    if status in TERMINAL:
        return []
    return ["patch", "stop"]


def _duration(snapshot: Mapping[str, Any], now: float) -> float | None:
    created = float(snapshot.get("time_created") or 0)
    if not created:
        return None
    ended = float(snapshot.get("time_completed") or 0)
    return (ended if _code(snapshot.get("status")) in TERMINAL and ended else now) - created


def _entries_page(entries: list[dict[str, Any]], after: int) -> tuple[list[dict[str, Any]], int | None]:
    shown = [e for e in entries if int(e.get("seq", -1)) > after][:PAGE]
    more = bool(shown) and int(shown[-1]["seq"]) < int(entries[-1]["seq"])
    return shown, (int(shown[-1]["seq"]) if more else None)


def context(snapshot: dict[str, Any], history: History, now: float, after: int) -> dict[str, Any]:
    graph: Graph = layout(from_snapshot(snapshot))
    tasks: dict[str, dict[str, Any]] = snapshot.get("tasks") or {}
    order = [b.item.id for b in graph.boxes] + [g.item.id for g in graph.groups]
    entries, next_after = _entries_page(history.entries, after)
    last_seq = int(history.entries[-1]["seq"]) if history.entries else -1
    return {
        "snap": snapshot,
        "iid": str(snapshot["id"]),
        "status": _code(snapshot.get("status")),
        "graph": graph,
        "nodes": [tasks[n] for n in order if n in tasks],
        "names": {nid: str(t.get("task_name", nid)) for nid, t in tasks.items()}
        | {snapshot["id"]: "workflow"},
        "current": _current(snapshot),
        "failures": [t for t in tasks.values() if t.get("error") and t.get("kind") not in GROUP_KINDS],
        "short": short_label,
        "sent": sent_by_node(history),
        "actions": instance_actions(snapshot),
        "node_actions": {nid: node_actions(snapshot, t) for nid, t in tasks.items()},
        "duration": _duration(snapshot, now),
        "timeline": build(snapshot, history.entries, now),
        "entries": entries,
        "after": after,
        "next_after": next_after,
        "latest_after": max(-1, last_seq - PAGE),
        "history_total": len(history.entries),
        "history_truncated": history.truncated,
        "page_path": page_path(str(snapshot["id"])),
    }


def _after(request: Request) -> int:
    raw = request.query_params.get("after", "-1")
    try:
        return max(-1, int(raw))
    except ValueError:
        return -1


def _version(snapshot: Mapping[str, Any]) -> tuple[Any, ...]:
    return snapshot.get("update_count"), snapshot.get("history_seq"), snapshot.get("lastupdated")


async def _read(s: Session, iid: str) -> tuple[dict[str, Any], History]:
    snapshot = await s.api.get(api_path(iid))
    return snapshot, await _history(s, iid)


PARTS = {
    "instance-header": "_instance_header.html",
    "instance-actions": "_instance_actions.html",
    "instance-graph": "_instance_graph.html",
    "instance-params": "_instance_params.html",
    "instance-history": "_instance_history.html",
}


async def instance(request: Request) -> Response:
    s = await session(request)
    iid = request.path_params["id"]
    now = console_of(request).settings.clock()
    values = context(*await _read(s, iid), now, _after(request))
    return await page(request, "instance.html", {**values, "nav": "instances"})


async def instance_live(request: Request) -> Response:
    s = await session(request)
    iid = request.path_params["id"]
    after = _after(request)
    clock = console_of(request).settings.clock
    seen: dict[str, Any] = {"version": None, "parts": {}}

    async def parts() -> dict[str, str]:
        snapshot = await s.api.get(api_path(iid))
        if _version(snapshot) != seen["version"]:
            values = context(snapshot, await _history(s, iid), clock(), after)
            seen["parts"] = {name: fragment(request, t, values, s) for name, t in PARTS.items()}
            seen["version"] = _version(snapshot)
        rendered: dict[str, str] = seen["parts"]
        return dict(rendered)

    return live(request, parts)


def _json_object(form: FormData, name: str, what: str) -> dict[str, Any] | None:
    """A form field holding a JSON object; None when empty; ``ApiError`` 400 naming the problem."""
    text = form_text(form, name)
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ApiError(400, f"{what} is not valid JSON ({exc}): nothing was changed") from exc
    if not isinstance(value, dict):
        raise ApiError(400, f'{what} must be a JSON object such as {{"card": "ok"}}: nothing was changed')
    return value


async def stop(request: Request) -> Response:
    iid = request.path_params["id"]

    async def run(s: Session, form: FormData) -> str:
        await s.api.post(api_path(iid, "stop"))
        return f"Instance {iid} stopped: every task that had not ended is STOPPED."

    return await act(request, run, page_path(iid))


async def submit(request: Request) -> Response:
    iid = request.path_params["id"]

    async def run(s: Session, form: FormData) -> str:
        await s.api.post(api_path(iid, "submit"), params={"actor": ACTOR})
        return f"Instance {iid} submitted: it runs from its first task."

    return await act(request, run, page_path(iid))


async def retry(request: Request) -> Response:
    iid = request.path_params["id"]

    async def run(s: Session, form: FormData) -> str:
        patch = _json_object(form, "patch", "The parameter patch")
        await s.api.post(
            api_path(iid, "retry"), {"runtime_parameters": patch} if patch else None, {"actor": ACTOR}
        )
        changed = f" with {', '.join(sorted(patch))} changed" if patch else ""
        return f"Instance {iid} retried{changed}: its failed tasks run again."

    return await act(request, run, page_path(iid))


async def patch_parameters(request: Request) -> Response:
    iid = request.path_params["id"]

    async def run(s: Session, form: FormData) -> str:
        patch = _json_object(form, "patch", "The parameter patch")
        if not patch:
            raise ApiError(400, "Enter the parameters to change as a JSON object: nothing was changed")
        await s.api.patch(api_path(iid, "parameters"), patch, {"actor": ACTOR})
        return f"Runtime parameters of {iid} changed: {', '.join(sorted(patch))}."

    return await act(request, run, page_path(iid))


def _task_action(verb: str, done: str) -> Any:
    async def handler(request: Request) -> Response:
        iid, node_id = request.path_params["id"], request.path_params["node_id"]

        async def run(s: Session, form: FormData) -> str:
            answer = await s.api.post(api_path(iid, "tasks", node_id, verb), params={"actor": ACTOR})
            name = (answer or {}).get("tasks", {}).get(node_id, {}).get("task_name", node_id)
            return f"Task {name} {done}; the workflow goes on from it."

        return await act(request, run, page_path(iid))

    return handler


ROUTES = [
    Route("/live/instances/{id:path}", instance_live, methods=["GET"]),
    Route("/instances/{id}/stop", stop, methods=["POST"]),
    Route("/instances/{id}/submit", submit, methods=["POST"]),
    Route("/instances/{id}/retry", retry, methods=["POST"]),
    Route("/instances/{id}/parameters", patch_parameters, methods=["POST"]),
    Route("/instances/{id}/tasks/{node_id}/skip", _task_action("skip", "skipped"), methods=["POST"]),
    Route(
        "/instances/{id}/tasks/{node_id}/complete", _task_action("complete", "completed"), methods=["POST"]
    ),
    Route("/instances/{id:path}", instance, methods=["GET"]),
]
