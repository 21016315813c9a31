"""Waiting in a real browser: listeners grouped by topic, oldest first, and the test-message
form that completes one of them (seen live); hidden where the worker does not allow it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from .conftest import Worker, start_worker
from .test_instances_view import create
from .workflows import KITCHEN


@pytest.fixture
def no_test_messages(tmp_path: Path) -> Iterator[Worker]:
    w = start_worker(tmp_path, console_test_messages=False)
    yield w
    w.close()


def test_listeners_by_topic_and_a_test_message_that_completes_one(
    worker: Worker, page: Page, screenshot: Callable[[Page, str], Path]
) -> None:
    for n in range(3):
        create(worker, f"o-{n}")
    page.goto(f"{worker.url}/ui/waiting")
    expect(page.locator(".live-status")).to_have_text("live")
    expect(page.locator("#topic-counts tr[data-topic='kitchen'] td.num")).to_have_text("3")
    group = page.locator(f"section.topic-group[data-topic='{KITCHEN}']")
    rows = group.locator("table.waiting-rows tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.first).to_have_attribute("data-instance", "o-0")
    expect(rows.first).to_contain_text("order_id=o-0")
    # The form is prefilled for the oldest listener; a row's button fills it for that row.
    rows.nth(1).get_by_role("button", name="Use for a test message").click()
    expect(group.get_by_label("Key")).to_have_value("o-1")
    expect(group.get_by_label("Value (JSON)")).to_have_value('{"order_id": "o-1"}')
    screenshot(page, "waiting")

    group.get_by_role("button", name="Send").click()
    expect(page.get_by_role("status").first).to_have_text("Test message sent to kitchen at offset 0.")
    # The listener it matched is gone (live, and the instance went on); the others wait.
    expect(rows).to_have_count(2)
    expect(group.locator("tr[data-instance='o-1']")).to_have_count(0)
    expect(page.locator("#topic-counts tr[data-topic='kitchen'] td.num")).to_have_text("2")
    assert worker.api.get("/api/v1/instances/o-1").json()["status"]["code"] == "COMPLETED"

    # A value that is not JSON is refused with a reason; nothing is sent.
    group.get_by_label("Value (JSON)").fill("{not json")
    group.get_by_role("button", name="Send").click()
    expect(page.get_by_role("alert")).to_contain_text("the value is not JSON")
    expect(rows).to_have_count(2)


def test_the_test_message_form_is_hidden_where_the_worker_does_not_allow_it(
    no_test_messages: Worker, page: Page
) -> None:
    create(no_test_messages, "o-1")
    page.goto(f"{no_test_messages.url}/ui/waiting")
    expect(page.locator("table.waiting-rows tbody tr")).to_have_count(1)
    expect(page.get_by_text("Send a test message")).to_have_count(0)
    expect(page.get_by_role("button", name="Use for a test message")).to_have_count(0)
