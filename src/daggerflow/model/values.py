"""What may be stored as a runtime parameter: plain JSON that reads back as written.

One check (``params_problem``) serves every way parameters arrive: the REST API and the
Python API at creation, and the changes a task makes to them. Refused, with a message that
names the parameter: a non-string key; a value msgspec would encode but not decode back to
the same thing (bytes, datetime, set, ...); NaN and infinities (JSON has no spelling for
them); integers outside the signed 64-bit range (msgpack cannot hold some of them, and
JSON readers of the update topic lose the rest); nesting deeper than ``MAX_DEPTH``.
"""

from __future__ import annotations

import math
from typing import Any

#: Lists and objects nested inside one parameter value, at most.
MAX_DEPTH = 64
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def value_problem(value: Any, path: str, depth: int = 0) -> str | None:
    """Why ``value`` is not storable plain JSON, or None."""
    if value is None or isinstance(value, (str, bool)):
        return None
    if isinstance(value, int):
        if INT64_MIN <= value <= INT64_MAX:
            return None
        return f"{path} is an integer outside the 64-bit range (-2**63 .. 2**63-1)"
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path} is {value!r}, which JSON cannot carry"
    if isinstance(value, (list, tuple, dict)) and depth >= MAX_DEPTH:
        return f"{path} is nested more than {MAX_DEPTH} levels deep"
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            problem = value_problem(item, f"{path}[{i}]", depth + 1)
            if problem:
                return problem
        return None
    if isinstance(value, dict):
        for k, item in value.items():
            if not isinstance(k, str):
                return f"{path} has a non-string key {k!r}"
            problem = value_problem(item, f"{path}[{k!r}]", depth + 1)
            if problem:
                return problem
        return None
    return f"{path} is a {type(value).__name__}"


def params_problem(params: Any, what: str = "runtime parameter") -> str | None:
    """None if ``params`` is a dict of str keys to storable values, else a message naming
    the first bad parameter."""
    if not isinstance(params, dict):
        return f"{what}s must be a dict, got a {type(params).__name__}"
    for key, value in params.items():
        if not isinstance(key, str):
            return f"{what} names must be strings, got {key!r}"
        problem = value_problem(value, key)
        if problem is not None:
            return f"{what} {key!r} cannot be stored: {problem}"
    return None
