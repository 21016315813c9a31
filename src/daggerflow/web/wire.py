"""The internal routes' wire conventions, shared by the server (``web.app``) and the
client that forwards reads to the owning worker (``kafka.remote``)."""

from __future__ import annotations

#: The internal routes set this header on every answer, so that a 404 of the route itself
#: ("no such instance here") is told apart from a 404 of a server without the route.
INTERNAL_HEADER = "x-daggerflow-internal"
MSGPACK = "application/msgpack"
#: The status of the internal instance route on a worker that does not own the instance's
#: partition (any more): the caller should find the new owner, not conclude "no such instance".
MISDIRECTED = 421
