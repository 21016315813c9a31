"""Bulk actions inside the pipeline: a partition starts its share of a job
(``BulkStart``) and works through it a few instances per batch (``BulkStep``).

Starting a share stores the ids that match the job's filter now (``Store.query_instances``)
with the share, in the batch's commit. A step takes the next ids of every active share (at
most the job's ``batch`` each), applies the action to each instance through the machine
like any event (``Stop``/``Retry``, actor ``bulk:<job>``), and deletes the ids it acted on
and advances the share **in the same commit**: after a crash (or, on Kafka, a failover
restored from the changelog) a share resumes exactly after the last committed step, so an
instance is acted on at most once per job, and every matched one once.

A step is one item among the batch's other inputs, queued again after the commit while a
share has work left, so normal work is interleaved with it and never waits for a job.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import msgspec

from ..errors import InvalidInput
from ..machine.events import Event, Retry, Stop
from ..machine.repair import refusal
from ..model.bulk import BulkShare
from ..model.instance import Instance
from ..model.query import query_from_filter
from ..store.base import Store, WriteBatch
from .items import BulkStart

log = logging.getLogger(__name__)

#: The most instances a share may match: its ids are written in one commit.
MAX_MATCHED = 1_000_000


class Applier(Protocol):
    """What a bulk item needs of the batch it is applied in (``batch.BatchApplier``)."""

    batch: WriteBatch
    now: float

    @property
    def store(self) -> Store: ...

    def load(self, iid: str) -> Instance | None: ...

    def owns_instance(self, iid: str) -> bool: ...

    def apply_event(self, iid: str, event: Event) -> bool: ...

    def bulk_done(self, result: tuple[Any, Any] | None, more: bool) -> None:
        """Report the item's result (future, value) and whether shares have work left."""


def start(applier: Applier, item: BulkStart) -> None:
    spec = item.spec
    store = applier.store
    existing = applier.batch.bulk_shares.get(spec.id) or store.bulk_share(spec.id)
    if existing is not None:  # sent again (a retried send, a second client): one share per job
        applier.bulk_done(None if item.future is None else (item.future, existing), existing.finished is None)
        return
    try:
        # Oldest first, whatever order the filter lists in: a job works through what was there.
        query = msgspec.structs.replace(query_from_filter(spec.filter), sort="created")
    except InvalidInput as exc:  # checked by the caller; a record from elsewhere may not be
        log.error("bulk job %s: its filter is refused: %s", spec.id, exc)
        query = None
    ids: list[str] = []
    if query is not None:
        ids = [i.id for i in store.query_instances(query, limit=MAX_MATCHED, offset=0) if applier.owns_instance(i.id)]
    share = BulkShare(spec=spec, partition=item.partition, matched=len(ids),
                      finished=None if ids else applier.now)  # fmt: skip
    if query is None:
        share = msgspec.structs.replace(share, errors=("the job's filter is refused",))
    applier.batch.bulk_shares[spec.id] = share
    applier.batch.bulk_items_put.extend((spec.id, seq, iid) for seq, iid in enumerate(ids))
    applier.bulk_done(None if item.future is None else (item.future, share), bool(ids))


def step(applier: Applier) -> None:
    store = applier.store
    more = False
    for share in store.bulk_active():
        if share.spec.id in applier.batch.bulk_shares:
            continue  # stepped already in this batch (a second step item)
        items = store.bulk_items(share.spec.id, max(1, share.spec.batch))
        done = 0
        errors: list[str] = []
        for seq, iid in items:
            problem = act(applier, share, iid)
            if problem is None:
                done += 1
            else:
                errors.append(problem)
            applier.batch.bulk_items_del.append((share.spec.id, seq))
        advanced = share.advanced(done, len(errors), errors, applier.now)
        if not items and advanced.finished is None:
            # No ids left but the counts disagree (cannot happen unless rows were lost):
            # the share ends rather than stepping forever.
            advanced = msgspec.structs.replace(advanced, finished=applier.now)
        applier.batch.bulk_shares[share.spec.id] = advanced
        more = more or advanced.finished is None
    applier.bulk_done(None, more)


def act(applier: Applier, share: BulkShare, iid: str) -> str | None:
    """Apply the share's action to ``iid``; why not (a reason for the errors sample), else None."""
    inst = applier.load(iid)
    if inst is None:
        return f"{iid}: no longer exists"
    actor = f"bulk:{share.spec.id}"
    event: Event
    if share.spec.action == "retry":
        event = Retry(None, actor)
        problem = refusal(inst, event)
        if problem is not None:
            return problem
    else:
        if inst.is_terminal():
            return f"workflow {iid} is {inst.root.status} already"
        event = Stop(actor)
    applier.apply_event(iid, event)
    return None
