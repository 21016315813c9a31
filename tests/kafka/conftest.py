"""The Kafka tests' broker: tools/kafka/broker's, or KAFKA_BOOTSTRAP_SERVERS.

Without a broker the tests skip, unless DAGGERFLOW_REQUIRE_KAFKA=1 (set by scripts/test,
which starts one): then they fail, so CI never skips them silently.
"""

from __future__ import annotations

import os
import socket

import pytest

BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")


def broker_up(bootstrap: str = BOOTSTRAP) -> bool:
    host, port = bootstrap.split(",")[0].rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def broker() -> str:
    if not broker_up():
        if os.environ.get("DAGGERFLOW_REQUIRE_KAFKA") == "1":
            pytest.fail(f"Kafka broker required but not reachable at {BOOTSTRAP} (tools/kafka/broker start)")
        pytest.skip(f"no Kafka broker at {BOOTSTRAP}; start one with tools/kafka/broker start")
    return BOOTSTRAP
