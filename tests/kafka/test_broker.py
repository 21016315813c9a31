"""The development/CI Kafka broker (tools/kafka/broker) works: topics, produce/consume,
transactions with read_committed, consumer groups. The Kafka runtime builds on it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")


def _broker_up() -> bool:
    host, port = BOOTSTRAP.split(",")[0].rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def broker() -> str:
    if not _broker_up():
        if os.environ.get("DAGGERFLOW_REQUIRE_KAFKA") == "1":
            pytest.fail(f"Kafka broker required but not reachable at {BOOTSTRAP} (tools/kafka/broker start)")
        pytest.skip(f"no Kafka broker at {BOOTSTRAP}; start one with tools/kafka/broker start")
    return BOOTSTRAP


def test_broker_smoke(broker: str) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools/kafka/smoke_test.py"), broker],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "transaction" in result.stdout.lower()
