"""The reads the web console needs besides instances: open listeners, pending timers, the
dashboard's overview, the workers and the counts of node statuses of a template. A part of the facade
(``Dagger`` inherits it).

Each read has a local half (``local_*``: what this process's stores hold, which the internal
routes answer with) and a whole one, which on Kafka adds the other workers' halves
(``Runtime.ask_others``) and merges them (``model.console``), as one store holding every
partition would answer.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import msgspec

from .about import package_version
from .errors import InvalidInput, TemplateDoesNotExist
from .model.console import (
    OVERVIEW_ITEMS,
    ListenerPart,
    NodeCountsPart,
    OverviewPart,
    StatusCount,
    Throughput,
    TimerPart,
    count_nodes,
    listener_part,
    merge_listener_parts,
    merge_node_counts,
    merge_overviews,
    merge_timer_parts,
    most_overdue,
    timer_part,
)
from .model.instance import Instance
from .model.query import InstanceQuery
from .model.workers import PartitionRow, WorkerPart, ordered_workers, partition_rows
from .pipeline.ports import Runtime

if TYPE_CHECKING:
    from .config import EngineConfig
    from .model.versions import TemplateVersion
    from .telemetry import Telemetry

#: The largest page of listeners or timers.
MAX_PAGE = 1000
#: How many of a template's newest instances ``node_counts`` scans by default, and at most.
NODE_COUNTS_DEFAULT = 10_000
NODE_COUNTS_MAX = 100_000
#: "Failures in the last hour".
FAILED_WINDOW = 3600.0

_listeners = msgspec.msgpack.Decoder(ListenerPart)
_timers = msgspec.msgpack.Decoder(TimerPart)
_overview = msgspec.msgpack.Decoder(OverviewPart)
_node_counts = msgspec.msgpack.Decoder(NodeCountsPart)
_worker = msgspec.msgpack.Decoder(WorkerPart)


def _paging(limit: Any, offset: Any, most: int = MAX_PAGE) -> tuple[int, int]:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= most:
        raise InvalidInput(f"limit must be an integer from 1 to {most}, got {limit!r}")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise InvalidInput(f"offset must be an integer >= 0, got {offset!r}")
    return limit, offset


def _optional(name: str, value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        raise InvalidInput(f"{name} must be a non-empty string, got {value!r}")
    return value


class ConsoleReads:
    config: EngineConfig
    clock: Any
    telemetry: Telemetry | None
    template_dags: dict[str, Any]
    _runtime: Callable[[], Runtime]
    template_versions: Callable[[], Any]
    web_url: str | None
    started_at: float | None

    # Open listeners -----------------------------------------------------------------------

    def local_listeners(self, *, topic: str | None = None, template: str | None = None, first: int = 100) -> ListenerPart:
        """The open listeners of the instances this process holds: the ``first`` oldest, with
        the total and the count per topic."""
        return listener_part(self._waiting(), topic=topic, template=template, first=first)

    async def list_listeners(
        self, *, topic: str | None = None, template: str | None = None, limit: int = 100, offset: int = 0
    ) -> ListenerPart:
        """A page of every open listener (the correlation index), oldest first (by when it
        started waiting), with the total and the count per topic over the whole filter."""
        limit, offset = _paging(limit, offset)
        topic, template = _optional("topic", topic), _optional("template", template)
        first = offset + limit
        parts = [self.local_listeners(topic=topic, template=template, first=first)]
        params = {"first": str(first)} | {k: v for k, v in (("topic", topic), ("template", template)) if v}
        parts += [_listeners.decode(b) for b in await self._runtime().ask_others("/internal/v1/listeners", params)]
        return merge_listener_parts(parts, offset=offset, limit=limit)

    # Pending timers -----------------------------------------------------------------------

    def local_timers(self, *, overdue: bool = False, first: int = 100) -> TimerPart:
        return timer_part(self._waiting(), now=self.clock.now(), overdue=overdue, first=first)

    async def list_timers(self, *, overdue: bool = False, limit: int = 100, offset: int = 0) -> TimerPart:
        """A page of every pending timer, soonest first (``overdue``: only those due now)."""
        limit, offset = _paging(limit, offset)
        if not isinstance(overdue, bool):
            raise InvalidInput(f"overdue must be true or false, got {overdue!r}")
        first = offset + limit
        parts = [self.local_timers(overdue=overdue, first=first)]
        params = {"first": str(first), "overdue": "true" if overdue else "false"}
        parts += [_timers.decode(b) for b in await self._runtime().ask_others("/internal/v1/timers", params)]
        page = merge_timer_parts(parts, offset=offset, limit=limit)
        now = self.clock.now()  # one "now" for the whole page, whoever answered
        page.items = [msgspec.structs.replace(t, overdue_by=max(0.0, now - t.due)) for t in page.items]
        return page

    # The dashboard ------------------------------------------------------------------------

    def local_overview(self) -> OverviewPart:
        runtime = self._runtime()
        now = self.clock.now()
        stores = runtime.local_stores()
        counts: dict[tuple[str, str], int] = {}
        for store in stores:
            for template, status, n in store.status_counts():
                counts[(template, status)] = counts.get((template, status), 0) + n
        failed = InstanceQuery(status="FAILURE", updated_after=now - FAILED_WINDOW)
        waiting = list(self._waiting())
        listeners = listener_part(waiting, topic=None, template=None, first=OVERVIEW_ITEMS)
        timers = timer_part(waiting, now=now, overdue=True, first=OVERVIEW_ITEMS)
        return OverviewPart(
            at=now,
            counts=[StatusCount(t, s, n) for (t, s), n in sorted(counts.items())],
            failed_last_hour=sum(s.count_query(failed) for s in stores),
            listeners_open=listeners.total,
            oldest_listeners=listeners.items,
            timers_overdue=timers.total,
            oldest_overdue=most_overdue(timers),
            throughput=self._throughput(runtime),
            workers=0 if self.config.role == "client" else 1,  # (a client engine is no worker)
        )

    async def overview(self) -> OverviewPart:
        """The dashboard in one read: instances by template and status, failures of the last
        hour, open listeners and overdue timers (with the oldest of each), the counters since
        each worker started (summed over workers) and how many workers answered."""
        parts = [self.local_overview()]
        parts += [_overview.decode(b) for b in await self._runtime().ask_others("/internal/v1/overview", {})]
        return merge_overviews(parts, self.clock.now())

    # The workers --------------------------------------------------------------------------

    def local_worker(self) -> WorkerPart:
        """This worker as it describes itself."""
        runtime = self._runtime()
        stats = runtime.stats()
        partitions = stats.get("partitions", [0] if stats.get("running") else [])
        return WorkerPart(
            worker=runtime.worker_id, url=self.web_url, runtime="kafka" if self.config.broker else "embedded",
            version=package_version(), started=self.started_at or 0.0, partitions=sorted(partitions),
            queued=int(stats.get("queued", 0)), jobs_running=int(stats.get("jobs_running", 0)),
            timers=int(stats.get("timers", 0)), transitions=int(stats.get("transitions", 0)),
            lag=runtime.consumer_lag(),
        )  # fmt: skip

    async def workers(self) -> tuple[list[WorkerPart], list[PartitionRow] | None]:
        """Every worker that answered (this one first, unless this is a client engine, which
        is no worker), and on Kafka each partition with its owner and whether the owner
        answered and processes it."""
        runtime = self._runtime()
        parts = [self.local_worker()] if self.config.role == "worker" else []
        parts += [_worker.decode(b) for b in await runtime.ask_others("/internal/v1/worker", {})]
        found = ordered_workers(parts, runtime.worker_id)
        owners = runtime.partition_owners()
        return found, None if owners is None else partition_rows(owners, found)

    # Node statuses of a template ----------------------------------------------------------

    def local_node_counts(
        self, template: str, *, version: str | None = None, limit: int = NODE_COUNTS_DEFAULT,
        created_after: float | None = None, times: bool = False,
    ) -> NodeCountsPart:  # fmt: skip
        """The node statuses of the newest ``limit`` instances of ``template`` (and
        ``version``) this process holds, by dotted node name; ``created_after``: of those
        created at or after it only (epoch seconds). ``times``: with the counted instances'
        creation times (``NodeCountsPart.created``)."""
        query = InstanceQuery(template=template, version=version, created_after=created_after, sort="-created")
        found = self._runtime().list_local(query, limit=limit + 1, offset=0)
        nodes: dict[str, dict[str, int]] = {}
        counted = found[:limit]
        scanned = count_nodes(counted, nodes)
        created = [i.root.time_created for i in counted] if times else []
        return NodeCountsPart(scanned=scanned, truncated=len(found) > limit, nodes=nodes, created=created)

    async def node_counts(
        self, template: str, *, version: str | None = None, limit: int = NODE_COUNTS_DEFAULT
    ) -> NodeCountsPart:
        """How many nodes of each dotted name are in each status, over the newest ``limit``
        instances of ``template`` (every worker's, on Kafka). ``TemplateDoesNotExist`` for a
        template no worker registers nor has a version of.

        On Kafka each worker first counts its own newest ``limit``, with their creation times.
        If together they hold no more than ``limit``, that is the answer. Otherwise the
        creation time of the ``limit``-th newest overall is the cut, and each worker counts
        again the instances created at or after it. So a few more than ``limit`` may be
        counted (``scanned`` says how many): every instance created at the very time of the
        cut (a tie), and those created between the two rounds."""
        limit, _ = _paging(limit, 0, NODE_COUNTS_MAX)
        version = _optional("version", version)
        if not isinstance(template, str) or not await self._known_template(template):
            raise TemplateDoesNotExist(f"no template {template!r} is registered or has instances")
        runtime = self._runtime()
        path = "/internal/v1/node-counts"
        params = {"template": template, "limit": str(limit)} | ({"version": version} if version else {})
        local = self.local_node_counts(template, version=version, limit=limit, times=True)
        others = [_node_counts.decode(b) for b in await runtime.ask_others(path, params | {"times": "true"})]
        parts = [local, *others]
        if not others or (sum(p.scanned for p in parts) <= limit and not any(p.truncated for p in parts)):
            return merge_node_counts(parts)  # (one worker's newest, or every instance there is)
        # Each part holds its worker's newest ``limit``: the overall newest ``limit`` are among them.
        cut = heapq.nlargest(limit, itertools.chain.from_iterable(p.created for p in parts))[-1]
        local = self.local_node_counts(template, version=version, limit=limit, created_after=cut)
        again = params | {"created_after": repr(cut)}  # (repr: the float exactly)
        parts = [local, *(_node_counts.decode(b) for b in await runtime.ask_others(path, again))]
        merged = merge_node_counts(parts)
        merged.truncated = True  # (the first round found more than ``limit``)
        return merged

    # Inside -------------------------------------------------------------------------------

    def _waiting(self) -> Iterator[Instance]:
        for store in self._runtime().local_stores():
            yield from store.waiting_instances()

    async def _known_template(self, name: str) -> bool:
        if name in self.template_dags:
            return True
        versions: list[TemplateVersion] = await self.template_versions()
        return any(v.template == name for v in versions)

    def _throughput(self, runtime: Runtime) -> Throughput:
        transitions = int(runtime.stats().get("transitions", 0))
        if self.telemetry is None:
            return Throughput(transitions=transitions)
        metrics = self.telemetry.metrics
        ended: dict[str, float] = {}
        for (_, outcome), child in metrics.workflows_completed.children.items():
            ended[outcome] = ended.get(outcome, 0.0) + child.value
        started = sum(c.value for c in metrics.workflows_started.children.values())
        return Throughput(created=int(started), completed=int(ended.get("completed", 0.0)),
                          failed=int(ended.get("failure", 0.0)), transitions=transitions)  # fmt: skip
