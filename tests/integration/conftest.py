"""Fixtures shared by the integration tests: the simulated delivery service, and an embedded
worker serving the REST API on a free port with the test templates (``web``, ``client``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest

from daggerflow import Dagger, ManualClock
from daggerflow.demo.services import DeliveryService


@pytest.fixture
def delivery() -> Iterator[DeliveryService]:
    """The simulated delivery service on a free local port (``delivery.url``)."""
    service = DeliveryService()
    service.start()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
async def web(make_engine: Callable[..., Dagger], clock: ManualClock) -> AsyncIterator[Dagger]:
    """An embedded worker with test_rest's templates, its REST API on a free loopback port."""
    from .test_rest import register_templates

    engine = make_engine(web_port=0, clock=clock)
    register_templates(engine)
    async with engine:
        yield engine


@pytest.fixture
async def client(web: Dagger) -> AsyncIterator[httpx.AsyncClient]:
    assert web.web_url is not None and web.web_url.startswith("http://127.0.0.1:")
    assert not web.web_url.endswith(":0")
    async with httpx.AsyncClient(base_url=web.web_url, timeout=10) as c:
        yield c
