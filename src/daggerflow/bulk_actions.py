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
from .model.query import query_from_filter
from .pipeline.clock import Clock
from .pipeline.ports import Runtime

_JOB_ID = re.compile(r"^[0-9a-f]{16}$")
_REMEMBERED = 1000
#: The most jobs one listing returns.
MAX_LISTED = 1000


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
            return BulkResult(matched=await runtime.count_all(query))
        canonical = query.to_filter()
        unfinished = await self._unfinished_like(runtime, action, canonical)
        if unfinished is not None:
            same, same_spec = unfinished
            if same.state != "incomplete":
                raise TaskInvalidState(f"a bulk {action} with this filter is running already: job {same.job}")
            # Its start did not reach every partition: send it again (a partition that has
            # its share keeps it), and answer with that job.
            await runtime.bulk_start(same_spec)
            return BulkResult(matched=same.matched, job=same.job)
        matched = await runtime.count_all(query)
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

    async def _unfinished_like(
        self, runtime: Runtime, action: str, canonical: dict[str, Any]
    ) -> tuple[BulkProgress, BulkSpec] | None:
        """A job with this action and filter that has not finished, on any worker (one
        started here that no partition has reported yet included), and its spec."""
        shares, _ = await runtime.bulk_jobs_all(active=True, limit=MAX_LISTED)
        candidates = {s.spec.id: s.spec for s in shares if s.spec.action == action and s.spec.filter == canonical}
        for job, spec in (self._bulk_started or {}).items():
            if spec.action == action and spec.filter == canonical:
                candidates.setdefault(job, spec)
        for job in sorted(candidates):
            found = await self.bulk_job(job)
            if found.state != "done":
                return found, candidates[job]
        return None

    async def bulk_jobs(self, limit: int = 50) -> list[BulkProgress]:
        """The ``limit`` newest bulk jobs (every worker's, on Kafka), newest first, each with
        its state and counts as ``bulk_job`` gives them."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LISTED:
            raise InvalidInput(f"limit must be an integer from 1 to {MAX_LISTED}, not {limit!r}")
        shares, partitions = await self._runtime().bulk_jobs_all(active=False, limit=limit)
        by_job: dict[str, list[BulkShare]] = {}
        for share in shares:
            by_job.setdefault(share.spec.id, []).append(share)
        specs = {job: found[0].spec for job, found in by_job.items()}
        for job, spec in (self._bulk_started or {}).items():
            specs.setdefault(job, spec)
        newest = sorted(specs.values(), key=lambda s: (s.created, s.id), reverse=True)[:limit]
        now = self.clock.now()
        return [progress(s, by_job.get(s.id, ()), partitions, now) for s in newest]

    def bulk_local_shares(self, job: str) -> list[BulkShare]:
        return self._runtime().bulk_local(job)

    def bulk_jobs_local_shares(self, *, active: bool, limit: int) -> list[BulkShare]:
        return self._runtime().bulk_jobs_local(active=active, limit=limit)

    async def bulk_job(self, job_id: str) -> BulkProgress:
        """The progress of bulk job ``job_id``, over every partition (``UnknownJob`` if no
        partition has it and this engine did not start it)."""
        if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
            raise UnknownJob(f"no bulk job {job_id!r}")
        shares, partitions = await self._runtime().bulk_all(job_id)
        spec = shares[0].spec if shares else (self._bulk_started or {}).get(job_id)
        if spec is None:
            raise UnknownJob(f"no bulk job {job_id!r}")
        return progress(spec, shares, partitions, self.clock.now())
