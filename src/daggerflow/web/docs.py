"""``/openapi.json`` and the docs page ``/docs``, served from files in the package.

Swagger UI is vendored under ``static/swagger-ui`` (see its README for version and source):
the page works offline and loads nothing from a CDN. The assets are revalidated by ETag; the
page and the document are never cached stale, since they change with the worker's version.
"""

from __future__ import annotations

import functools
import hashlib
from importlib import resources
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from .errors import ApiError

if TYPE_CHECKING:
    from .api import EngineAPI

#: The files ``/docs/{asset}`` serves: name -> (path under static/, content type).
ASSETS: dict[str, tuple[str, str]] = {
    "swagger-ui-bundle.js": ("swagger-ui/swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
    "swagger-ui.css": ("swagger-ui/swagger-ui.css", "text/css; charset=utf-8"),
    "docs.js": ("docs.js", "text/javascript; charset=utf-8"),
}
ASSET_MEDIA_TYPES = ("text/javascript", "text/css")
ASSET_CACHE = "public, max-age=86400"

# Swagger UI sets inline styles and shows data: images; scripts come from this origin only.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'"
)


def static_bytes(path: str) -> bytes:
    return (resources.files("daggerflow.web") / "static" / path).read_bytes()


@functools.cache
def _asset(name: str) -> tuple[bytes, str]:
    data = static_bytes(ASSETS[name][0])
    return data, f'"{hashlib.sha256(data).hexdigest()[:32]}"'


async def openapi_json(engine: EngineAPI, request: Request) -> Response:
    document: bytes = request.app.state.openapi
    return Response(document, media_type="application/json", headers={"Cache-Control": "no-cache"})


async def page(engine: EngineAPI, request: Request) -> Response:
    headers = {"Cache-Control": "no-cache", "Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff"}
    return Response(static_bytes("docs.html"), media_type="text/html; charset=utf-8", headers=headers)


async def asset(engine: EngineAPI, request: Request) -> Response:
    name: str = request.path_params["asset"]
    if name not in ASSETS:
        raise ApiError(f"no docs asset {name!r}; one of {', '.join(ASSETS)}", 404)
    data, etag = _asset(name)
    headers = {"Cache-Control": ASSET_CACHE, "ETag": etag, "X-Content-Type-Options": "nosniff"}
    if etag in {t.strip() for t in request.headers.get("if-none-match", "").split(",")}:
        return Response(status_code=304, headers=headers)
    return Response(data, headers={**headers, "Content-Type": ASSETS[name][1]})
