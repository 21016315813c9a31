"""Runs user code (execute, on_message, evaluate, interval_execute, stop) beside the
pipeline, with bounded concurrency; each outcome goes back to the processor as an event."""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..machine.events import JobDone, JobFailed
from ..model.instance import Instance, Node, RetryPolicy, copy_params
from ..model.records import Outgoing, PendingJob
from ..model.values import params_problem
from . import outbox
from .eager import start_eagerly
from .outbox import oversize_message

if TYPE_CHECKING:
    from ..tasks import ITask, ITemplateDAGInstance

log = logging.getLogger(__name__)


class JobContext(Protocol):
    """What the job runner needs from the engine, kept narrow for tests."""

    def committed(self, instance_id: str) -> Instance | None: ...

    def task_class(self, type_name: str | None) -> type[ITask[Any, Any]]: ...

    def view(
        self, instance: Instance, runtime_parameters: dict[str, Any] | None = None
    ) -> ITemplateDAGInstance[Any, Any]: ...

    def report(self, instance: str, event: Any, box: list[Any]) -> None: ...


@dataclass(frozen=True)
class JobCallbacks:
    """A ``JobContext`` made of the engine's callables (the facade hands these in)."""

    committed: Callable[[str], Instance | None]
    task_class: Callable[[str | None], type[Any]]
    view: Callable[..., Any]
    report: Callable[[str, Any, list[Any]], None]


def params_diff(before: dict[str, Any], after: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    changed = {k: v for k, v in after.items() if k not in before or before[k] != v}
    removed = [k for k in before if k not in after]
    return changed, removed


def check_serialisable(params: dict[str, Any], what: str) -> str | None:
    """None if every parameter can be stored and read back, else a message naming the
    first bad one (``model.values``: the one rule for creation and task results)."""
    return params_problem(params, what)


def is_retryable(exc: BaseException, policy: RetryPolicy | None) -> bool:
    if policy is None:
        return False
    names = {cls.__name__ for cls in type(exc).__mro__} | {
        f"{cls.__module__}.{cls.__qualname__}" for cls in type(exc).__mro__
    }
    return not names & set(policy.non_retryable)


#: What a job started inline returns: its event (None: nothing to apply) and its messages.
JobOutcome = tuple[JobDone | JobFailed | None, list[Outgoing]]


class Started:
    """``run_inline``'s answer for a job that had to wait: it reports its outcome when done."""


STARTED = Started()


class _Handover:
    """Between ``run_inline`` and the job it started: the outcome, if the job finished
    before ``start_eagerly`` returned; ``waited`` once it did not."""

    __slots__ = ("outcome", "waited")

    def __init__(self) -> None:
        self.outcome: JobOutcome | None = None
        self.waited = False


class JobRunner:
    def __init__(self, ctx: JobContext, max_concurrency: int, max_message_bytes: int = 1024 * 1024) -> None:
        self._ctx = ctx
        self._max_message = max_message_bytes
        self._sem = asyncio.Semaphore(max_concurrency)
        self._running: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._all: set[asyncio.Task[None]] = set()
        self._closing = False
        # A bug in the runner itself (user code's exceptions are JobFailed outcomes): the
        # worker watches ``failure()`` and stops, rather than run on without outcomes.
        self.failed: BaseException | None = None
        self._failure: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self._all)

    async def failure(self) -> None:
        """Wait until the runner fails, then raise its error (it never returns otherwise)."""
        if self.failed is None:
            if self._failure is None:
                self._failure = asyncio.get_running_loop().create_future()
            await self._failure
        assert self.failed is not None
        raise self.failed

    def _fail(self, exc: BaseException) -> None:
        if self.failed is not None:
            return
        self.failed = exc
        log.error("the job runner failed: %r", exc, exc_info=exc)
        if self._failure is not None and not self._failure.done():
            self._failure.set_result(None)

    def _check(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._fail(exc)

    def submit(self, job: PendingJob) -> None:
        if self._closing:
            return  # shutting down: the job stays in the jobs table and runs after restart
        try:
            task = start_eagerly(self._run(job))
        except Exception as exc:  # raised by the first step: not the caller's (the processor's) problem
            self._fail(exc)
            return
        if task is None:
            return  # finished without waiting for anything
        self._track(job, task)

    def _track(self, job: PendingJob, task: asyncio.Task[None]) -> None:
        self._all.add(task)
        task.add_done_callback(self._all.discard)
        task.add_done_callback(self._check)
        if job.job != "stop":
            self._running[(job.instance, job.node)] = task
            key = (job.instance, job.node)
            task.add_done_callback(lambda t: self._forget(key, t))

    def _forget(self, key: tuple[str, str], task: asyncio.Task[None]) -> None:
        if self._running.get(key) is task:
            del self._running[key]

    def cancel(self, instance: str, node: str) -> None:
        task = self._running.pop((instance, node), None)
        if task is not None:
            task.cancel()

    def cancel_where(self, instance_matches: Callable[[str], bool]) -> int:
        """Cancel the running jobs of matching instances (a partition that moved away:
        their outcomes could no longer be committed here). Returns how many."""
        keys = [k for k in self._running if instance_matches(k[0])]
        for key in keys:
            self._running.pop(key).cancel()
        return len(keys)

    async def drain(self, timeout: float) -> None:
        """Wait for running jobs; cancel what is left after ``timeout`` (they re-run after
        restart, since their results were never committed). No new job starts meanwhile."""
        self._closing = True
        if self._all:
            _, pending = await asyncio.wait(set(self._all), timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)

    def run_inline(self, job: PendingJob, instance: Instance) -> JobOutcome | Started | None:
        """Start ``job`` now, against ``instance`` (the state of the batch that starts it,
        not yet committed), for the processor to apply its outcome in that same batch.

        Returns the outcome if the job finished without waiting for anything (a command
        task that only sends to its topic, an ``on_message`` that only looks at the
        message): its messages then commit together with the start, and the job costs no
        commit of its own. Returns ``STARTED`` if it had to wait: it goes on as a task and
        reports its outcome like any job (the processor reads it after this batch). Returns
        None if it was not started (shutting down, or the concurrency limit is reached):
        the caller runs it the usual way, after the commit."""
        if self._closing or self._sem.locked():
            return None
        node = instance.nodes.get(job.node)
        if node is None:
            return None
        handover = _Handover()
        try:
            task = start_eagerly(self._run_inline(job, instance, node, handover))
        except Exception as exc:
            self._fail(exc)
            return None
        if task is None:
            return handover.outcome
        handover.waited = True
        # The job diffs its parameters against the dict it started from, and later events of
        # the batch change the instance's parameters in place (top-level keys only): give
        # the instance a dict of its own.
        instance.runtime_parameters = dict(instance.runtime_parameters)
        self._track(job, task)
        return STARTED

    async def _run_inline(self, job: PendingJob, instance: Instance, node: Node, handover: _Handover) -> None:
        async with self._sem:
            outcome = await self._call(job, instance, node)
        if not handover.waited:
            handover.outcome = outcome  # still inside ``start_eagerly``: the caller applies it
        elif outcome[0] is not None:
            self._ctx.report(job.instance, outcome[0], outcome[1])

    async def _run(self, job: PendingJob) -> None:
        async with self._sem:
            instance = self._ctx.committed(job.instance)
            if instance is None:
                return
            node = instance.nodes.get(job.node)
            if node is None:
                return
            event, box = await self._call(job, instance, node)
            if event is not None:
                self._ctx.report(job.instance, event, box)

    async def _call(
        self, job: PendingJob, instance: Instance, node: Node
    ) -> tuple[JobDone | JobFailed | None, list[Outgoing]]:
        try:
            cls = self._ctx.task_class(node.type_name)
        except KeyError as exc:
            return self._failed(job, f"TaskTypeNotRegistered: {exc.args[0]}", "", False), []
        task = cls(node)
        # A private snapshot: the committed instance is changed in place by later events
        # (a parallel sibling's outcome) while this job runs, and the diff must be against
        # what this job started from, or it would undo the sibling's changes.
        # The committed instance is never changed (the processor applies events to copies),
        # so it serves as this job's "before"; user code gets its own parameter copy.
        before = instance.runtime_parameters
        params = copy_params(before)
        view = self._ctx.view(instance, params)
        result: Any = None
        with outbox.capture() as box:
            try:
                if job.job == "execute":
                    await task.execute(params, view)
                elif job.job == "on_message":
                    result = bool(await task.on_message(params, job.payload))  # type: ignore[attr-defined]
                elif job.job == "evaluate":
                    chosen = await task.evaluate(**copy_params(before))  # type: ignore[attr-defined]
                    result = None if chosen is None else str(chosen)
                elif job.job == "interval_execute":
                    result = bool(await task.interval_execute(params))  # type: ignore[attr-defined]
                elif job.job == "stop":
                    await task.stop(params, view)
                    # What the hook sent (e.g. a cancel command) is published; its
                    # parameter changes are not applied: the workflow is terminal.
                    if box and (problem := oversize_message(box, self._max_message)) is not None:
                        log.warning("stop() of %s: its messages are not sent: %s", node.name, problem)
                        box = []
                    return JobDone(node.id, job.seq, job.job), box
                else:
                    return self._failed(job, f"unknown job kind {job.job!r}", "", False), []
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if job.job == "stop":
                    log.warning("stop() of %s raised %r", node.name, exc)
                    return None, []
                return (
                    self._failed(
                        job,
                        f"{type(exc).__name__}: {exc}",
                        traceback.format_exc(),
                        is_retryable(exc, node.retry),
                    ),
                    [],
                )
        if box and (problem := oversize_message(box, self._max_message)) is not None:
            return self._failed(job, problem, "", False), []
        changed, removed = params_diff(before, params)
        problem = check_serialisable(changed, "runtime parameter") if changed else None
        if problem is not None:
            return self._failed(job, f"NotSerializable: {problem}", "", False), []
        status = task.status_code()
        override = status if status in ("FAILURE", "SKIPPED") and status != node.status else None
        return JobDone(node.id, job.seq, job.job, result, changed, removed, override), box

    @staticmethod
    def _failed(job: PendingJob, error: str, tb: str, retryable: bool) -> JobFailed:
        return JobFailed(job.node, job.seq, job.job, error, tb, retryable, job.payload)
