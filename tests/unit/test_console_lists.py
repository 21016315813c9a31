"""Pure parts of the console's list views: the dashboard's matrix and rates, the search box's
topic:offset reading, the instance list's query string."""

from __future__ import annotations

from starlette.datastructures import QueryParams

from daggerflow.console.views.dashboard import matrix, rates
from daggerflow.console.views.instances import read_listing
from daggerflow.console.views.search import message_ref


def sample(at: float, created: int, completed: int, failed: int = 0) -> dict[str, object]:
    return {"at": at, "throughput": {"created": created, "completed": completed, "failed": failed, "transitions": 0}}


def test_rates_need_two_samples_and_forward_counters() -> None:
    assert rates(None, sample(10, 5, 0)) is None
    assert rates(sample(10, 5, 1), sample(12, 9, 5, 2)) == {"created": 2.0, "completed": 2.0, "failed": 1.0}
    # A worker restarted (counters began again) or the clock did not move: no rate, not a negative one.
    assert rates(sample(10, 5, 1), sample(12, 1, 5)) is None
    assert rates(sample(10, 5, 1), sample(10, 6, 1)) is None


def test_matrix_orders_statuses_and_sums() -> None:
    m = matrix([
        {"template": "b", "status": "COMPLETED", "count": 3}, {"template": "a", "status": "FAILURE", "count": 1},
        {"template": "a", "status": "EXECUTING", "count": 2}, {"template": "b", "status": "STOPPED", "count": 0},
    ])  # fmt: skip
    assert m.templates == ["a", "b"]
    assert m.statuses == ["EXECUTING", "COMPLETED", "FAILURE"]
    assert m.by_template == {"a": 3, "b": 3} and m.by_status["FAILURE"] == 1 and m.total == 6


def test_message_ref_reads_numbers_from_the_right() -> None:
    assert message_ref("kitchen:3") == ("kitchen", None, 3)
    assert message_ref("kitchen:0:12") == ("kitchen", 0, 12)
    assert message_ref("ns:topic:7") == ("ns:topic", None, 7)
    assert message_ref("order-17") is None and message_ref(":3") is None and message_ref("a:b") is None


def test_the_listing_query_keeps_filters_and_params_and_drops_defaults() -> None:
    listing = read_listing(QueryParams("status=FAILURE&param.order_id=o%201&template=&offset=50"), 100.0)
    assert listing.api_filters() == [("status", "FAILURE"), ("param.order_id", "o 1")]
    assert listing.query() == "status=FAILURE&param.order_id=o+1&offset=50"
    assert listing.query(offset=None) == "status=FAILURE&param.order_id=o+1"
    assert read_listing(QueryParams("limit=5000"), 0.0).error == "limit must be between 1 and 1000"
