"""What an instance id may be: one rule, used by the facade for both runtimes.

An id is a non-empty string of at most ``MAX_ID_BYTES`` bytes in UTF-8 (the bound is on
bytes because ids are keys of the store, of Kafka records and of URLs, which all count
bytes). Its characters are printable (``str.isprintable``: no control, format, surrogate or
separator character other than the space; they corrupt logs and terminals, hide in listings,
and HTTP clients refuse or rewrite them in URLs), and it holds no ``/``, and it is not ``.`` or ``..``: the REST routes
address an instance as one path segment (``/api/v1/instances/{id}``), and clients and
proxies normalise ``.``/``..`` segments away, so such an id could be created but never
fetched or stopped. Integers and UUIDs are accepted and become their text (Dagger users
pass both: its README creates instances with ``uuid.uuid1()``); bools are refused (``True``
would silently become ``"True"``), and so is anything else.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

MAX_ID_BYTES = 255

ID_RULE = (
    f"an instance id is a string (or an integer or UUID) of 1 to {MAX_ID_BYTES} bytes in UTF-8, of printable "
    "characters other than '/', and not '.' or '..'"
)


def id_problem(value: Any) -> str | None:
    """Why ``value`` cannot be an instance id, or None. Ints and UUIDs count as their text."""
    if isinstance(value, bool) or not isinstance(value, (str, int, UUID)):
        return f"got a {type(value).__name__}"
    text = str(value)
    if not text:
        return "it is empty"
    if len(text) * 4 > MAX_ID_BYTES:  # (UTF-8 takes at most 4 bytes a character)
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > MAX_ID_BYTES:
            return f"it is {size} bytes long"
    if not text.isprintable():
        bad = next(ch for ch in text if not ch.isprintable())
        return f"it contains the non-printable character {bad!r} (U+{ord(bad):04X})"
    if "/" in text:
        return "it contains '/'"
    if text in (".", ".."):
        return f"{text!r} is a relative path segment in URLs"
    return None


def normalise_id(value: Any) -> str | None:
    """The id as stored (ints as text), or None when it breaks the rule."""
    return None if id_problem(value) is not None else str(value)
