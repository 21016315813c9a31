"""Runtime state of one workflow instance: a tree of nodes, stored as one record.

Everything here is plain data (msgspec structs) so it encodes to msgpack for the store and
to JSON for the REST API and the update topic, without pickle and without import paths:
a node names its task class by the name it was registered under (``type_name``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import msgspec


class RetryPolicy(msgspec.Struct, gc=False, frozen=True, omit_defaults=True):
    """How often and how fast a failing task is retried.

    ``max_attempts`` counts the first try: 1 means no retry. The delay before attempt n+1
    is ``initial_interval * backoff_coefficient ** (n - 1)``, capped at ``maximum_interval``.
    Exceptions whose class name (or a base class name) is in ``non_retryable`` fail at once.
    """

    max_attempts: int = 1
    initial_interval: float = 1.0
    backoff_coefficient: float = 2.0
    maximum_interval: float = 60.0
    non_retryable: tuple[str, ...] = ()

    def delay(self, attempt: int) -> float:
        return float(
            min(self.maximum_interval, self.initial_interval * self.backoff_coefficient ** (attempt - 1))
        )


class Node(msgspec.Struct, gc=False, omit_defaults=True):
    """One workflow, process or task of an instance.

    Sequences are tuples so that a node holds no GC-tracked container: with millions of
    cached nodes, tracked lists made every full collection a long pause.
    """

    id: str
    name: str
    kind: str
    parent: str | None = None
    status: str = "NOT_STARTED"
    type_name: str | None = None
    # ``next`` holds the successors; a decision chooses one, other nodes have at most one.
    next: tuple[str, ...] = ()
    # Children: first process of a workflow, first task of a process, members of a parallel.
    children: tuple[str, ...] = ()
    process_name: str | None = None
    time_created: float = 0.0
    time_submitted: float = 0.0
    time_completed: float = 0.0
    # Listener and command settings.
    topic: str | None = None
    correlatable_key: str | None = None
    allow_skip_to: bool = False
    reprocess_on_message: bool = False
    match_only_one: bool = False
    # Trigger, interval and monitor settings (epoch seconds; period in seconds).
    time_to_execute: float | None = None
    time_to_force_complete: float | None = None
    interval_execute_period: float | None = None
    monitored: str | None = None
    # Composite and process settings.
    operator: str | None = None
    max_run_duration: float = 0.0
    monitor: str | None = None
    # Failure handling.
    retry: RetryPolicy | None = None
    continue_on_failure: bool = False
    timeout: float | None = None
    timeout_status: str = "FAILURE"
    attempts: int = 0
    error: str | None = None
    traceback: str | None = None
    # Job bookkeeping: ``job`` names the kind of user call in flight, ``job_seq`` tells a
    # stale result (of a call started before a stop or a skip) from the current one.
    job: str | None = None
    job_seq: int = 0
    inbox: tuple[Any, ...] = ()
    # Ended by a failure elsewhere (cancelled, or never reached): a retry runs it again,
    # unlike a node a decision, a jump or its own task skipped.
    halted_by_failure: bool = False

    def is_terminal(self) -> bool:
        return self.status in _TERMINAL


_TERMINAL = frozenset({"COMPLETED", "FAILURE", "SKIPPED", "STOPPED"})


class Correlation(msgspec.Struct, gc=False, frozen=True, array_like=True):
    """Where a listener is indexed: (topic, key name, value)."""

    topic: str
    key: str
    value: str


class TraceContext(msgspec.Struct, gc=False, frozen=True, array_like=True, omit_defaults=True):
    """The instance's place in a distributed trace (W3C trace context), kept in its record
    so that its spans stay in one trace across restarts and Kafka failovers.

    ``span`` is the id of the ``instance {template}`` span (derived from the instance id, see
    ``telemetry.ids``), ``parent`` the caller's span it continues (0: the instance's span is
    the trace's root). An array of a 16-byte string and small integers: about 30 bytes.
    """

    trace_id: bytes
    span: int
    parent: int = 0
    flags: int = 1
    state: str = ""


class Instance(msgspec.Struct, gc=False, omit_defaults=True):
    """A workflow instance: all its nodes plus the shared runtime parameters."""

    id: str
    template_name: str
    template_version: str
    nodes: dict[str, Node]
    runtime_parameters: dict[str, Any] = msgspec.field(default_factory=dict)
    partition_key_lookup: str | None = None
    update_count: int = 0
    lastupdated: float = 0.0
    # Listener node id -> where it is indexed now; the machine diffs this to move entries.
    correlations: dict[str, Correlation] = msgspec.field(default_factory=dict)
    # Timer key ("<node id>:<purpose>") -> due time; mirrored by the store's timer table.
    timers: dict[str, float] = msgspec.field(default_factory=dict)
    # The history (``model.history``): the next entry's seq, the seq the tail starts at,
    # the first seq of each store row, and the newest entries (a msgpack array's body).
    history_seq: int = 0
    history_flushed: int = 0
    history_rows: tuple[int, ...] = ()
    history_tail: bytes = b""
    # Set at creation when tracing is on (``telemetry``); None costs nothing in the record.
    trace: TraceContext | None = None
    # The runtime parameters the template declared searchable when it was created (its
    # listeners' correlatable keys are searchable too: ``model.query.search_names``).
    search_keys: tuple[str, ...] = ()

    @property
    def root(self) -> Node:
        return self.nodes[self.id]

    @property
    def status(self) -> str:
        return self.nodes[self.id].status

    def is_terminal(self) -> bool:
        return self.nodes[self.id].is_terminal()

    def partition_key(self) -> str:
        """The key this instance is routed and published under."""
        if self.partition_key_lookup:
            value = self.runtime_parameters.get(self.partition_key_lookup)
            if value is not None:
                return str(value)
        return self.id


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Instance)


def encode_instance(instance: Instance) -> bytes:
    return _encoder.encode(instance)


def decode_instance(data: bytes) -> Instance:
    return _decoder.decode(data)


def copy_instance(instance: Instance) -> Instance:
    return _decoder.decode(_encoder.encode(instance))


_any_decoder = msgspec.msgpack.Decoder()


class _ParametersOnly(msgspec.Struct):
    runtime_parameters: dict[str, Any] = msgspec.field(default_factory=dict)


_parameters_decoder = msgspec.msgpack.Decoder(_ParametersOnly)


def decode_parameters(data: bytes) -> dict[str, Any]:
    """Only the runtime parameters of an encoded instance: the rest of the record is
    skipped, not built (a search that reads instances tests these first)."""
    return _parameters_decoder.decode(data).runtime_parameters


def encode_params(params: dict[str, Any]) -> bytes:
    """Runtime parameters as stored inside the instance record (their size is checked)."""
    return _encoder.encode(params)


def decode_params(data: bytes) -> dict[str, Any]:
    result: dict[str, Any] = _any_decoder.decode(data)
    return result


def copy_params(params: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of runtime parameters (plain JSON data), through msgpack."""
    result: dict[str, Any] = _any_decoder.decode(_encoder.encode(params))
    return result


def listing_order(instance: Instance) -> tuple[float, str]:
    """The order of instance lists: the stores' ``ORDER BY created, id``."""
    return instance.root.time_created, instance.id


def merge_listings(
    listings: Iterable[Iterable[Instance]],
    *,
    offset: int,
    limit: int,
    key: Callable[[Instance], Any] = listing_order,
    reverse: bool = False,
) -> list[Instance]:
    """One page of several listings (partitions, workers), as one store holding them all would
    list it (in ``key`` order: ``model.query.sort_key`` gives a query's). An instance listed
    twice (its partition just moved) keeps its most advanced copy."""
    newest: dict[str, Instance] = {}
    for listing in listings:
        for inst in listing:
            known = newest.get(inst.id)
            if known is None or inst.update_count > known.update_count:
                newest[inst.id] = inst
    return sorted(newest.values(), key=key, reverse=reverse)[offset : offset + limit]
