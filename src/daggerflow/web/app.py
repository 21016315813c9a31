"""The REST API as a starlette application, assembled from its parts.

Dagger's routes keep their shapes (``/service/ready``, ``/tasks/instances``,
``/tasks/instance/{id}``); ``/api/v1`` adds filtering, paging, creation and stop; the
``/topics`` routes append to and read the embedded topics; ``/openapi.json`` and ``/docs``
describe them all. Every error is JSON (``web.errors``).

- ``schemas``: the request, query and response structs;
- ``inputs``: reading a body under the size limit, decoding bodies and queries strictly;
- ``handlers``: the public routes; ``internal``: the routes workers forward reads to;
- ``routes``: the public route table, from which both the routes and ``openapi`` derive;
- ``docs``: the document and the docs page with its vendored assets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..about import package_version
from . import internal
from .errors import EXCEPTION_HANDLERS
from .openapi import build_document
from .routes import ENDPOINTS, Endpoint, Handler
from .telemetry import RequestTelemetry

if TYPE_CHECKING:
    from .api import EngineAPI


def _route(engine: EngineAPI, endpoint: Endpoint) -> Route:
    by_method = {op.method: op.handler for op in endpoint.operations}
    if "GET" in by_method:
        by_method["HEAD"] = by_method["GET"]

    async def dispatch(request: Request) -> Response:
        return await by_method[request.method](engine, request)

    # One route per path for all its methods, so that a 405 lists them all in Allow.
    return Route(endpoint.path, dispatch, methods=[op.method for op in endpoint.operations])


def _internal(engine: EngineAPI, path: str, handler: Handler) -> Route:
    async def endpoint(request: Request) -> Response:
        return await handler(engine, request)

    return Route(path, endpoint)


def create_app(engine: EngineAPI) -> Starlette:
    routes = [_route(engine, e) for e in ENDPOINTS]
    routes += [
        _internal(engine, "/internal/v1/instances", internal.instances),
        # :path, so that an id with a "/" (sent as %2F, decoded by the server) still matches.
        _internal(engine, "/internal/v1/instances/{id:path}", internal.instance),
        _internal(engine, "/internal/v1/count", internal.count),
        _internal(engine, "/internal/v1/bulk", internal.bulk_jobs),
        _internal(engine, "/internal/v1/bulk/{job}", internal.bulk_shares),
        _internal(engine, "/internal/v1/schedules", internal.schedules),
        _internal(engine, "/internal/v1/versions", internal.versions),
        _internal(engine, "/internal/v1/history/{id:path}", internal.history),
        _internal(engine, "/internal/v1/listeners", internal.listeners),
        _internal(engine, "/internal/v1/timers", internal.timers),
        _internal(engine, "/internal/v1/overview", internal.overview),
        _internal(engine, "/internal/v1/worker", internal.worker),
        _internal(engine, "/internal/v1/node-counts", internal.node_counts),
        _internal(engine, "/internal/v1/seen", internal.seen),
    ]
    app = Starlette(routes=routes, exception_handlers=EXCEPTION_HANDLERS)
    # A trailing slash is a 404, not a redirect to another route's answer (``/instances/``
    # would otherwise answer as the listing where a client asked for an instance).
    app.router.redirect_slashes = False
    app.state.openapi = msgspec.json.encode(build_document(ENDPOINTS, package_version()))
    app.add_middleware(RequestTelemetry, engine=engine)
    return app
