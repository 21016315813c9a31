"""Fixtures shared by the pizza demo and CLI tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

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
