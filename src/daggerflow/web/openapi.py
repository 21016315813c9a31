"""The OpenAPI 3.1 document of the public routes, derived from ``web.routes`` and the msgspec
structs in ``web.schemas`` (``msgspec.json.schema_components``): the same classes the
handlers decode and encode."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from .routes import Endpoint, Operation
from .schemas import ErrorBody, ListQuery

REF = "#/components/schemas/{name}"

ERROR_TEXT = {
    304: "Not modified: the ETag given in If-None-Match is current",
    400: ("A malformed request: bad JSON, a wrong type, an unknown field or query parameter, an "
          "unknown or malformed instance filter (InvalidFilter: the body's filter names it)"),
    401: "No valid API token (only when the worker has API tokens)",
    403: "The token's scope does not allow this route (it needs the admin scope)",
    404: "No such instance, template, docs asset, or route",
    409: "The engine refused the call in its current state",
    413: "The request body, or what it would store, is over a configured size limit",
    422: "Well-formed, but cannot be stored as given (an invalid id, unstorable parameters)",
    500: "An unexpected error in the worker",
    503: "The worker that owns the instance did not answer: try again",
}

_ACCESS_TEXT = {
    "public": "Public: no token is needed, even when the worker has API tokens.",
    "metrics": "Public unless the worker is configured to require a token for it.",
    "read": "When the worker has API tokens, needs one (read-only or admin scope).",
    "admin": "When the worker has API tokens, needs one with the admin scope: this route changes state.",
}

DESCRIPTION = """\
The REST API of a daggerflow worker. Every error is a JSON body `{"error", "status", "type"?}`
(`type`: the engine error's class name). Query strings and bodies are checked strictly: an
unknown field or query parameter, or a value of the wrong type, is a 400 that names it.

Authentication: when the worker has API tokens, send `Authorization: Bearer <token>`.
Each operation says which scope it needs. The `/internal/v1` routes, which workers use to
forward reads to one another, are not part of this contract and are left out.
"""


def _media_types(op: Operation) -> tuple[str, ...]:
    return op.media_type if isinstance(op.media_type, tuple) else (op.media_type,)


def _strip_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter cannot be JSON null: only its non-null branch is documented."""
    branches = schema.get("anyOf")
    if branches is None:
        return schema
    rest = [b for b in branches if b != {"type": "null"}]
    out = {k: v for k, v in schema.items() if k != "anyOf" and not (k == "default" and v is None)}
    if len(rest) == 1:
        out.update(rest[0])
    else:
        out["anyOf"] = rest
    return out


# ``param.NAME=VALUE``: a family of names, which OpenAPI cannot declare; documented as one
# parameter whose name shows the pattern (``web.inputs.decode_list_query`` reads it).
_PARAM_FILTER: dict[str, Any] = {
    "name": "param.NAME",
    "in": "query",
    "required": False,
    "description": (
        "only instances whose runtime parameter NAME equals the value (a string as it is, any other "
        "JSON value as its JSON text: param.count=3, param.vip=true); one per name, several combine with "
        "AND. Indexed for the template's search_attributes and its listeners' correlatable keys; any "
        "other name is checked on each instance the other filters select (README, Search)"
    ),
    "schema": {"type": "string"},
}


def _query_parameters(struct_schema: dict[str, Any]) -> list[dict[str, Any]]:
    required = set(struct_schema.get("required", ()))
    out = []
    for name, prop in struct_schema.get("properties", {}).items():
        schema = _strip_null(dict(prop))
        param: dict[str, Any] = {"name": name, "in": "query", "required": name in required}
        description = schema.pop("description", None) or schema.pop("title", None)
        if description:
            param["description"] = description
        param["schema"] = schema
        out.append(param)
    return out


def _path_parameters(path: str) -> list[dict[str, Any]]:
    names = [part[1:-1] for part in path.split("/") if part.startswith("{") and part.endswith("}")]
    out = []
    for name in names:
        # One path segment: a "/" (even sent as %2F) would match another route.
        schema: dict[str, Any] = {"type": "string", "minLength": 1, "pattern": "^[^/]+$"}
        if name == "asset":
            from .docs import ASSETS

            schema["enum"] = sorted(ASSETS)
        elif name == "offset":  # a topic's offset (the message routes)
            from .schemas import MAX_OFFSET

            schema = {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET}
        out.append({"name": name, "in": "path", "required": True, "schema": schema})
    return out


def _errors(op: Operation, path: str) -> list[int]:
    statuses = set(op.errors) | {500}
    if op.query is not None:
        statuses.add(400)
    if op.body is not None:
        statuses.update((400, 413))
    if "{" in path:
        statuses.add(404)
    if op.access in ("read", "admin", "metrics"):
        statuses.add(401)
    if op.access == "admin":
        statuses.add(403)
    return sorted(statuses)


def _types(endpoints: Iterable[Endpoint]) -> list[Any]:
    """Every type the document names, in a stable order, each once."""
    found: list[Any] = [ErrorBody]
    for endpoint in endpoints:
        for op in endpoint.operations:
            responses = op.response if isinstance(op.response, tuple) else (op.response,)
            for kind in (op.query, op.body, *responses):
                if kind is not None and kind not in found:
                    found.append(kind)
    return found


def build_document(endpoints: tuple[Endpoint, ...], version: str) -> dict[str, Any]:
    types = _types(endpoints)
    schemas, components = msgspec.json.schema_components(types, ref_template=REF)
    schema_of = dict(zip(map(repr, types), schemas, strict=True))
    error_ref = schema_of[repr(ErrorBody)]
    paths: dict[str, Any] = {}
    for endpoint in endpoints:
        item: dict[str, Any] = {}
        for op in endpoint.operations:
            item[op.method.lower()] = _operation(op, endpoint.path, schema_of, components, error_ref)
        paths[endpoint.path] = item
    # The query structs are inlined as parameters, never referenced.
    used = {kind.__name__ for e in endpoints for op in e.operations if (kind := op.query) is not None}
    referenced = msgspec.json.encode(paths)
    for name in used:
        if f'"#/components/schemas/{name}"'.encode() not in referenced:
            components.pop(name, None)
    return {
        "openapi": "3.1.0",
        "info": {"title": "daggerflow REST API", "version": version, "description": DESCRIPTION},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API token of the worker (read-only or admin scope).",
                }
            },
        },
        "tags": [{"name": n} for n in ("instances", "templates", "topics", "service")],
    }


def _operation(
    op: Operation,
    path: str,
    schema_of: dict[str, Any],
    components: dict[str, Any],
    error_ref: dict[str, Any],
) -> dict[str, Any]:
    parameters = _path_parameters(path)
    if op.query is not None:
        parameters += _query_parameters(components[op.query.__name__])
        if issubclass(op.query, ListQuery):
            parameters.append(_PARAM_FILTER)
    description = " ".join(d for d in (op.description, _ACCESS_TEXT[op.access]) if d)
    out: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "description": description,
        "tags": [op.tag],
        "parameters": parameters,
    }
    if op.access == "public":
        out["security"] = []
    elif op.access == "metrics":
        out["security"] = [{}, {"bearerAuth": []}]
    else:
        out["security"] = [{"bearerAuth": []}]
    if op.body is not None:
        out["requestBody"] = {
            "required": op.body_required,
            "content": {"application/json": {"schema": schema_of[repr(op.body)]}},
        }
    content: dict[str, Any]
    if op.response is None:
        content = {media: {"schema": {"type": "string"}} for media in _media_types(op)}
    else:
        alternatives = op.response if isinstance(op.response, tuple) else (op.response,)
        refs = [schema_of[repr(kind)] for kind in alternatives]
        content = {"application/json": {"schema": refs[0] if len(refs) == 1 else {"anyOf": refs}}}
    responses: dict[str, Any] = {str(op.status): {"description": op.summary, "content": content}}
    for status in _errors(op, path):
        if status == 304:
            responses["304"] = {"description": ERROR_TEXT[304]}
        else:
            responses[str(status)] = {
                "description": ERROR_TEXT[status],
                "content": {"application/json": {"schema": error_ref}},
            }
    out["responses"] = responses
    return out
