"""Bulk actions: stop or retry every instance a filter matches, as a durable job. A part of
the facade (``Dagger`` inherits it).

A dry run counts the matches (every worker's, on Kafka) and changes nothing. A real run
starts a job on every partition and answers at once with its id; each partition's owner
takes its own matching instances (fixed when its share starts) a few per pipeline batch,
inside its own commits, so the job survives restarts and failovers and acts on each
instance once (``pipeline.bulk``). ``bulk_job`` adds up the partitions' progress.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from .errors import InvalidInput, TaskInvalidState, UnknownJob
from .model.bulk import ACTIONS, DEFAULT_BATCH, MAX_BATCH, BulkProgress, BulkShare, BulkSpec, progress
from .model.query import InstanceQuery, query_from_filter
from .pipeline.clock import Clock
from .pipeline.ports import Runtime

_JOB_ID = re.compile(r"^[0-9a-f]{16}$")
_REMEMBERED = 1000


class BulkResult(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What ``bulk`` answers: the instances matched, and the job started (None: a dry run)."""

    matched: int
    job: str | None = None


class BulkActions:
    _runtime: Callable[[], Runtime]
    clock: Clock
    # Jobs this engine started, for ``bulk_job`` to know them before any partition has
    # reported (on Kafka the job travels to the partitions through the events topic).
    _bulk_started: dict[str, BulkSpec] | None = None

    async def bulk(
        self,
        action: str,
        filter: Mapping[str, Any] | None = None,
        *,
        dry_run: bool = False,
        batch_size: int | None = None,
        actor: str | None = None,
    ) -> BulkResult:
        """Stop (``"stop"``) or retry (``"retry"``) every instance that ``filter`` (the list
        query's keys: ``status``, ``template``, ``param.NAME``, ...) matches now. ``dry_run``:
        only count them. Else a job starts and this returns its id at once; each matched
        instance is acted on exactly once (a stop of an ended workflow, a retry of one that
        is no longer FAILURE, counts as failed with the reason). ``batch_size``: instance
        events per pipeline batch and partition (default 100)."""
        if action not in ACTIONS:
            raise InvalidInput(f"action must be one of {', '.join(ACTIONS)}, not {action!r}")
        batch = DEFAULT_BATCH if batch_size is None else batch_size
        if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= MAX_BATCH:
            raise InvalidInput(f"batch_size must be an integer from 1 to {MAX_BATCH}, not {batch_size!r}")
        query = query_from_filter(filter)
        runtime = self._runtime()
        if dry_run:
            return BulkResult(matched=await runtime.count_query_all(query))
        canonical = query.to_filter()
        for share in runtime.bulk_local(None):
            if share.spec.action == action and share.spec.filter == canonical:
                raise TaskInvalidState(
                    f"a bulk {action} with this filter is running already: job {share.spec.id}"
                )
        matched = await runtime.count_query_all(query)
        spec = BulkSpec(id=uuid.uuid4().hex[:16], action=action, filter=canonical,  # type: ignore[arg-type]
                        created=self.clock.now(), actor=actor, batch=batch)  # fmt: skip
        if self._bulk_started is None:
            self._bulk_started = {}
        started_here = self._bulk_started
        started_here[spec.id] = spec
        while len(started_here) > _REMEMBERED:  # the oldest are known to their partitions by now
            del started_here[next(iter(started_here))]
        started = await runtime.bulk_start(spec)
        # The embedded runtime has taken the snapshot: its count, not the count before it.
        return BulkResult(matched=matched if started is None else started, job=spec.id)

    def bulk_local_shares(self, job: str) -> list[BulkShare]:
        return self._runtime().bulk_local(job)

    def count_query_local(self, query: InstanceQuery) -> int:
        return self._runtime().count_query_local(query)

    async def bulk_job(self, job_id: str) -> BulkProgress:
        """The progress of bulk job ``job_id``, over every partition (``UnknownJob`` if no
        partition has it and this engine did not start it)."""
        if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
            raise UnknownJob(f"no bulk job {job_id!r}")
        shares, partitions = await self._runtime().bulk_all(job_id)
        spec = shares[0].spec if shares else (self._bulk_started or {}).get(job_id)
        if spec is None:
            raise UnknownJob(f"no bulk job {job_id!r}")
        return progress(spec, shares, partitions)
