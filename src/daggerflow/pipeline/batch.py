"""Applying one batch of items: events through the pure machine, their effects into one
``WriteBatch`` (state, index, timers, jobs, messages), and what to do after the commit.

The batch keeps its own index changes visible to itself (an entry put and then looked up in
the same batch), matches listener messages against the index, deduplicates and buffers
them, and runs the jobs it started inline when they finish without waiting.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from ..errors import TaskInvalidState, TooLarge
from ..machine import (
    CancelJob,
    CancelTimer,
    Context,
    Create,
    Deliver,
    IndexDel,
    IndexPut,
    InstanceDeleted,
    JobDone,
    JobFailed,
    RunJob,
    SetTimer,
    apply,
)
from ..machine.events import Complete, Event, Migrate, PatchParameters, Retry, Skip, Stop, Submit, TimerFired
from ..model import history
from ..model.history import entry as history_entry
from ..model.history import with_sent
from ..model.instance import Correlation, Instance, encode_instance, encode_params
from ..model.records import Message, Outgoing, PendingJob
from ..model.schedule import SCHEDULE_PREFIX
from ..model.snapshot import snapshot
from ..store.base import Store, WriteBatch
from . import bulk
from .items import (
    AgentCommit,
    BulkStart,
    BulkStep,
    ForwardEvent,
    ForwardIndex,
    Incoming,
    IndexChange,
    InstanceEvent,
    Item,
    Purge,
    Settings,
)
from .jobs import JobOutcome, Started
from .observe import BUFFERED, DUPLICATE, ERROR, LATE, MATCHED, UNMATCHED
from .schedules import schedule_event
from .search_index import search_changes

_json = msgspec.json.Encoder()
#: Rounds of inline jobs per batch: an outcome may start further jobs (a command task after
#: a listener), and a template could loop; what is left runs after the commit.
MAX_INLINE_ROUNDS = 32
#: Events that never change runtime parameters (a ``JobDone`` does when it carries changes):
#: after any other event the instance's search rows are computed again (``search_changes``).
_KEEPS_PARAMS = frozenset({Submit, Stop, Deliver, JobDone, JobFailed, TimerFired, Skip, Complete})

log = logging.getLogger(__name__)

# The operators' events: refused where nobody waits for the answer, they are logged.
_OPERATORS = (Retry, Skip, Complete, PatchParameters, Migrate)


class Oversize(Exception):
    """The batch would commit instances over the size limits (``problems``: id -> why).
    Nothing was written: the processor prepares the batch again without what grew them."""

    def __init__(self, problems: dict[str, TooLarge]) -> None:
        super().__init__(f"instances over the size limits: {sorted(problems)}")
        self.problems = problems


class CommittedState(Protocol):
    """What a batch reads of its processor: the committed state, the store, the settings."""

    @property
    def store(self) -> Store: ...

    @property
    def settings(self) -> Settings: ...

    def committed_instance(self, instance_id: str) -> Instance | None: ...

    def private_copy(self, instance_id: str) -> Instance | None: ...

    def committed_size(self, instance_id: str) -> int: ...


#: ``JobRunner.run_inline``: runs a job the batch started before the commit.
RunInline = Callable[[PendingJob, Instance], JobOutcome | Started | None]


@dataclass
class PostCommit:
    """Everything to do once the batch is committed."""

    results: list[tuple[asyncio.Future[Any], Any]] = field(default_factory=list)
    errors: list[tuple[asyncio.Future[Any], BaseException]] = field(default_factory=list)
    jobs: list[PendingJob] = field(default_factory=list)
    cancels: list[tuple[str, str]] = field(default_factory=list)
    timers_set: list[tuple[str, str, float]] = field(default_factory=list)
    timers_cancel: list[tuple[str, str]] = field(default_factory=list)
    changed: dict[str, Instance | None] = field(default_factory=dict)
    deleted: dict[str, Instance] = field(default_factory=dict)  # final state of deleted ones
    # The committed state of each instance the batch loaded before it changed it (None: the
    # batch created it): what the lifecycle log compares ``changed`` with.
    before: dict[str, Instance | None] = field(default_factory=dict)
    appends: list[Outgoing] = field(default_factory=list)  # the messages the batch appends
    bulk_stepped: bool = False  # the batch held a ``BulkStep``
    bulk_more: bool = False  # ...and bulk jobs have work left: queue the next step
    telemetry: list[Any] = field(default_factory=list)  # what the observer reports after it


def deliver_of(node: str, msg: Message) -> Deliver:
    partition = msg.partition
    return Deliver(node, msg.value, msg.topic, msg.offset, -1 if partition is None else partition)


def _active_jobs(instance: Instance | None) -> set[tuple[str, int]]:
    if instance is None:
        return set()
    return {(n.id, n.job_seq) for n in instance.nodes.values() if n.job is not None}


class BatchApplier:
    """Applies one batch's items; keeps the batch's own index changes visible to itself."""

    def __init__(
        self,
        proc: CommittedState,
        batch: WriteBatch,
        after: PostCommit,
        now: float,
        run_inline: RunInline | None,
        refused: dict[str, TooLarge] | None = None,
        dropped: frozenset[str] = frozenset(),
    ) -> None:
        self.proc = proc
        # Instances an earlier preparation of this batch grew over a size limit: what grows
        # them is refused (a job's outcome becomes its failure, a create fails its caller);
        # ``dropped`` ones, still too large after that, get no event of this batch at all.
        self.refused = refused or {}
        self.dropped = dropped
        self.batch = batch
        self.after = after
        self.now = now
        self.run_inline_hook = run_inline
        self.transitions = 0
        self.ctx = Context(self.now, proc.settings.delete_on_complete, proc.settings.registered_version)
        self.index_added: dict[Correlation, list[tuple[str, str, bool]]] = {}
        self.index_removed: set[tuple[Correlation, str, str]] = set()
        self.buffer_taken: set[int] = set()
        self.started: set[tuple[str, str, int]] = set()  # jobs this batch started
        self.withdrawn: set[tuple[str, str, int]] = set()  # ...and ended again
        self.inlined: set[tuple[str, str, int]] = set()  # ...and ran before the commit
        self.seen: set[tuple[str, str]] = set()
        self.history_limit = proc.settings.history_limit
        self.history: dict[str, list[history.Row]] = {}  # the batch's entries per instance
        self.obs = proc.settings.observer
        self.search_dirty: set[str] = set()  # instances whose searchable parameters may have changed

    def handle(self, item: Item) -> None:
        if not isinstance(item, AgentCommit) and item.source is not None:
            tp, offset = item.source
            self.batch.input_offsets[tp] = offset + 1
        match item:
            case InstanceEvent():
                if item.instance.startswith(SCHEDULE_PREFIX):  # (no instance id has a "/")
                    schedule_event(self, item.instance, item.event, item.future)
                elif self.apply_event(item.instance, item.event, item.future, item.outbox) and item.trace:
                    if self.obs is not None:  # a forwarded delivery that a message's span traced
                        self.obs.delivered(self.after.telemetry, item.instance, item.event, item.trace)
            case Incoming():
                self.incoming(item)
            case IndexChange():
                self.index_change(item)
            case Purge():
                self.purge(item)
            case AgentCommit():
                self.batch.appends.extend(item.outbox)
                self.batch.positions[item.consumer] = item.next_offset
                if item.future is not None:
                    self.after.results.append((item.future, item.next_offset))
            case BulkStep():
                self.after.bulk_stepped = True
                bulk.step(self)
            case BulkStart():
                bulk.start(self, item)

    @property
    def store(self) -> Store:
        return self.proc.store

    def bulk_done(self, result: tuple[Any, Any] | None, more: bool) -> None:
        if result is not None:
            self.after.results.append(result)
        self.after.bulk_more = self.after.bulk_more or more

    def load(self, iid: str) -> Instance | None:
        """The instance as this batch sees it: its own changes, else the committed state."""
        if iid in self.after.changed:
            return self.after.changed[iid]
        return self.proc.committed_instance(iid)

    def load_private(self, iid: str) -> Instance | None:
        """Like ``load``, but safe to change: a copy unless this batch already owns one."""
        if iid in self.after.changed:
            return self.after.changed[iid]
        committed = self.proc.committed_instance(iid)
        self.after.before[iid] = committed
        return None if committed is None else self.proc.private_copy(iid)

    def apply_event(
        self,
        iid: str,
        event: Event,
        future: asyncio.Future[Any] | None = None,
        box: list[Outgoing] | None = None,
    ) -> bool:
        if self.refused and iid in self.refused:
            refused = self.refuse(iid, event, future)
            if refused is None:
                return False
            event = refused
        inst = self.load_private(iid)
        before = _active_jobs(inst)
        tr = apply(inst, event, self.ctx)
        if isinstance(event, (JobDone, JobFailed)):
            self.end_job(iid, event.node, event.seq)
        if tr.error is not None and future is not None:
            self.after.errors.append((future, TaskInvalidState(tr.error)))
        elif tr.error is not None and isinstance(event, _OPERATORS):
            # Sent by another worker (or a client), which answered its caller already.
            log.warning("%s of workflow %s refused here: %s", type(event).__name__, iid, tr.error)
        elif future is not None:
            self.after.results.append((future, tr.instance))
        stop_box = False
        if isinstance(event, JobDone) and event.job == "stop" and box:
            stop_box = True
            target = tr.instance or inst
            if self.obs is not None and target is not None:
                self.obs.outbox(self.after.telemetry, target, event.node, box)
            self.batch.appends.extend(box)  # a stop() hook's messages: the stop is committed
        if not tr.changed or tr.instance is None:
            return False
        inst = tr.instance
        self.transitions += 1
        inst.update_count += 1
        if self.history_limit:
            entries = self.history.get(iid)
            if entries is None:
                entries = self.history[iid] = []
            row = history_entry(inst.history_seq + len(entries), self.now, event, inst, tr.statuses)
            entries.append(with_sent(row, box) if box and isinstance(event, (JobDone, JobFailed)) else row)
        self.after.changed[iid] = inst
        self.batch.instances[iid] = inst
        if type(event) not in _KEEPS_PARAMS or (isinstance(event, JobDone) and (event.params or event.removed)):
            self.search_dirty.add(iid)
        if self.obs is not None:
            self.after.telemetry.append(tr)  # (its status changes and effects, reported after the commit)
        if box:
            if self.obs is not None and isinstance(event, (JobDone, JobFailed)) and not stop_box:
                self.obs.outbox(self.after.telemetry, inst, event.node, box)
            self.batch.appends.extend(box)
        after_jobs = _active_jobs(inst)
        for node, seq in before - after_jobs:
            self.end_job(iid, node, seq)
        follow_ups: list[Deliver] = []
        for effect in tr.effects:
            if isinstance(effect, RunJob):
                job = PendingJob(iid, effect.node, effect.job, effect.seq, effect.payload)
                if (effect.node, effect.seq) in after_jobs:
                    self.batch.jobs_put.append(job)
                    self.started.add((iid, effect.node, effect.seq))
                self.after.jobs.append(job)
            elif isinstance(effect, SetTimer):
                self.batch.set_timer(iid, effect.key, effect.due)
                self.after.timers_set.append((iid, effect.key, effect.due))
            elif isinstance(effect, CancelTimer):
                self.batch.cancel_timer(iid, effect.key)
                self.after.timers_cancel.append((iid, effect.key))
            elif isinstance(effect, IndexPut):
                if self.owns_correlation(effect.at):
                    self.index_put(effect.at, iid, effect.node, effect.only_one)
                    follow_ups.extend(self.buffered_for(effect.at, effect.node))
                else:
                    self.batch.forwards.append(ForwardIndex(effect.at, iid, effect.node, True, effect.only_one))
            elif isinstance(effect, IndexDel):
                if self.owns_correlation(effect.at):
                    self.index_del(effect.at, iid, effect.node)
                else:
                    self.batch.forwards.append(ForwardIndex(effect.at, iid, effect.node, False))
            elif isinstance(effect, CancelJob):
                self.after.cancels.append((iid, effect.node))
            elif isinstance(effect, InstanceDeleted):
                self.batch.instances[iid] = None
                self.after.changed[iid] = None
                self.after.deleted[iid] = inst
                # Its history goes with it: the rows it lists, and this batch's entries.
                self.batch.history_del.extend((iid, first) for first in inst.history_rows)
                self.history.pop(iid, None)
        for deliver in follow_ups:
            self.apply_event(iid, deliver)
        return True

    def refuse(self, iid: str, event: Event, future: asyncio.Future[Any] | None) -> Event | None:
        """What of ``event`` may apply to an instance that grew too large: None for nothing."""
        error = self.refused[iid]
        if iid not in self.dropped:
            if isinstance(event, JobDone) and event.job != "stop":
                return JobFailed(event.node, event.seq, event.job, f"TooLarge: {error}", "", False)
            if isinstance(event, JobFailed):  # (its traceback may be what is too large)
                return JobFailed(event.node, event.seq, event.job, event.error[:2000], "", False, event.payload)
            if not isinstance(event, Create):
                return event
        if future is not None:
            self.after.errors.append((future, error))
        elif isinstance(event, (JobDone, JobFailed)):
            self.end_job(iid, event.node, event.seq)  # its outcome is lost: not re-run forever
        return None

    def owns_correlation(self, at: Correlation) -> bool:
        owns = self.proc.settings.owns_correlation
        return owns is None or owns(at)

    def owns_instance(self, iid: str) -> bool:
        owns = self.proc.settings.owns_instance
        return owns is None or owns(iid)

    def deliver(self, iid: str, event: Deliver) -> None:
        """Apply a delivery here, or forward it to the instance's owner."""
        if self.owns_instance(iid):
            self.apply_event(iid, event)
        else:
            self.batch.forwards.append(ForwardEvent(iid, event))

    def index_change(self, item: IndexChange) -> None:
        if item.put:
            self.index_put(item.at, item.instance, item.node, item.only_one)
            for deliver in self.buffered_for(item.at, item.node):
                self.deliver(item.instance, deliver)
        else:
            self.index_del(item.at, item.instance, item.node)
        if item.future is not None:
            self.after.results.append((item.future, None))

    def purge(self, item: Purge) -> None:
        seen, buffered = self.proc.store.expired(item.now, item.seen_ttl, item.limit)
        forget = [key for key in seen if key not in self.seen]  # (not if seen again in this batch)
        self.batch.seen_del.extend(forget)
        dropped = [buf_id for buf_id in buffered if buf_id not in self.buffer_taken]
        self.buffer_taken.update(dropped)
        self.batch.buffer_del.extend(dropped)
        if item.future is not None:
            self.after.results.append((item.future, len(forget) + len(dropped)))

    def end_job(self, iid: str, node: str, seq: int) -> None:
        """A job is no longer wanted. If this batch started it, it is neither stored nor
        run (the stores apply deletes before puts, so a delete alone would not undo it)."""
        key = (iid, node, seq)
        if key in self.started:
            self.withdrawn.add(key)
        else:
            self.batch.jobs_del.append(key)

    # Correlation ----------------------------------------------------------------------

    def index_put(self, at: Correlation, iid: str, node: str, only_one: bool) -> None:
        self.index_removed.discard((at, iid, node))
        self.index_added.setdefault(at, []).append((iid, node, only_one))
        self.batch.index_put.append((at, iid, node, only_one))

    def index_del(self, at: Correlation, iid: str, node: str) -> None:
        added = self.index_added.get(at)
        if added and any(e[0] == iid and e[1] == node for e in added):
            added[:] = [e for e in added if e[0] != iid or e[1] != node]
            # Put by this batch (e.g. a listener indexed, then re-keyed by a job applied in
            # the same batch): the stores apply deletes before puts, so take the put back.
            self.batch.index_put = [e for e in self.batch.index_put if e[:3] != (at, iid, node)]
        self.index_removed.add((at, iid, node))
        self.batch.index_del.append((at, iid, node))

    def lookup(self, at: Correlation) -> list[tuple[str, str, bool]]:
        found = [e for e in self.proc.store.lookup(at) if (at, e[0], e[1]) not in self.index_removed]
        for entry in self.index_added.get(at, []):
            if entry not in found:
                found.append(entry)
        return found

    def buffered_for(self, at: Correlation, node: str) -> list[Deliver]:
        if self.proc.settings.unmatched_ttl(at.topic) <= 0:
            return []
        out = []
        for buf_id, payload in self.proc.store.buffered(at, self.now):
            if buf_id in self.buffer_taken:
                continue
            self.buffer_taken.add(buf_id)
            self.batch.buffer_del.append(buf_id)
            out.append(Deliver(node, payload, at.topic))  # (its offset is not kept)
        return out

    def incoming(self, item: Incoming) -> None:
        msg = item.message
        if item.consumer:
            self.batch.positions[item.consumer] = msg.offset + 1
        if item.future is not None:
            self.after.results.append((item.future, msg.offset))
        obs = self.obs
        if item.dead_letter is not None:
            self.batch.appends.append(item.dead_letter)
            if obs is not None:
                obs.correlated(self.after.telemetry, msg, item.consumer, ERROR, [], 0)
            return
        self.batch.forwards.extend(item.routes)
        key = None if item.message_id is None else (msg.topic, item.message_id)
        if key is not None and (key in self.seen or self.proc.store.has_seen(*key)):
            if obs is not None:  # a redelivered or duplicate message: ignored (design §3)
                obs.correlated(self.after.telemetry, msg, item.consumer, DUPLICATE, [], 0)
            return
        matched = False
        # What the observer reports: the local instances the message changed, the
        # deliveries forwarded, and whether it found only finished nodes (late).
        hits: list[Instance] = []
        forwarded = 0
        found = False
        trace: str | None = None  # (the message's span, for forwarded deliveries: when tracing)
        partition = self.proc.settings.partition
        # Every matching waiter of a normal listener gets the message; of the waiters whose
        # listener is match_only_one, only the first.
        only_one_taken = False
        for key_name, value in item.mappings:
            at = Correlation(msg.topic, key_name, value)
            for iid, node, only_one in self.lookup(at):
                if only_one and only_one_taken:
                    continue
                if not self.owns_instance(iid):
                    # Its owner decides (a late delivery to a finished node is ignored there);
                    # the entry's flag is all this partition knows of the node.
                    if obs is not None and not forwarded:
                        trace = obs.forward_trace(msg, partition)
                    self.batch.forwards.append(ForwardEvent(iid, deliver_of(node, msg), trace))
                    matched = True
                    forwarded += 1
                    only_one_taken = only_one_taken or only_one
                    continue
                target = self.load(iid)
                target_node = None if target is None else target.nodes.get(node)
                if target_node is None:
                    self.index_del(at, iid, node)  # prune entries of deleted instances
                    continue
                # The node's own flag: entries indexed before the flag was stored have none.
                if target_node.match_only_one:
                    if only_one_taken:
                        continue
                    only_one_taken = True
                found = True
                if self.apply_event(iid, deliver_of(node, msg)) and obs is not None:
                    changed = self.after.changed.get(iid)
                    if changed is not None:
                        hits.append(changed)
                matched = True
        if item.unmatched_route is not None and not matched:
            self.batch.forwards.append(item.unmatched_route)
            return  # its routed copy is reported where it is matched
        ttl = self.proc.settings.unmatched_ttl(msg.topic)
        buffered = not matched and ttl > 0 and bool(item.mappings)
        if buffered:
            for key_name, value in item.mappings:
                self.batch.buffer_put.append(
                    (Correlation(msg.topic, key_name, value), msg.value, self.now + ttl)
                )
        # Only a message that was delivered or kept leaves its id: one that found nobody
        # waiting is gone, and its producer's retry must count as new.
        if key is not None and (matched or buffered):
            self.seen.add(key)
            self.batch.seen.append(key)
        if obs is not None:
            if hits or forwarded:
                result = MATCHED
            elif found:
                result = LATE
            else:
                result = BUFFERED if buffered else UNMATCHED
            obs.correlated(self.after.telemetry, msg, item.consumer, result, hits, forwarded, partition)

    def run_jobs_inline(self) -> None:
        """Start the jobs this batch started now, before the commit (``JobRunner.run_inline``).
        A job that finishes without waiting (a command task that only sends, an
        ``on_message`` that only reads the message) is applied in this batch: its messages
        commit with its start, and it costs no commit, no job record and no snapshot of its
        own. A job that waits goes on as a task; its record is committed, so it runs again
        after a crash, like any job. User code thus runs before its start is durable: it may
        run again if this commit fails, which a job may anyway."""
        run = self.run_inline_hook
        if run is None:
            return
        tried: set[tuple[str, str, int]] = set()
        for _ in range(MAX_INLINE_ROUNDS):
            fresh = [
                job
                for job in self.after.jobs
                if (key := (job.instance, job.node, job.seq)) in self.started and key not in tried
            ]
            if not fresh:
                return
            for job in fresh:
                key = (job.instance, job.node, job.seq)
                tried.add(key)
                inst = self.after.changed.get(job.instance)
                node = inst.nodes.get(job.node) if inst is not None else None
                if key in self.withdrawn or node is None or node.job != job.job or node.job_seq != job.seq:
                    continue  # ended by an outcome applied meanwhile
                assert inst is not None
                outcome = run(job, inst)
                if outcome is None:
                    continue  # not started: after the commit, as usual
                self.inlined.add(key)
                if isinstance(outcome, Started):
                    continue
                event, box = outcome
                if event is not None:
                    self.apply_event(job.instance, event, None, box)

    def size_problem(self, iid: str, inst: Instance, size: int) -> TooLarge | None:
        """Why ``inst`` cannot be committed, or None. An instance committed over a limit
        (lowered since) may still progress (stop, finish), growing by at most a sixteenth
        of the limit a batch. The history's tail in the record (``model.history``, under
        ``FLUSH_BYTES``) does not count: a workflow's limit is its own state's."""
        limits = self.proc.settings.limits
        size -= len(inst.history_tail)
        if size > limits.instance and self._grows(iid, size, limits.instance):
            return TooLarge(f"the record of instance {iid!r}", size, limits.instance, " (max_instance_bytes)")
        if size > limits.parameters:
            params = len(encode_params(inst.runtime_parameters))
            if params > limits.parameters and self._grows(iid, size, limits.parameters):
                return TooLarge(f"the runtime parameters of instance {iid!r}", params, limits.parameters,
                                " (max_parameters_bytes)")  # fmt: skip
        return None

    def _grows(self, iid: str, size: int, limit: int) -> bool:
        committed = self.proc.committed_size(iid)
        return committed <= limit or size > committed + limit // 16

    def finish(self) -> None:
        if self.search_dirty or self.after.deleted:
            search_changes(self.search_dirty | self.after.deleted.keys(), self.after.changed, self.after.before,
                           self.batch)  # fmt: skip
        self.after.appends = self.batch.appends
        if self.withdrawn or self.inlined:
            gone = self.withdrawn
            self.batch.jobs_put = [j for j in self.batch.jobs_put if (j.instance, j.node, j.seq) not in gone]
            gone = gone | self.inlined
            self.after.jobs = [j for j in self.after.jobs if (j.instance, j.node, j.seq) not in gone]
        for iid, entries in self.history.items():
            changed = self.after.changed[iid]
            assert changed is not None  # (a deleted instance's entries are dropped)
            flush = history.fold(changed, entries, self.history_limit)
            if flush is not None:
                self.batch.history_put.append((iid, *flush.put))
                self.batch.history_del.extend((iid, first) for first in flush.delete)
        limits = self.proc.settings.limits
        smaller = min(limits.instance, limits.parameters)
        problems: dict[str, TooLarge] = {}
        for iid, changed in self.after.changed.items():
            if changed is not None:
                data = self.batch.encoded[iid] = encode_instance(changed)
                # The parameters are part of the record: a record within both limits has
                # parameters within theirs, and costs no further encoding.
                if len(data) > smaller and (problem := self.size_problem(iid, changed, len(data))) is not None:
                    problems[iid] = problem
        if problems:
            raise Oversize(problems)
        topic = self.proc.settings.task_update_topic
        if topic is None:
            return
        for iid, changed in self.after.changed.items():
            # A workflow deleted on completion still publishes its final (COMPLETED) state.
            inst = changed if changed is not None else self.after.deleted.get(iid)
            if inst is not None:
                value = _json.encode(snapshot(inst)).decode()
                headers = self.obs.headers(inst) if self.obs is not None else None
                if headers is None:
                    self.batch.appends.append(Outgoing(topic, inst.partition_key(), value))
                else:
                    self.batch.appends.append(Outgoing(topic, inst.partition_key(), value, headers))
