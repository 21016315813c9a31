"""Templates: every registered template and version; one template's static graph with the
count of instances per node status on each node, and a form that creates an instance."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ..client import ApiError
from ..graph import from_template, layout, short_label
from ..session import Session, check_csrf, read_form
from .common import form_text, page, session, set_notice, url
from .instance import page_path


def template_path(name: str) -> str:
    return "/templates/" + quote(name, safe="")


async def _templates(s: Session) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = await s.api.get("/api/v1/templates")
    return sorted(items, key=lambda t: (t["name"], not t.get("current"), t["version"]))


async def templates(request: Request) -> Response:
    s = await session(request)
    return await page(request, "templates.html", {"templates": await _templates(s), "nav": "templates"})


async def _counts(s: Session, name: str, version: str | None) -> dict[str, Any] | None:
    """Instances per node status, or None where the worker cannot count them."""
    try:
        answer: dict[str, Any] = await s.api.get(
            f"/api/v1/templates/{quote(name, safe='')}/node-counts", {"version": version}
        )
    except ApiError as exc:
        if exc.status in (404, 405):
            return None
        raise
    return answer


async def _detail_context(s: Session, request: Request, name: str) -> dict[str, Any]:
    versions = [t for t in await _templates(s) if t["name"] == name]
    if not versions:
        raise HTTPException(404, f"There is no template {name!r} on this worker.")
    wanted = request.query_params.get("version")
    chosen = next((v for v in versions if v["version"] == wanted), None) if wanted else None
    chosen = chosen or next((v for v in versions if v.get("current")), versions[0])
    counts = await _counts(s, name, chosen["version"])
    node_counts: Mapping[str, Mapping[str, int]] = (counts or {}).get("nodes", {})
    graph = layout(from_template(chosen["nodes"], node_counts))
    nodes = {n["name"]: n for n in chosen["nodes"]}
    order = [b.item.id for b in graph.boxes] + [g.item.id for g in graph.groups]
    return {
        "name": name,
        "versions": versions,
        "chosen": chosen,
        "graph": graph,
        "nodes": [(nodes[n], dict(node_counts.get(n, {}))) for n in order if n in nodes],
        "counts": counts,
        "short": short_label,
        "template_path": template_path(name),
        "nav": "templates",
    }


async def template(request: Request) -> Response:
    s = await session(request)
    values = await _detail_context(s, request, request.path_params["name"])
    return await page(
        request, "template.html", {**values, "form": {"id": "", "params": "{}", "submit": True}}
    )


def _parameters(text: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ApiError(400, f"The runtime parameters are not valid JSON ({exc}).") from exc
    if not isinstance(value, dict):
        raise ApiError(400, 'The runtime parameters must be a JSON object, such as {"order_id": "o-1"}.')
    return value


async def create_instance(request: Request) -> Response:
    """Create an instance from the form; on success go to its page, else show the form again
    with what was typed and the API's reason."""
    await check_csrf(request)
    s = await session(request)
    name = request.path_params["name"]
    form = await read_form(request)
    typed_id, params, submit = form_text(form, "id"), form_text(form, "params"), form.get("submit") == "on"
    typed = {"id": typed_id, "params": params, "submit": submit}
    try:
        body: dict[str, Any] = {"runtime_parameters": _parameters(params), "submit": submit}
        if typed_id:
            body["id"] = typed_id
        answer = await s.api.post(f"/api/v1/templates/{quote(name, safe='')}/instances", body)
    except ApiError as exc:
        if exc.status in (401, 403) or exc.status >= 500:
            raise
        values = await _detail_context(s, request, name)
        return await page(
            request, "template.html", {**values, "form": typed, "form_error": exc.message}, status=exc.status
        )
    iid = str(answer["id"])
    response = RedirectResponse(url(request, page_path(iid)), status_code=303)
    started = "started" if submit else "created, not submitted (NOT_STARTED)"
    set_notice(request, response, "ok", f"Instance {iid} of {name} {started}.")
    return response


ROUTES = [
    Route("/templates", templates, methods=["GET"]),
    Route("/templates/{name}/instances", create_instance, methods=["POST"]),
    Route("/templates/{name}", template, methods=["GET"]),
]
