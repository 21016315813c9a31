"""Every view of the console, in both palettes: labelled controls and readable contrast
(``accessibility``), and the keyboard reaches the main navigation first."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from .accessibility import check_both_palettes
from .conftest import Worker

#: The console's pages that need no particular instance (those are checked in their views' tests).
PAGES = ["/ui/schedules", "/ui/login"]


@pytest.mark.parametrize("path", PAGES)
def test_the_page_has_labels_and_contrast_in_both_palettes(worker: Worker, page: Page, path: str) -> None:
    worker.api.post(
        "/api/v1/schedules", json={"name": "nightly", "template": "order_flow", "cron": "0 2 * * *"}
    ).raise_for_status()
    page.goto(worker.url + path)
    page.wait_for_load_state("networkidle")
    assert check_both_palettes(page) == []


def test_the_keyboard_reaches_the_skip_link_then_the_navigation(worker: Worker, page: Page) -> None:
    page.goto(f"{worker.url}/ui/schedules")
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    expect(page.get_by_role("navigation", name="Main").get_by_role("link").first).to_be_focused()
