"""docs/grafana-dashboard.json is a dashboard of metrics the engine has: every series its
queries name is one the telemetry's registry exposes, and no query groups by an id."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import generate_latest

from daggerflow.telemetry import Metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"


def test_every_query_names_a_metric_the_engine_exposes() -> None:
    metrics = Metrics(lambda: 0.0)
    # One child of each family, so the text holds every sample name a query may use.
    for family in metrics._families:
        child = family.child(*("x" for _ in family.labels))
        child.observe(1.0) if family.kind == "histogram" else child.inc()
    metrics.open_listeners[("i", "n")] = (("t", "task", "topic"), 0.0)
    exposed = set(re.findall(r"^(daggerflow_\w+?)(?:\{| )", generate_latest(metrics.registry).decode(), re.M))
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", ())]
    assert len(queries) >= 20
    for query in queries:
        for name in re.findall(r"daggerflow_\w+", query):
            assert name in exposed, (name, query)
        assert not re.search(r"by \([^)]*\b(id|instance_id|order_id|offset)\b", query), query
