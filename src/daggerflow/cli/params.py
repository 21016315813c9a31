"""Runtime parameters as the client commands take them: ``--params JSON`` (an object) and
repeated ``--param NAME=VALUE`` on top of it."""

from __future__ import annotations

import json
from typing import Any

import click


def json_object(text: str, hint: str) -> dict[str, Any]:
    """``text`` decoded as a JSON object; a usage error naming the option ``hint`` if not."""
    try:
        decoded = json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint=hint) from exc
    if not isinstance(decoded, dict):
        raise click.BadParameter("must be a JSON object", param_hint=hint)
    return decoded


def runtime_parameters(params_json: str | None, pairs: tuple[str, ...], *, json_values: bool) -> dict[str, Any]:
    """The object of ``--params`` with each ``--param NAME=VALUE`` set on it. ``json_values``:
    a VALUE that reads as JSON is that value (``3``, ``true``), else the text; otherwise every
    VALUE is a string."""
    params = json_object(params_json, "--params") if params_json else {}
    for item in pairs:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r}: expected NAME=VALUE", param_hint="--param")
        if json_values:
            try:
                params[name] = json.loads(text)
            except ValueError:
                params[name] = text  # not JSON: the text itself
        else:
            params[name] = text
    return params
