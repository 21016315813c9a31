"""The REST reference page, written from the OpenAPI document the worker serves
(``daggerflow.web.openapi.build_document``), so the page cannot drift from the API.

    python tools/docs/rest.py > rest-api.md      # what the docs build does (tools/docs/hooks.py)
"""

from __future__ import annotations

import json
import sys
from typing import Any

TAG_TITLES = {
    "instances": "Instances",
    "templates": "Templates",
    "topics": "Topics",
    "service": "Service",
}


def document() -> dict[str, Any]:
    from daggerflow import __version__
    from daggerflow.web.openapi import build_document
    from daggerflow.web.routes import ENDPOINTS

    return build_document(ENDPOINTS, __version__)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _anchor(name: str) -> str:
    return "schema-" + name.lower()


def type_of(schema: dict[str, Any]) -> str:
    """A schema as a short markdown type: ``string``, ``array of [Instance](#...)``, ``a | null``."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return f"[{name}](#{_anchor(name)})"
    for combo in ("anyOf", "oneOf"):
        if combo in schema:
            return " \\| ".join(type_of(s) for s in schema[combo])
    if "enum" in schema:
        return "one of " + ", ".join(f"`{json.dumps(v)}`" for v in schema["enum"])
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    kind = schema.get("type")
    if isinstance(kind, list):
        return " \\| ".join(kind)
    if kind == "array":
        return "array of " + type_of(schema.get("items", {}))
    if kind == "object" and "additionalProperties" in schema and isinstance(schema["additionalProperties"], dict):
        return "object of " + type_of(schema["additionalProperties"])
    text = kind or "any"
    if "format" in schema:
        text += f" ({schema['format']})"
    return text


def _limits(schema: dict[str, Any]) -> str:
    parts = []
    for key, label in (("minimum", "≥"), ("maximum", "≤"), ("minLength", "length ≥"), ("maxLength", "length ≤")):
        if key in schema:
            parts.append(f"{label} {schema[key]}")
    if "default" in schema:
        parts.append(f"default `{json.dumps(schema['default'])}`")
    return "; ".join(parts)


def render(doc: dict[str, Any]) -> str:
    info = doc["info"]
    out = [
        "# REST API reference",
        "",
        f"Generated at build time from the OpenAPI {doc['openapi']} document of daggerflow {info['version']} "
        "(`daggerflow.web.openapi`), the one a worker serves at `GET /openapi.json` and shows at `GET /docs`. "
        "The same document, as a file: [openapi.json](openapi.json).",
        "",
        info["description"].strip(),
        "",
        "## Overview",
        "",
        "<!-- readme: REST API reference -->",
        "",
    ]
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            by_tag.setdefault(op["tags"][0], []).append((method.upper(), path, op))
    out += ["## Routes", "", "| method | path | summary | token |", "|---|---|---|---|"]
    for tag in by_tag:
        for method, path, op in by_tag[tag]:
            out.append(f"| {method} | [`{path}`](#op-{op['operationId'].lower()}) | {_cell(op['summary'])} | {_token(op)} |")
    out.append("")
    for tag, ops in by_tag.items():
        out += [f"## {TAG_TITLES.get(tag, tag.title())}", ""]
        for method, path, op in ops:
            out += _operation(method, path, op)
    out += ["## Schemas", ""]
    for name, schema in doc["components"]["schemas"].items():
        out += _schema(name, schema)
    return "\n".join(out).rstrip() + "\n"


def _token(op: dict[str, Any]) -> str:
    security = op.get("security")
    if security == []:
        return "none"
    if security == [{}, {"bearerAuth": []}]:
        return "optional"
    return "admin" if "with the admin scope" in op.get("description", "") else "read"


def _operation(method: str, path: str, op: dict[str, Any]) -> list[str]:
    out = [f"### `{method} {path}` {{#op-{op['operationId'].lower()}}}", "", f"**{op['summary']}.**", ""]
    if op.get("description"):
        out += [op["description"], ""]
    params = op.get("parameters") or []
    if params:
        out += ["| parameter | in | type | required | description |", "|---|---|---|---|---|"]
        for p in params:
            schema = p.get("schema", {})
            note = "; ".join(x for x in (p.get("description", ""), _limits(schema)) if x)
            out.append(f"| `{p['name']}` | {p['in']} | {type_of(schema)} | {'yes' if p.get('required') else 'no'} | {_cell(note)} |")
        out.append("")
    body = op.get("requestBody")
    if body:
        for media, content in body["content"].items():
            required = "required" if body.get("required") else "optional"
            out += [f"Request body ({media}, {required}): {type_of(content['schema'])}", ""]
    out += ["| status | meaning | body |", "|---|---|---|"]
    for status, response in op["responses"].items():
        bodies = [f"{type_of(c['schema'])} ({m})" if m != "application/json" else type_of(c["schema"])
                  for m, c in response.get("content", {}).items()]  # fmt: skip
        out.append(f"| {status} | {_cell(response['description'])} | {', '.join(bodies) or '—'} |")
    out.append("")
    return out


def _schema(name: str, schema: dict[str, Any]) -> list[str]:
    out = [f"### {name} {{#{_anchor(name)}}}", ""]
    if schema.get("description"):
        out += [schema["description"].strip(), ""]
    props = schema.get("properties")
    if not props:
        out += [f"Type: {type_of(schema)}", ""]
        return out
    required = set(schema.get("required", ()))
    out += ["| field | type | required | notes |", "|---|---|---|---|"]
    for field, sub in props.items():
        note = "; ".join(x for x in (sub.get("description", ""), _limits(sub)) if x)
        out.append(f"| `{field}` | {type_of(sub)} | {'yes' if field in required else 'no'} | {_cell(note)} |")
    out.append("")
    return out


if __name__ == "__main__":
    sys.stdout.write(render(document()))
