"""The console's pure parts: how times read, what a live stream sends (only what changed),
where a login may send the browser, and which query parameters reach the API."""

from __future__ import annotations

import asyncio

import pytest

from daggerflow.console.client import ApiError, _clean
from daggerflow.console.live import HEARTBEAT, changes, event
from daggerflow.console.render import dom_id, duration, status_class, status_code, timestamp
from daggerflow.console.views.login import _next


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.25, "250 ms"), (12.44, "12.4 s"), (200, "3m 20s"), (7500, "2h 05m"), (3 * 86400 + 4 * 3600, "3d 4h"),
     (None, "\u2013"), (-5, "0 ms")],
)  # fmt: skip
def test_durations_read_at_a_glance(seconds: float | None, text: str) -> None:
    assert duration(seconds) == text


def test_times_are_utc_and_not_yet_is_a_dash() -> None:
    assert timestamp(0) == "\u2013"
    assert timestamp(1_700_000_000) == "2023-11-14 22:13:20Z"


def test_statuses_map_to_a_class_and_an_unknown_one_to_idle() -> None:
    assert status_class("FAILURE") == "failed" and status_class("EXECUTING") == "running"
    assert status_class("SOMETHING_NEW") == "idle"
    assert status_code({"code": "COMPLETED", "value": "COMPLETED"}) == "COMPLETED"


def test_dom_ids_are_stable_and_have_no_spaces() -> None:
    assert dom_id("/ui/x y") == dom_id("/ui/x y") != dom_id("/ui/x z")
    assert " " not in dom_id("a b") and dom_id("a b")[0].isalpha()


def test_an_event_with_several_lines_becomes_several_data_lines() -> None:
    assert event("rows", "<tr>\n<td>1</td>\n</tr>") == "event: rows\ndata: <tr>\ndata: <td>1</td>\ndata: </tr>\n\n"
    assert event("empty", "") == "event: empty\ndata: \n\n"


async def test_a_live_stream_sends_a_part_only_when_it_changed_and_ends_when_closing() -> None:
    values = iter(["a", "a", "b", "b"])
    closing = asyncio.Event()
    calls = 0

    async def parts() -> dict[str, str]:
        nonlocal calls
        calls += 1
        try:
            return {"rows": next(values)}
        except StopIteration:
            closing.set()
            return {"rows": "b"}

    sent = [e async for e in changes(parts, 0.001, closing)]
    assert sent == [event("rows", "a"), event("live-status", "live"), event("rows", "b")]
    assert calls == 5


async def test_an_api_failure_marks_the_page_not_live_and_the_next_answer_live_again() -> None:
    closing = asyncio.Event()
    answers: list[dict[str, str] | ApiError] = [{"rows": "a"}, ApiError(502, "the worker did not answer"), {"rows": "a"}]

    async def parts() -> dict[str, str]:
        answer = answers.pop(0)
        if not answers:
            closing.set()
        if isinstance(answer, ApiError):
            raise answer
        return answer

    sent = [e async for e in changes(parts, 0.001, closing)]
    assert sent == [
        event("rows", "a"),
        event("live-status", "live"),
        event("live-status", "not live: the worker did not answer"),
        event("live-status", "live"),
    ]
    assert HEARTBEAT >= 10  # a comment line keeps idle streams open, but not chattily


@pytest.mark.parametrize(
    ("raw", "target"),
    [("/instances?status=FAILURE", "/instances?status=FAILURE"), ("//evil.example/x", "/"),
     ("https://evil.example", "/"), ("/\\evil", "/"), (None, "/"), ("", "/")],
)  # fmt: skip
def test_a_login_only_returns_to_a_page_of_this_console(raw: str | None, target: str) -> None:
    assert _next(raw) == target


def test_empty_filters_do_not_reach_the_api_and_booleans_are_spelled_as_it_reads_them() -> None:
    assert _clean({"status": "", "template": None, "limit": 50, "dry_run": True}) == [("limit", "50"), ("dry_run", "true")]
    assert _clean([("param.a", "1"), ("param.a", "")]) == [("param.a", "1")]
    assert _clean(None) is None
