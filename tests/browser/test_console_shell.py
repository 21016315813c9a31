"""The console's frame in a real browser: login with a token, the CSRF and read-only rules,
the light/dark switch, and a live page that changes without a reload (schedules)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from .conftest import Worker, start_worker

ADMIN = "admin:console-admin-token-0123456789"
READ = "read:console-read-token-0123456789"


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[Worker]:
    w = start_worker(tmp_path, api_token=[ADMIN, READ])
    yield w
    w.close()


def login(page: Page, worker: Worker, token: str) -> None:
    page.goto(f"{worker.url}/ui/schedules")
    expect(page).to_have_url(f"{worker.url}/ui/login?next=%2Fschedules")
    page.get_by_label("API token").fill(token.split(":", 1)[1])
    page.get_by_role("button", name="Log in").click()


def test_a_worker_with_tokens_asks_for_one_and_keeps_it_in_an_httponly_cookie(
    secured: Worker, page: Page, screenshot: Callable[[Page, str], Path]
) -> None:
    page.goto(f"{secured.url}/ui/schedules")
    expect(page.get_by_role("heading", name="Log in to this worker")).to_be_visible()
    screenshot(page, "login")
    page.get_by_label("API token").fill("not-the-token-at-all-000")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text("That token is not valid for this worker.")

    page.get_by_label("API token").fill(ADMIN.split(":", 1)[1])
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{secured.url}/ui/schedules")
    expect(page.get_by_role("heading", name="Schedules")).to_be_visible()
    expect(page.locator(".scope")).to_have_text("admin")
    [token] = [c for c in page.context.cookies() if c["name"] == "df_token"]
    assert token["httpOnly"] and token["sameSite"] == "Strict" and token["path"] == "/ui/"
    # Page scripts cannot read it.
    assert "df_token" not in page.evaluate("document.cookie")

    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("heading", name="Log in to this worker")).to_be_visible()
    page.goto(f"{secured.url}/ui/schedules")
    expect(page).to_have_url(f"{secured.url}/ui/login?next=%2Fschedules")


def test_a_read_token_sees_no_actions_and_an_action_without_the_csrf_token_is_refused(
    secured: Worker, page: Page
) -> None:
    secured.api.post(
        "/api/v1/schedules",
        json={"name": "nightly", "template": "order_flow", "cron": "0 2 * * *", "runtime_parameters": {"order_id": "n"}},
        headers={"authorization": f"Bearer {ADMIN.split(':', 1)[1]}"},
    ).raise_for_status()
    login(page, secured, READ)
    expect(page.locator("[data-schedule='nightly']")).to_be_visible()
    expect(page.locator(".scope")).to_have_text("read")
    expect(page.get_by_role("button", name="Pause")).to_have_count(0)

    # A forged form (no CSRF token) from the same browser is refused before the API is called.
    answer = page.request.post(f"{secured.url}/ui/schedules/nightly/pause", form={"x": "1"})
    assert answer.status == 403
    assert "did not come from this console" in answer.text()
    # From another origin, even with the cookie's value, it is refused too.
    answer = page.request.post(
        f"{secured.url}/ui/schedules/nightly/pause", headers={"origin": "http://evil.example"}, form={"csrf": "x"}
    )
    assert answer.status == 403


def test_pause_and_resume_a_schedule_with_a_confirmation_and_the_page_follows_live(
    worker: Worker, page: Page, screenshot: Callable[[Page, str], Path]
) -> None:
    page.goto(f"{worker.url}/ui/schedules")
    expect(page.get_by_text("No schedules.")).to_be_visible()
    expect(page.locator(".live-status")).to_have_text("live")
    # Created behind the page's back: the live stream shows it without a reload.
    worker.api.post(
        "/api/v1/schedules",
        json={"name": "nightly", "template": "order_flow", "cron": "0 2 * * *", "runtime_parameters": {"order_id": "n"}},
    ).raise_for_status()
    row = page.locator("[data-schedule='nightly']")
    expect(row).to_have_attribute("data-paused", "false")
    expect(row.locator("ol li")).to_have_count(3)
    screenshot(page, "schedules")

    row.get_by_role("button", name="Pause").click()
    dialog = page.get_by_role("dialog", name="Pause schedule nightly?")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    assert worker.api.get("/api/v1/schedules/nightly").json()["paused"] is False

    row.get_by_role("button", name="Pause").click()
    dialog.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("status")).to_contain_text("Schedule nightly paused")
    expect(row).to_have_attribute("data-paused", "true")
    assert worker.api.get("/api/v1/schedules/nightly").json()["paused"] is True


def test_the_theme_switch_is_kept_across_pages(worker: Worker, page: Page) -> None:
    page.goto(f"{worker.url}/ui/schedules")
    html = page.locator("html")
    expect(html).to_have_attribute("data-theme", "auto")
    page.get_by_role("button", name="Switch between light and dark mode").click()
    expect(html).to_have_attribute("data-theme", "dark")
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(15, 18, 23)"
    page.reload()
    expect(html).to_have_attribute("data-theme", "dark")


def test_an_unknown_page_is_a_404_page_not_a_traceback(worker: Worker, page: Page) -> None:
    answer = page.goto(f"{worker.url}/ui/no-such-view")
    assert answer is not None and answer.status == 404
    expect(page.get_by_role("heading", name="404 · Not Found")).to_be_visible()


def test_every_page_names_its_icon_so_the_browser_asks_for_no_favicon_ico(secured: Worker, page: Page) -> None:
    # (chromium asks for /favicon.ico, a 404 on its console, when a page names no icon; the
    # login page too, before any token)
    page.goto(f"{secured.url}/ui/login")
    href = page.locator("link[rel=icon]").get_attribute("href")
    assert href is not None
    icon = page.request.get(f"{secured.url}{href}")
    assert icon.status == 200 and icon.headers["content-type"].startswith("image/svg+xml")
