"""Fuzzing every route of a live worker (uvicorn on a free port, a real SQLite file) with
Hypothesis: arbitrary JSON values, wrong types, unknown fields, random bytes, random query
strings and path segments, and wrong methods. Never a 5xx; every public 4xx is a JSON error
body; and afterwards the worker still runs workflows.

The engine runs in its own event loop on a thread, so that the (synchronous) Hypothesis test
drives it over HTTP while it keeps serving.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daggerflow import Dagger
from daggerflow.web.app import create_app

from .test_rest import register_templates

EXAMPLES = 400


class LiveWorker:
    def __init__(self, datadir: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzzed-worker", daemon=True)
        self.engine = Dagger(store=f"sqlite:///{datadir}/fuzz.db", web_port=0)
        register_templates(self.engine)

    def run(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __enter__(self) -> LiveWorker:
        self.thread.start()
        self.run(self.engine.start())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.run(self.engine.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveWorker]:
    with LiveWorker(tmp_path_factory.mktemp("fuzz")) as worker:
        yield worker


@pytest.fixture(scope="module")
def http(live: LiveWorker) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.engine.web_url or "", timeout=20) as client:
        yield client


def routes() -> list[tuple[str, frozenset[str]]]:
    """Every route of the application, with its methods (HEAD aside)."""
    app = create_app(Dagger(web_port=None, store="memory://"))
    out = []
    for route in app.routes:
        path: str = getattr(route, "path")  # noqa: B009 - starlette's BaseRoute does not declare it
        methods = frozenset(getattr(route, "methods", None) or {"GET"}) - {"HEAD"}
        out.append((path, methods))
    return out


ROUTES = routes()
FIELDS = ["id", "runtime_parameters", "submit", "partition_key_lookup", "value", "key", "headers"]
QUERY_NAMES = ["status", "template", "limit", "offset", "from", "statuss", "x", ""]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
# Objects with the real field names (right and wrong types) and unknown ones.
objects = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=10), json_values, max_size=5)
bodies = st.one_of(
    st.none(),
    st.binary(max_size=200),
    json_values.map(msgspec.json.encode),
    objects.map(msgspec.json.encode),
    st.builds(lambda v, k: msgspec.json.encode({"value": v, "key": k}), json_values, st.none() | st.text()),
    st.builds(lambda p: msgspec.json.encode({"runtime_parameters": p}), objects),
)
segments = st.sampled_from(["quick", "orders", "t", "x", "docs.js", "swagger-ui.css"]) | st.text(min_size=1, max_size=12)
queries = st.dictionaries(
    st.sampled_from(QUERY_NAMES) | st.text(max_size=6),
    st.sampled_from(["", "0", "-1", "1", "99999999999999999999", "COMPLETED", "abc"]) | st.text(max_size=8),
    max_size=3,
)
methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"])


def fill(path: str, values: list[str]) -> str:
    parts = []
    for part in path.split("/"):
        if part.startswith("{"):
            parts.append(quote(values.pop() if values else "x", safe=""))
        else:
            parts.append(part)
    return "/".join(parts)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=True,
    database=None,  # derandomized: nothing to replay, and no .hypothesis directory in the tree
)
@given(
    route=st.sampled_from(ROUTES),
    own_method=st.booleans(),
    other_method=methods,
    path_values=st.lists(segments, min_size=2, max_size=2),
    query=queries,
    body=bodies,
    json_type=st.booleans(),
)
def test_fuzzed_requests_never_5xx_and_4xx_are_json(
    http: httpx.Client,
    route: tuple[str, frozenset[str]],
    own_method: bool,
    other_method: str,
    path_values: list[str],
    query: dict[str, str],
    body: bytes | None,
    json_type: bool,
) -> None:
    path, allowed = route
    method = sorted(allowed)[len(path_values[0]) % len(allowed)] if own_method else other_method
    url = fill(path, list(path_values))
    headers = {"content-type": "application/json"} if json_type else {}
    r = http.request(method, url, params=query, content=body, headers=headers)
    assert r.status_code < 500, (method, url, query, body, r.text)
    if 400 <= r.status_code < 500 and not path.startswith("/internal/"):
        # The internal routes answer in the forwarding wire convention (web/wire.py) instead.
        assert r.headers["content-type"].startswith("application/json"), (method, url, r.headers)
        error = r.json()
        assert error["status"] == r.status_code and isinstance(error["error"], str), error


def test_every_route_is_fuzzed() -> None:
    paths = {p for p, _ in ROUTES}
    assert {"/api/v1/templates/{name}/instances", "/topics/{name}/messages", "/openapi.json"} <= paths
    assert any(p.startswith("/internal/") for p in paths)


def test_the_worker_still_serves_after_the_fuzzing(live: LiveWorker, http: httpx.Client) -> None:
    # Runs after the fuzz test (file order) on the same worker.
    assert http.get("/service/ready").json() == {"is_ready": True}
    r = http.post("/api/v1/templates/quick/instances", json={"id": "after-fuzz", "runtime_parameters": {"n": 1}})
    assert r.status_code == 201, r.text
    done = live.run(live.engine.wait_for("after-fuzz", timeout=10))
    assert done.status.code == "COMPLETED" and done.runtime_parameters == {"n": 1, "done": True}
    listing = http.get("/api/v1/instances", params={"limit": 1000})
    assert listing.status_code == 200 and listing.json()["total"] >= 1
