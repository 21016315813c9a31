"""``GET /openapi.json`` and the docs page ``/docs`` over a real HTTP server.

The document is valid OpenAPI 3.1 (schemathesis' loader validates it against the 3.1
meta-schema), names every public starlette route with its methods, and derives its schemas
from the structs the handlers use. The docs page and its vendored assets are served from the
package, with their content types and caching headers, and load nothing from elsewhere.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import msgspec
import pytest
import schemathesis
from starlette.routing import Route

from daggerflow import Dagger
from daggerflow.web.app import create_app
from daggerflow.web.docs import ASSETS, static_bytes
from daggerflow.web.schemas import CreateInstanceRequest, ErrorBody, PostMessageRequest


@pytest.fixture
async def document(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.get("/openapi.json")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["cache-control"] == "no-cache"
    result: dict[str, Any] = r.json()
    return result


def test_the_loader_refuses_an_invalid_document() -> None:
    # So that the validation below can fail: a document without info.title is refused.
    broken = schemathesis.openapi.from_dict({"openapi": "3.1.0", "info": {"version": "1"}, "paths": {}})
    with pytest.raises(Exception, match="title"):
        broken.validate()


async def test_document_is_valid_openapi_31(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    schemathesis.openapi.from_dict(document).validate()
    assert "/internal/v1" in document["info"]["description"]  # says the internal routes are left out


async def test_every_public_route_is_documented(web: Dagger, document: dict[str, Any]) -> None:
    app = create_app(web)
    public = [r for r in app.routes if isinstance(r, Route) and not r.path.startswith("/internal/")]
    assert len(public) >= 15
    paths = document["paths"]
    for route in public:
        path = re.sub(r"\{(\w+)(:\w+)?\}", r"{\1}", route.path)
        assert path in paths, path
        methods = {m.lower() for m in route.methods or ()} - {"head"}
        assert methods == set(paths[path]), path
    assert not [p for p in paths if p.startswith("/internal")]
    assert len(paths) == len(public)


async def test_operations_document_errors_parameters_and_security(document: dict[str, Any]) -> None:
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": document["components"]["securitySchemes"]["bearerAuth"]["description"],
    }
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    ops = {(m, p): op for p, item in document["paths"].items() for m, op in item.items()}
    for (_method, path), op in ops.items():
        assert op["operationId"] and op["summary"], path
        responses = op["responses"]
        assert responses["500"]["content"]["application/json"]["schema"] == error_ref, path
        for name in re.findall(r"\{(\w+)\}", path):
            [param] = [p for p in op["parameters"] if p["name"] == name]
            assert param["in"] == "path" and param["required"] is True
            assert "404" in responses, path
    public = {"/service/ready", "/openapi.json", "/docs", "/docs/{asset}"}
    for (method, path), op in ops.items():
        if path in public:
            assert op["security"] == [], path
        elif path == "/metrics":
            assert {} in op["security"]
        else:
            assert op["security"] == [{"bearerAuth": []}], path
            assert "401" in op["responses"], path
        mutating = method in ("post", "patch", "delete")
        assert ("403" in op["responses"]) == mutating, path
        if mutating:
            assert "admin scope" in op["description"], path

    create = ops[("post", "/api/v1/templates/{name}/instances")]
    assert {"201", "400", "401", "403", "404", "409", "413", "422", "500", "503"} <= set(create["responses"])
    assert create["requestBody"]["required"] is False
    stop = ops[("post", "/api/v1/instances/{id}/stop")]
    assert {"404", "409", "503"} <= set(stop["responses"])
    listing = ops[("get", "/api/v1/instances")]
    names = [p["name"] for p in listing["parameters"]]
    assert names == [
        "status", "template", "version", "waiting_on", "correlation", "created_after", "created_before",
        "updated_after", "sort", "limit", "offset", "param.NAME",
    ]
    limit = next(p for p in listing["parameters"] if p["name"] == "limit")
    assert limit["schema"] == {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}
    messages = ops[("get", "/topics/{name}/messages")]
    assert [p["name"] for p in messages["parameters"]] == ["name", "from", "limit"]


async def test_schemas_are_the_handlers_structs(document: dict[str, Any]) -> None:
    _, expected = msgspec.json.schema_components(
        [CreateInstanceRequest, PostMessageRequest, ErrorBody], ref_template="#/components/schemas/{name}"
    )
    schemas = document["components"]["schemas"]
    for name, schema in expected.items():
        assert schemas[name] == schema, name
    create = schemas["CreateInstanceRequest"]
    assert create["additionalProperties"] is False
    assert set(create["properties"]) == {"id", "runtime_parameters", "submit", "partition_key_lookup"}
    assert schemas["ErrorBody"]["required"] == ["error", "status"]


async def test_docs_page_and_its_assets(client: httpx.AsyncClient) -> None:
    r = await client.get("/docs")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.headers["cache-control"] == "no-cache"
    assert "script-src 'self'" in r.headers["content-security-policy"]
    html = r.text
    assert "<div id=\"swagger-ui\">" in html
    # Nothing from a CDN: every script and stylesheet is one of the worker's own assets.
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sorted(refs) == sorted(f"/docs/{name}" for name in ASSETS)
    assert "http" not in html.replace("http-equiv", "")

    for name, (path, content_type) in ASSETS.items():
        r = await client.get(f"/docs/{name}")
        assert r.status_code == 200, name
        assert r.headers["content-type"] == content_type, name
        assert r.content == static_bytes(path), name
        assert r.headers["cache-control"] == "public, max-age=86400"
        assert r.headers["x-content-type-options"] == "nosniff"
        etag = r.headers["etag"]
        again = await client.get(f"/docs/{name}", headers={"if-none-match": etag})
        assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    js = (await client.get("/docs/docs.js")).text
    assert '"/openapi.json"' in js
    assert "validatorUrl: null" in js  # no request to validator.swagger.io

    missing = await client.get("/docs/index.html")
    assert missing.status_code == 404 and missing.json()["status"] == 404
