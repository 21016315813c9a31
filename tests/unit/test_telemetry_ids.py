"""Derived span ids, the W3C ``traceparent`` text, the seeded id generator, and what the
trace context costs in an instance record."""

from __future__ import annotations

from daggerflow.model.instance import Instance, Node, TraceContext, decode_instance, encode_instance
from daggerflow.telemetry import ids


def test_ids_are_derived_from_what_they_name() -> None:
    assert ids.span_id("i-1", "node", 1) == ids.span_id("i-1", "node", 1)
    assert ids.span_id("i-1", "node", 1) != ids.span_id("i-1", "node", 2)
    assert ids.span_id("i-1", "node", 1) != ids.span_id("i-1node", 1)  # parts are separated
    assert 0 < ids.span_id("x") < 2**64 and 0 < ids.trace_id("x") < 2**128


def test_traceparent_round_trip_and_refusals() -> None:
    text = ids.traceparent(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, 1)
    assert text == "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert ids.parse_traceparent(text) == (0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, 1)
    for bad in (None, "", "00-xyz", f"00-{'0' * 32}-{'1' * 16}-01", f"ff-{'1' * 32}-{'1' * 16}-01",
                f"00-{'g' * 32}-{'1' * 16}-01", f"00-{'1' * 32}-{'0' * 16}-01"):  # fmt: skip
        assert ids.parse_traceparent(bad) is None


class _Random:
    def generate_span_id(self) -> int:
        return 7

    def generate_trace_id(self) -> int:
        return 9


def test_seeded_ids_are_used_once_then_the_wrapped_generator() -> None:
    class Provider:
        id_generator: object = _Random()

    provider = Provider()
    seeded = ids.install(provider)
    assert seeded is not None and provider.id_generator is seeded and ids.install(provider) is seeded
    seeded.next_span, seeded.next_trace = 5, 6
    assert (seeded.generate_span_id(), seeded.generate_trace_id()) == (5, 6)
    assert (seeded.generate_span_id(), seeded.generate_trace_id()) == (7, 9)
    assert ids.install(object()) is None  # not an SDK provider: nothing to seed


def test_the_trace_context_is_small_and_free_when_absent() -> None:
    inst = Instance("i-1", "T", "v", {"i-1": Node("i-1", "T", "root")})
    plain = len(encode_instance(inst))
    inst.trace = TraceContext(bytes(range(16)), ids.span_id("i-1", "instance"), 2**63 + 5, 1, "")
    traced = encode_instance(inst)
    assert len(traced) - plain <= 45
    assert decode_instance(traced).trace == inst.trace
    inst.trace = None
    assert len(encode_instance(inst)) == plain
