"""Messages in a real browser: a topic's newest messages (a new one appears live), why each
matched or not (matched, key mismatch with the nearest waiting value, dead-lettered), the search
box's ``topic:offset``, and the dead letters with a replay that completes the instance once
the listener is fixed; a read token sees no replay button."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from daggerflow import Dagger

from .accessibility import check_both_palettes
from .conftest import Worker, start_worker
from .test_console_shell import READ, login
from .test_instances_view import create
from .workflows import KITCHEN, KitchenReady


@pytest.fixture(autouse=True)
def kitchen_fixed() -> Iterator[None]:
    KitchenReady.broken = False
    yield
    KitchenReady.broken = False


def send(worker: Worker, value: Any) -> int:
    r = worker.api.post(f"/topics/{KITCHEN}/messages", json={"value": value})
    r.raise_for_status()
    offset: int = r.json()["offset"]
    return offset


def settle(worker: Worker) -> None:
    """Until the worker has read every message and applied everything."""

    async def idle(engine: Dagger) -> None:
        runtime: Any = engine.runtime
        async with asyncio.timeout(10):
            while not runtime.idle():
                await asyncio.sleep(0.01)

    worker.run(idle)


def listener_done(worker: Worker, iid: str) -> None:
    async def wait(engine: Dagger) -> None:
        await engine.wait_for(iid, lambda i: i.nodes[next(n for n, x in i.nodes.items() if x.kind == "listener")]
                              .status != "EXECUTING", timeout=10)  # fmt: skip

    worker.run(wait)


def test_a_topics_messages_and_why_each_matched_or_not(
    worker: Worker, page: Page, screenshot: Callable[[Page, str], Path]
) -> None:
    create(worker, "o-1")
    create(worker, "o-2")
    matched = send(worker, {"order_id": "o-1"})
    listener_done(worker, "o-1")
    other = send(worker, {"order_id": "o-3"})
    garbled = send(worker, "half a message")
    settle(worker)

    page.goto(f"{worker.url}/ui/messages?topic={KITCHEN}")
    expect(page.locator(".live-status")).to_have_text("live")
    rows = page.locator("#messages tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.first).to_have_attribute("data-offset", str(garbled))
    expect(rows.last).to_contain_text('"order_id":"o-1"')
    screenshot(page, "messages")
    assert check_both_palettes(page) == []
    # A new message appears without a reload.
    newest = send(worker, {"order_id": "o-4"})
    expect(rows).to_have_count(4)
    expect(rows.first).to_have_attribute("data-offset", str(newest))

    page.locator(f"#messages tr[data-offset='{matched}']").get_by_role("link", name="Why?").click()
    expect(page.locator("#verdict")).to_have_attribute("data-verdict", "matched")
    expect(page.locator("#summary")).to_have_text("Delivered to 1 instance under order_id=o-1.")
    expect(page.locator("#matched tbody tr")).to_have_attribute("data-instance", "o-1")
    expect(page.locator("#message-facts")).to_contain_text("KitchenReady")
    screenshot(page, "message")
    assert check_both_palettes(page) == []
    page.locator("#matched").get_by_role("link", name="o-1").click()
    expect(page).to_have_url(f"{worker.url}/ui/instances/o-1")

    page.goto(f"{worker.url}/ui/messages/{KITCHEN}/{other}")
    expect(page.locator("#verdict")).to_have_attribute("data-verdict", "key_mismatch")
    expect(page.locator("#near tbody tr")).to_have_attribute("data-instance", "o-2")
    expect(page.locator("#near")).to_contain_text("order_id=o-2")

    page.goto(f"{worker.url}/ui/messages/{KITCHEN}/{garbled}")
    expect(page.locator("#verdict")).to_have_attribute("data-verdict", "dead_lettered")
    expect(page.locator("#message-error-text")).to_contain_text("JSONDecodeError")
    expect(page.locator("#letter")).to_contain_text(f"{KITCHEN}@{garbled}")

    # The search box takes topic:offset.
    page.get_by_label("Find an instance id, a correlation value or topic:offset").fill(f"{KITCHEN}:{other}")
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{worker.url}/ui/messages/{KITCHEN}/{other}")
    expect(page.locator("#verdict")).to_have_attribute("data-verdict", "key_mismatch")

    # An offset with no message is a clear 404 page, not a traceback.
    page.goto(f"{worker.url}/ui/messages/{KITCHEN}/99")
    expect(page.locator("#message-error")).to_have_text(f"no message at {KITCHEN}@99")


def test_dead_letters_and_a_replay_that_completes_the_instance(
    worker: Worker, page: Page, screenshot: Callable[[Page, str], Path]
) -> None:
    create(worker, "o-7")
    KitchenReady.broken = True
    first = send(worker, {"order_id": "o-7"})
    settle(worker)
    KitchenReady.broken = False  # the fix is deployed

    page.goto(f"{worker.url}/ui/dead-letters")
    expect(page.locator(".live-status")).to_have_text("live")
    row = page.locator("#letters tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_have_attribute("data-source", f"{KITCHEN}@{first}")
    expect(row).to_contain_text("LookupError: kitchen message format not understood")
    expect(page.locator("#letters-total")).to_contain_text("1 in daggerflow-dead-letter")
    screenshot(page, "dead-letters")
    assert check_both_palettes(page) == []

    row.get_by_role("button", name="Replay").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text(f"Replay {KITCHEN}@{first}?")
    dialog.get_by_role("button", name="Replay").click()
    expect(page.get_by_role("status").first).to_have_text(
        f"Dead letter daggerflow-dead-letter@0 replayed to {KITCHEN} at offset {first + 1}."
    )
    listener_done(worker, "o-7")
    snapshot = worker.api.get("/api/v1/instances/o-7").json()
    assert snapshot["status"]["code"] in ("EXECUTING", "COMPLETED", "FAILURE"), snapshot

    page.goto(f"{worker.url}/ui/messages/{KITCHEN}/{first + 1}")
    expect(page.locator("#verdict")).to_have_attribute("data-verdict", "matched")
    expect(page.locator("#message-facts")).to_contain_text("daggerflow-replay-of")
    # The dashboard counts the dead letters.
    page.goto(f"{worker.url}/ui/")
    expect(page.locator("#card-dead .figure")).to_have_text("1")
    page.locator("#card-dead").get_by_role("link", name="dead-lettered messages").click()
    expect(page).to_have_url(f"{worker.url}/ui/dead-letters")


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[Worker]:
    from .test_console_shell import ADMIN

    w = start_worker(tmp_path, api_token=[ADMIN, READ])
    yield w
    w.close()


def test_a_read_token_sees_dead_letters_without_a_replay_button(secured: Worker, page: Page) -> None:
    async def letter(engine: Dagger) -> None:
        await engine.append(KITCHEN, None, "not json")

    secured.run(letter)
    settle(secured)
    login(page, secured, READ)
    page.goto(f"{secured.url}/ui/dead-letters")
    expect(page.locator("#letters tbody tr")).to_have_count(1)
    expect(page.get_by_role("button", name="Replay")).to_have_count(0)
    assert json.loads(page.locator("#letters tbody tr").get_attribute("data-letter") or "null") == 0


def test_older_pages_of_messages_and_dead_letters(worker: Worker, page: Page, monkeypatch: pytest.MonkeyPatch) -> None:
    from daggerflow.console.views import messages

    monkeypatch.setattr(messages, "PAGE", 2)
    for n in range(5):
        send(worker, f"not json {n}")
    settle(worker)
    page.goto(f"{worker.url}/ui/messages?topic={KITCHEN}")
    offsets = page.locator("#messages tbody tr")
    expect(offsets).to_have_count(2)
    for shown in (["4", "3"], ["2", "1"], ["0"]):
        expect(offsets).to_have_count(len(shown))
        assert [offsets.nth(i).get_attribute("data-offset") for i in range(len(shown))] == shown
        if shown != ["0"]:
            page.get_by_role("link", name="Older →").click()
    expect(page.get_by_role("link", name="Older →")).to_have_count(0)
    page.get_by_role("link", name="← Newest").click()
    expect(offsets.first).to_have_attribute("data-offset", "4")

    page.goto(f"{worker.url}/ui/dead-letters")
    letters = page.locator("#letters tbody tr")
    expect(letters).to_have_count(2)
    expect(letters.first).to_have_attribute("data-source", f"{KITCHEN}@4")
    page.get_by_role("link", name="Older →").click()
    expect(page).to_have_url(f"{worker.url}/ui/dead-letters?before=3")
    expect(letters.first).to_have_attribute("data-source", f"{KITCHEN}@2")
