"""Bulk actions as plain data: what a job asks for (``BulkSpec``), one partition's share of
it (``BulkShare``, durable state of that partition), and the progress of a whole job
(``BulkProgress``, the shares added up).

The matched set is fixed when a share starts: the ids that meet the filter then, on that
partition, are stored with the share and each is acted on exactly once, in order; an
instance that stops matching later is still acted on (if the action still applies to it),
one that starts matching later is not. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import msgspec

ACTIONS = ("stop", "retry")
Action = Literal["stop", "retry"]

#: Instance events a job applies per pipeline batch unless its spec says otherwise.
DEFAULT_BATCH = 100
MAX_BATCH = 1000
#: Reasons kept per share for the instances a job could not act on (the rest are counted).
ERROR_SAMPLE = 20


class BulkSpec(msgspec.Struct, frozen=True, kw_only=True, tag="bulk"):
    """A bulk job as it is sent to every partition (the ``{app}-events`` record on Kafka)."""

    id: str
    action: Action
    filter: dict[str, Any]
    created: float
    actor: str | None = None
    batch: int = DEFAULT_BATCH


class BulkShare(msgspec.Struct, frozen=True, kw_only=True):
    """One partition's part of a job: what it matched and how far it got. ``done`` +
    ``failed`` + the ids left to act on = ``matched``."""

    spec: BulkSpec
    partition: int
    matched: int
    done: int = 0
    failed: int = 0
    errors: tuple[str, ...] = ()
    finished: float | None = None

    @property
    def remaining(self) -> int:
        return self.matched - self.done - self.failed

    def advanced(self, done: int, failed: int, errors: Iterable[str], now: float) -> BulkShare:
        """This share after acting on ``done + failed`` more instances."""
        sample = (*self.errors, *errors)[:ERROR_SAMPLE]
        share = msgspec.structs.replace(self, done=self.done + done, failed=self.failed + failed, errors=sample)
        if share.remaining <= 0 and share.finished is None:
            share = msgspec.structs.replace(share, finished=now)
        return share


_share_encoder = msgspec.msgpack.Encoder()
_share_decoder = msgspec.msgpack.Decoder(BulkShare)


def encode_share(share: BulkShare) -> bytes:
    return _share_encoder.encode(share)


def decode_share(data: bytes) -> BulkShare:
    return _share_decoder.decode(data)


class ShareProgress(msgspec.Struct, frozen=True, kw_only=True):
    partition: int
    matched: int
    done: int
    failed: int
    remaining: int
    finished: float | None


class BulkProgress(msgspec.Struct, frozen=True, kw_only=True):
    """A job's progress over the shares found. ``state`` is ``running`` until every
    partition expected has a finished share (``starting`` while none has reported)."""

    job: str
    action: str
    filter: dict[str, Any]
    actor: str | None
    state: str
    created: float
    finished: float | None
    matched: int
    done: int
    failed: int
    remaining: int
    errors: list[str]
    partitions: int
    shares: list[ShareProgress]
    # Partitions that have no share of the job (yet): "incomplete" once START_GRACE passed.
    partitions_missing: int = 0


def latest_shares(shares: Iterable[BulkShare]) -> list[BulkShare]:
    """One share per partition, the most advanced (two workers may both answer for a
    partition while it moves), in partition order."""
    best: dict[int, BulkShare] = {}
    for share in shares:
        known = best.get(share.partition)
        if known is None or share.done + share.failed > known.done + known.failed:
            best[share.partition] = share
    return [best[p] for p in sorted(best)]


#: Seconds after its start within which a partition of a job may not have its share yet; a
#: job still missing some after that is "incomplete" (its start did not reach them: start it
#: again with the same action and filter, which sends it to every partition once more).
START_GRACE = 60.0


def progress(spec: BulkSpec, shares: Iterable[BulkShare], partitions: int, now: float | None = None) -> BulkProgress:
    """The job's progress from the shares of its ``partitions`` found so far (``now``: the
    time, to tell a start on its way from one that did not arrive)."""
    found = latest_shares(shares)
    finished = [s.finished for s in found if s.finished is not None]
    missing = max(0, partitions - len(found))
    late = missing > 0 and now is not None and now - spec.created >= START_GRACE
    if late:
        state = "incomplete"
    elif not found:
        state = "starting"
    elif len(finished) == len(found) and not missing:
        state = "done"
    else:
        state = "running"
    errors = [e for s in found for e in s.errors][:ERROR_SAMPLE]
    return BulkProgress(
        job=spec.id,
        action=spec.action,
        filter=spec.filter,
        actor=spec.actor,
        state=state,
        created=spec.created,
        finished=max(finished) if state == "done" and finished else None,
        matched=sum(s.matched for s in found),
        done=sum(s.done for s in found),
        failed=sum(s.failed for s in found),
        remaining=sum(s.remaining for s in found),
        errors=errors,
        partitions=partitions,
        shares=[_share_progress(s) for s in found],
        partitions_missing=missing,
    )


def _share_progress(s: BulkShare) -> ShareProgress:
    return ShareProgress(partition=s.partition, matched=s.matched, done=s.done, failed=s.failed,
                         remaining=s.remaining, finished=s.finished)  # fmt: skip
