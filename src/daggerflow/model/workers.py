"""The workers of an application as the console's Workers view shows them: each worker as it
describes itself, and on Kafka which worker each partition belongs to and whether that worker
answered. Pure: the facade (``console_reads``) gathers the parts."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from msgspec import Struct


class WorkerPart(Struct, kw_only=True):
    """One worker, as it describes itself (its internal route answers with this)."""

    worker: str  #: its id: host, process and (on Kafka) a random suffix
    url: str | None  #: where its REST API answers (None: not served)
    runtime: str  #: "embedded" or "kafka"
    version: str  #: daggerflow's version
    started: float  #: when its engine started
    partitions: list[int]  #: the partitions it processes now (embedded: [0])
    queued: int  #: inputs waiting in its partitions' queues
    jobs_running: int  #: tasks' user code running now
    timers: int  #: timers pending in its partitions
    transitions: int  #: state changes applied since it started
    lag: dict[str, int]  #: messages its readers have yet to read, by topic


class OwnerEntry(Struct, kw_only=True):
    """What the owners topic says of one partition: the worker that activated it last."""

    partition: int
    worker: str | None
    url: str | None
    since: float | None


class PartitionRow(Struct, kw_only=True):
    """One partition in the Workers view."""

    partition: int
    worker: str | None  #: its owner as published (None: no worker has activated it yet)
    url: str | None
    since: float | None  #: when that worker activated it
    state: str  #: see ``PARTITION_STATES``


PARTITION_STATES = {
    "active": "its owner answered and processes it",
    "moving": "its owner answered but does not process it now (being handed over or restored)",
    "no_answer": "its owner did not answer: stopped, unreachable, or its REST API is off",
    "unowned": "no worker has activated it yet",
}


def partition_rows(owners: Iterable[OwnerEntry], workers: Sequence[WorkerPart]) -> list[PartitionRow]:
    """Each partition with its owner and what the owner's own answer says of it."""
    answered = {w.worker: set(w.partitions) for w in workers}
    rows = []
    for o in sorted(owners, key=lambda o: o.partition):
        if o.worker is None:
            state = "unowned"
        elif o.worker not in answered:
            state = "no_answer"
        else:
            state = "active" if o.partition in answered[o.worker] else "moving"
        rows.append(PartitionRow(partition=o.partition, worker=o.worker, url=o.url, since=o.since, state=state))
    return rows


def ordered_workers(workers: Iterable[WorkerPart], this: str) -> list[WorkerPart]:
    """This worker first, then the others by id; one entry per worker."""
    unique = {w.worker: w for w in workers}
    return sorted(unique.values(), key=lambda w: (w.worker != this, w.worker))
