"""What the web console reads besides instances: open listeners, pending timers, counts of
node statuses, and the dashboard's overview, as plain data (msgspec structs).

Each is computed from instances (their ``correlations`` and ``timers``, which mirror the
store's correlation index and timer table) and merged across partitions and workers by the
functions here, so that one worker holding everything and several workers each holding a
part give the same answer.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

import msgspec

from .instance import Instance, Node
from .status import Kind


class ListenerItem(msgspec.Struct, frozen=True, kw_only=True):
    """An open listener: a node of an instance indexed under (topic, key, value)."""

    instance: str
    template_name: str
    node: str
    task_name: str
    topic: str
    key: str
    value: str
    since: float


class TimerItem(msgspec.Struct, frozen=True, kw_only=True):
    """A pending timer of a node (``purpose``: due, timeout, max_run, retry:<job>...)."""

    instance: str
    template_name: str
    node: str
    task_name: str
    purpose: str
    due: float
    overdue_by: float = 0.0


class TopicCount(msgspec.Struct, frozen=True):
    topic: str
    count: int


class StatusCount(msgspec.Struct, frozen=True):
    template: str
    status: str
    count: int


class ListenerPart(msgspec.Struct, kw_only=True):
    """One holder's share of a listener listing: its first items in listing order (as many
    as the merged page can need), how many it has, and its counts per topic."""

    items: list[ListenerItem]
    total: int
    topics: list[TopicCount]


class TimerPart(msgspec.Struct, kw_only=True):
    items: list[TimerItem]
    total: int


class Throughput(msgspec.Struct, kw_only=True):
    """Counters since each worker started: instances started, ended COMPLETED, ended FAILURE,
    and transitions applied."""

    created: int = 0
    completed: int = 0
    failed: int = 0
    transitions: int = 0


class OverviewPart(msgspec.Struct, kw_only=True):
    """One worker's share of the overview (``merge_overviews`` adds them up)."""

    at: float
    counts: list[StatusCount]
    failed_last_hour: int
    listeners_open: int
    oldest_listeners: list[ListenerItem]
    timers_overdue: int
    oldest_overdue: list[TimerItem]
    throughput: Throughput
    workers: int = 1


class NodeCountsPart(msgspec.Struct, kw_only=True):
    scanned: int
    truncated: bool
    nodes: dict[str, dict[str, int]]
    #: When asked for: the creation times of the counted instances, newest first (from which
    #: ``ConsoleReads.node_counts`` finds the creation time of the ``limit``-th newest overall).
    created: list[float] = []


#: How many listeners and timers the overview shows.
OVERVIEW_ITEMS = 10


def since(node: Node) -> float:
    """When a listener started waiting: its submission, else its creation."""
    return node.time_submitted or node.time_created


def listeners_of(instance: Instance) -> list[ListenerItem]:
    """The instance's open listeners: the nodes it is indexed under now."""
    out: list[ListenerItem] = []
    for nid, at in instance.correlations.items():
        node = instance.nodes.get(nid)
        if node is None:
            continue
        out.append(ListenerItem(instance=instance.id, template_name=instance.template_name, node=nid,
                                task_name=node.name, topic=at.topic, key=at.key, value=at.value,
                                since=since(node)))  # fmt: skip
    return out


def timer_node(instance: Instance, key: str) -> tuple[str, str] | None:
    """(node id, purpose) of a timer key ``"<node id>:<purpose>"``. A node id may hold a
    ``:`` (the root's is the instance id) and so may a purpose (``retry:<job>``): the shortest
    prefix that names a node of the instance is its node."""
    start = 0
    while (cut := key.find(":", start)) >= 0:
        if key[:cut] in instance.nodes:
            return key[:cut], key[cut + 1 :]
        start = cut + 1
    return None


def timers_of(instance: Instance, now: float) -> list[TimerItem]:
    out: list[TimerItem] = []
    for key, due in instance.timers.items():
        found = timer_node(instance, key)
        if found is None:
            continue
        nid, purpose = found
        out.append(TimerItem(instance=instance.id, template_name=instance.template_name, node=nid,
                             task_name=instance.nodes[nid].name, purpose=purpose, due=due,
                             overdue_by=max(0.0, now - due)))  # fmt: skip
    return out


def listener_order(item: ListenerItem) -> tuple[float, str, str]:
    return item.since, item.instance, item.node


def timer_order(item: TimerItem) -> tuple[float, str, str, str]:
    return item.due, item.instance, item.node, item.purpose


def listener_part(
    instances: Iterable[Instance], *, topic: str | None, template: str | None, first: int
) -> ListenerPart:
    """The open listeners of ``instances`` that are on ``topic`` and of ``template`` (None:
    any): the ``first`` oldest, the total and the count per topic."""
    kept: list[ListenerItem] = []
    total = 0
    topics: dict[str, int] = {}
    for inst in instances:
        if template is not None and inst.template_name != template:
            continue
        for item in listeners_of(inst):
            if topic is not None and item.topic != topic:
                continue
            total += 1
            topics[item.topic] = topics.get(item.topic, 0) + 1
            kept.append(item)
    return ListenerPart(items=heapq.nsmallest(first, kept, key=listener_order), total=total,
                        topics=[TopicCount(t, n) for t, n in sorted(topics.items())])  # fmt: skip


def timer_part(instances: Iterable[Instance], *, now: float, overdue: bool, first: int) -> TimerPart:
    """The pending timers of ``instances`` (``overdue``: only those due before ``now``): the
    ``first`` soonest and the total."""
    kept: list[TimerItem] = []
    for inst in instances:
        kept.extend(t for t in timers_of(inst, now) if not overdue or t.due < now)
    return TimerPart(items=heapq.nsmallest(first, kept, key=timer_order), total=len(kept))


def merge_listener_parts(parts: Iterable[ListenerPart], *, offset: int, limit: int) -> ListenerPart:
    """One page of several holders' listings, as one holder of them all would list it. A
    listener listed twice (its partition just moved) is listed once."""
    items: dict[tuple[str, str], ListenerItem] = {}
    total = 0
    topics: dict[str, int] = {}
    for part in parts:
        total += part.total
        for tc in part.topics:
            topics[tc.topic] = topics.get(tc.topic, 0) + tc.count
        for item in part.items:
            items.setdefault((item.instance, item.node), item)
    ordered = sorted(items.values(), key=listener_order)
    return ListenerPart(items=ordered[offset : offset + limit], total=total,
                        topics=[TopicCount(t, n) for t, n in sorted(topics.items())])  # fmt: skip


def merge_timer_parts(parts: Iterable[TimerPart], *, offset: int, limit: int) -> TimerPart:
    items: dict[tuple[str, str, str], TimerItem] = {}
    total = 0
    for part in parts:
        total += part.total
        for item in part.items:
            items.setdefault((item.instance, item.node, item.purpose), item)
    ordered = sorted(items.values(), key=timer_order)
    return TimerPart(items=ordered[offset : offset + limit], total=total)


def most_overdue(part: TimerPart) -> list[TimerItem]:
    """The soonest-due overdue timers are the most overdue ones."""
    return part.items[:OVERVIEW_ITEMS]


def merge_overviews(parts: list[OverviewPart], at: float) -> OverviewPart:
    counts: dict[tuple[str, str], int] = {}
    throughput = Throughput()
    for part in parts:
        for c in part.counts:
            counts[(c.template, c.status)] = counts.get((c.template, c.status), 0) + c.count
        throughput.created += part.throughput.created
        throughput.completed += part.throughput.completed
        throughput.failed += part.throughput.failed
        throughput.transitions += part.throughput.transitions
    listeners = merge_listener_parts(
        (ListenerPart(items=p.oldest_listeners, total=p.listeners_open, topics=[]) for p in parts),
        offset=0, limit=OVERVIEW_ITEMS,
    )  # fmt: skip
    timers = merge_timer_parts(
        (TimerPart(items=p.oldest_overdue, total=p.timers_overdue) for p in parts), offset=0, limit=OVERVIEW_ITEMS
    )
    return OverviewPart(
        at=at,
        counts=[StatusCount(t, s, n) for (t, s), n in sorted(counts.items())],
        failed_last_hour=sum(p.failed_last_hour for p in parts),
        listeners_open=listeners.total,
        oldest_listeners=listeners.items,
        timers_overdue=timers.total,
        oldest_overdue=[msgspec.structs.replace(t, overdue_by=max(0.0, at - t.due)) for t in timers.items],
        throughput=throughput,
        workers=sum(p.workers for p in parts),
    )


def count_nodes(instances: Iterable[Instance], into: dict[str, dict[str, int]]) -> int:
    """Add the status of every node of ``instances`` to ``into`` (dotted node name -> status
    -> count) and return how many instances were counted. Nodes are keyed by ``Node.name``,
    the dotted name the template's nodes and a migration's ``node_map`` use; the root (the
    instance itself) is left out."""
    n = 0
    for inst in instances:
        n += 1
        for node in inst.nodes.values():
            if node.kind == Kind.ROOT.value:
                continue
            by_status = into.get(node.name)
            if by_status is None:
                by_status = into[node.name] = {}
            by_status[node.status] = by_status.get(node.status, 0) + 1
    return n


def merge_node_counts(parts: Iterable[NodeCountsPart]) -> NodeCountsPart:
    nodes: dict[str, dict[str, int]] = {}
    scanned = 0
    truncated = False
    for part in parts:
        scanned += part.scanned
        truncated = truncated or part.truncated
        for name, by_status in part.nodes.items():
            into = nodes.setdefault(name, {})
            for status, n in by_status.items():
                into[status] = into.get(status, 0) + n
    return NodeCountsPart(scanned=scanned, truncated=truncated, nodes=dict(sorted(nodes.items())))
