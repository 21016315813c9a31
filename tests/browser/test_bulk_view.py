"""Bulk actions in a real browser: from the filtered list, a dry-run count first, then the job's
live progress page and the list of jobs; none of it for a read token."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from .conftest import Worker, start_worker
from .test_console_shell import ADMIN, READ, login
from .test_instances_view import create


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[Worker]:
    w = start_worker(tmp_path, api_token=[ADMIN, READ])
    yield w
    w.close()


def test_stop_all_matching_counts_first_then_runs_a_job_with_live_progress(
    worker: Worker, page: Page, screenshot: Callable[[Page, str], Path]
) -> None:
    for n in range(3):
        create(worker, f"o-{n}")
    create(worker, "keep", express=True)
    page.goto(f"{worker.url}/ui/instances?status=EXECUTING")
    page.get_by_role("link", name="Stop all matching").click()
    # The dry run's count, and nothing stopped yet.
    expect(page.get_by_role("heading", name="Stop all matching instances?")).to_be_visible()
    expect(page.locator("#bulk-matched")).to_have_text("4 instances match now")
    assert worker.api.get("/api/v1/instances", params={"status": "STOPPED"}).json()["total"] == 0
    # Cancel goes back to the same filtered list.
    page.get_by_role("link", name="Cancel").click()
    expect(page).to_have_url(f"{worker.url}/ui/instances?status=EXECUTING")

    page.get_by_role("link", name="Stop all matching").click()
    page.get_by_role("button", name="Stop 4 instances").click()
    expect(page).to_have_url(re.compile(r"/ui/bulk/[0-9a-f]+$"))
    expect(page.get_by_role("status").first).to_have_text("Stop of 4 instances started.")
    expect(page.locator("#bulk-state")).to_have_text("done")
    expect(page.locator("#bulk-done")).to_have_text("4")
    expect(page.locator("#bulk-remaining")).to_have_text("0")
    assert worker.api.get("/api/v1/instances", params={"status": "STOPPED"}).json()["total"] == 4
    expect(page.locator(".live-status")).to_have_text("live")
    screenshot(page, "bulk")

    job = page.url.rsplit("/", 1)[1]
    page.get_by_role("link", name="All bulk jobs").click()
    row = page.locator(f"#bulk-jobs tr[data-job='{job}']")
    expect(row).to_have_attribute("data-state", "done")
    expect(row).to_contain_text("status=EXECUTING")


def test_a_bad_bulk_request_is_said_not_a_traceback(worker: Worker, page: Page) -> None:
    answer = page.goto(f"{worker.url}/ui/bulk/new?action=delete&status=FAILURE")
    assert answer is not None and answer.status == 400
    expect(page.get_by_text("a bulk action is stop or retry, not 'delete'")).to_be_visible()
    answer = page.goto(f"{worker.url}/ui/bulk/new?action=stop&status=NOPE")
    assert answer is not None and answer.status == 400
    expect(page.get_by_text("unknown status 'NOPE'")).to_be_visible()


def test_a_read_token_has_no_bulk_actions(secured: Worker, page: Page) -> None:
    login(page, secured, READ)
    page.goto(f"{secured.url}/ui/instances")
    expect(page.get_by_role("heading", name="Instances")).to_be_visible()
    expect(page.get_by_role("link", name="Stop all matching")).to_have_count(0)
    # Asking for the confirmation directly: the API refuses the dry run for a read token.
    answer = page.goto(f"{secured.url}/ui/bulk/new?action=stop")
    assert answer is not None and answer.status == 403
