"""The pure parts of the message explanation (``model.messages``): the verdict's order, dead
letters read back as ``pipeline.ingress`` writes them, values as text or hex, and the
nearest waiting values of a key mismatch."""

from __future__ import annotations

import pytest

from daggerflow.model.console import ListenerItem
from daggerflow.model.messages import (
    PREVIEW_CHARS,
    letter_of,
    message_item,
    near_values,
    parse_letter,
    replay_value,
    verdict,
)
from daggerflow.model.records import Message
from daggerflow.pipeline.ingress import dead_letter

NONE = {"listened": True, "agents": [], "matched": False, "dead_lettered": False, "parse_error": False,
        "unread": False, "duplicate": False, "listeners_on_topic": False}  # fmt: skip


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        ({}, "no_waiter"),
        ({"listeners_on_topic": True}, "key_mismatch"),
        ({"duplicate": True, "listeners_on_topic": True}, "duplicate"),
        ({"unread": True, "duplicate": True}, "unread"),
        ({"parse_error": True, "unread": True}, "parse_error"),
        ({"dead_lettered": True, "parse_error": True}, "dead_lettered"),
        ({"matched": True, "dead_lettered": True}, "matched"),
        ({"listened": False, "agents": ["audit"]}, "agent"),
        ({"listened": False, "agents": ["audit"], "unread": True}, "unread"),
        ({"listened": False, "agents": ["audit"], "dead_lettered": True}, "dead_lettered"),
        ({"listened": False, "parse_error": True}, "not_read"),
    ],
)
def test_the_first_fact_that_holds_decides(facts: dict[str, object], expected: str) -> None:
    assert verdict(**{**NONE, **facts}) == expected  # type: ignore[arg-type]


def msg(value: object, offset: int = 3, partition: int | None = None) -> Message:
    return Message("kitchen", offset, "k", value, {}, 10.0, partition)


def test_a_dead_letter_reads_back_what_ingress_wrote_text_or_bytes() -> None:
    text = dead_letter("dlt", msg('{"order_id": 1}', partition=4), "listener:kitchen", "KeyError: 'x'", "tb",
                       partition=4)  # fmt: skip
    letter = parse_letter(Message("dlt", 7, "k", text.value, {}, 11.0, 0))
    assert letter is not None
    assert (letter.topic, letter.source_partition, letter.source_offset, letter.offset, letter.partition) == (
        "kitchen", 4, 3, 7, 0)  # fmt: skip
    assert (letter.key, letter.value, letter.binary, letter.consumer, letter.error, letter.traceback) == (
        "k", '{"order_id": 1}', False, "listener:kitchen", "KeyError: 'x'", "tb")  # fmt: skip
    assert replay_value(letter) == '{"order_id": 1}'

    raw = b"\xff\x00order"
    binary = parse_letter(Message("dlt", 8, None, dead_letter("dlt", msg(raw), "agent", "E", "").value, {}, 0.0))
    assert binary is not None and binary.binary and replay_value(binary) == raw
    # A value that is UTF-8 bytes is text, not hex.
    assert replay_value(parse_letter(Message("dlt", 9, None, dead_letter("dlt", msg(b"ok"), "a", "E", "").value,
                                             {}, 0.0))) == "ok"  # type: ignore[arg-type]  # fmt: skip


@pytest.mark.parametrize("value", ["not json", "[1, 2]", '{"offset": 1}', '{"topic": "t", "offset": "1"}', b"\xff"])
def test_a_record_that_is_no_dead_letter_is_none(value: object) -> None:
    assert parse_letter(Message("dlt", 0, None, value, {}, 0.0)) is None


def test_the_newest_letter_of_the_message_is_found_by_topic_partition_and_offset() -> None:
    def letter(at: int, source: Message) -> object:
        return parse_letter(Message("dlt", at, None, dead_letter("dlt", source, "c", "E", "",
                                                                 partition=source.partition).value, {}, 0.0))  # fmt: skip

    letters = [letter(0, msg("a", 3, 1)), letter(1, msg("a", 3, 2)), letter(2, msg("a", 3, 1)), letter(3, msg("a", 4, 1))]
    found = letter_of(letters, msg("a", 3, 1))  # type: ignore[arg-type]
    assert found is not None and found.offset == 2
    assert letter_of(letters, msg("a", 5, 1)) is None  # type: ignore[arg-type]


def test_values_are_text_or_hex_and_a_preview_is_cut() -> None:
    long = "x" * (PREVIEW_CHARS + 10)
    item = message_item(msg(long), preview=True)
    assert item.truncated and len(item.value) == PREVIEW_CHARS and item.size == PREVIEW_CHARS + 10
    assert not message_item(msg(long)).truncated
    item = message_item(msg(b"\xff\xfe"))
    assert item.binary and item.value == "fffe" and item.size == 2
    assert message_item(msg("é")).size == 2  # bytes, not characters


def listener(value: str, key: str = "order_id", since: float = 0.0) -> ListenerItem:
    return ListenerItem(instance=f"i-{value}", template_name="t", node="n", task_name="T", topic="kitchen",
                        key=key, value=value, since=since)  # fmt: skip


def test_near_values_are_the_most_alike_under_the_same_keys_first() -> None:
    waiting = [listener("B-2"), listener("order-17"), listener("ORDER-12"), listener("order-12", key="box"),
               listener("order-13", since=5.0), listener("order-12")]  # fmt: skip
    near = near_values("order-12", waiting, {"order_id"}, 3)
    # The same value under the same key is no mismatch; another case comes first, then typos.
    assert [li.value for li in near] == ["ORDER-12", "order-17", "order-13"]
    assert near_values("x", [], {"order_id"}, 3) == []
