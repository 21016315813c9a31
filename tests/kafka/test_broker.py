"""The development/CI Kafka broker (tools/kafka/broker) works: topics, produce/consume,
transactions with read_committed, consumer groups. The Kafka runtime builds on it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]



def test_broker_smoke(broker: str) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools/kafka/smoke_test.py"), broker],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "transaction" in result.stdout.lower()
