"""The graph of a workflow, laid out for the console's server-rendered SVG.

Pure: from a structure (an instance's snapshot, or a template's node list, both read as
``Item``\\ s linked by ``children`` and ``next``) to positioned boxes, group frames and edges.
The console draws it without a graph service and without layout code in the browser.

The flow runs top to bottom. A chain (a process's tasks, the workflow's processes) is a
column whose elements are centred on one axis, so its edges are straight. What runs side by
side sits side by side: the members of a parallel node, and the branches of a decision (an
element with more than one successor), each branch a column of its own. A process, a
parallel node or a dynamic process is a group: a frame around what it holds, with a label.
Nodes that no chain reaches (a process's monitor, which has no parent) are laid out after
the flow, so every node of the structure is drawn once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Kinds drawn as a frame around their parts rather than as a box.
GROUP_KINDS = frozenset({"root", "process", "parallel", "dynamic"})
TERMINAL = frozenset({"COMPLETED", "FAILURE", "SKIPPED", "STOPPED"})

NODE_W = 200
NODE_H = 60
GAP_X = 18  # between side-by-side columns
GAP_Y = 28  # between the elements of a chain (room for the arrow)
PAD = 10  # inside a group's frame
HEAD = 24  # a group's label
MARGIN = 8
LABEL_CHARS = 24
#: Characters of a box's third line, from 10 px inside its left edge to 10 px inside its
#: right one: 11.5 px regular text at up to 0.57 em a character (counts lines of every mix
#: of statuses, measured in Chromium with DejaVu Sans, a wide face: 176 px at most of 180).
FACTS_CHARS = 27
CHAR_EM = 0.57


@dataclass(frozen=True)
class Item:
    """One node as the layout reads it."""

    id: str
    name: str
    kind: str
    status: str | None = None
    children: tuple[str, ...] = ()
    next: tuple[str, ...] = ()
    attempts: int = 0
    #: How long it ran, once it ended (None when it did not run or has not ended).
    seconds: float | None = None
    #: When it started, while it has not ended.
    since: float | None = None
    operator: str | None = None
    #: A template's node: how many instances have it in each status.
    counts: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Structure:
    items: Mapping[str, Item]
    #: The first node of each top-level chain, in order.
    start: tuple[str, ...]


@dataclass(frozen=True)
class Box:
    item: Item
    x: int
    y: int
    w: int
    h: int
    label: str
    #: For the first node of a decision's branch: "chosen", "skipped" or "open" (not decided yet).
    branch: str | None = None
    #: A template's node: the counts its box shows (``counts_line``) and what it leaves out.
    facts: tuple[tuple[str, str], ...] = ()
    more: str = ""


@dataclass(frozen=True)
class Group:
    item: Item
    x: int
    y: int
    w: int
    h: int
    label: str
    branch: str | None = None


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    points: tuple[tuple[int, int], ...]
    #: "next", or for a decision's branch "chosen", "skipped" or "open".
    kind: str = "next"

    @property
    def path(self) -> str:
        return " ".join(f"{x},{y}" for x, y in self.points)


@dataclass(frozen=True)
class Graph:
    width: int
    height: int
    boxes: tuple[Box, ...]
    groups: tuple[Group, ...]
    edges: tuple[Edge, ...]

    def ids(self) -> set[str]:
        return {b.item.id for b in self.boxes} | {g.item.id for g in self.groups}


# The tree the layout measures: a chain is a column of elements, optionally ending in a fork
# (a decision's branches); a row is columns side by side; an element is a box or a group.


@dataclass
class _Element:
    item: Item
    inner: _Row | None = None  # a group's content
    size: tuple[int, int] = (0, 0)


@dataclass
class _Chain:
    elements: list[_Element]
    fork: _Row | None = None
    size: tuple[int, int] = (0, 0)


@dataclass
class _Row:
    chains: list[_Chain]
    #: The decision whose branches these are (None: a parallel's members, or top-level chains).
    decision: Item | None = None
    size: tuple[int, int] = (0, 0)


class _Builder:
    def __init__(self, items: Mapping[str, Item]) -> None:
        self.items = items
        self.seen: set[str] = set()

    def chain(self, start: str) -> _Chain:
        elements: list[_Element] = []
        fork: _Row | None = None
        at: str | None = start
        while at is not None and at in self.items and at not in self.seen:
            self.seen.add(at)
            item = self.items[at]
            elements.append(self.element(item))
            successors = [n for n in item.next if n in self.items and n not in self.seen]
            at = None
            if len(item.next) == 1:
                at = successors[0] if successors else None
            elif successors:
                fork = _Row([self.chain(n) for n in successors], decision=item)
        return _Chain(elements, fork)

    def element(self, item: Item) -> _Element:
        if item.kind not in GROUP_KINDS:
            return _Element(item)
        chains = [self.chain(c) for c in item.children if c in self.items and c not in self.seen]
        return _Element(item, _Row([c for c in chains if c.elements]))

    def rest(self, order: Iterable[str]) -> list[_Chain]:
        """Chains of the nodes no chain reached: parentless ones first, so that a group
        left out takes its parts with it."""
        ids = list(order)
        parents = {c: i.id for i in self.items.values() for c in (*i.children, *i.next)}
        first = [n for n in ids if parents.get(n) not in self.items]
        chains = []
        for nid in [*first, *ids]:
            if nid not in self.seen:
                chains.append(self.chain(nid))
        return chains


def _measure_row(row: _Row) -> tuple[int, int]:
    sizes = [_measure_chain(c) for c in row.chains]
    width = sum(w for w, _ in sizes) + GAP_X * max(0, len(sizes) - 1)
    row.size = (width, max((h for _, h in sizes), default=0))
    return row.size


def _measure_chain(chain: _Chain) -> tuple[int, int]:
    sizes = [_measure_element(e) for e in chain.elements]
    if chain.fork is not None:
        sizes.append(_measure_row(chain.fork))
    width = max((w for w, _ in sizes), default=0)
    chain.size = (width, sum(h for _, h in sizes) + GAP_Y * max(0, len(sizes) - 1))
    return chain.size


def _measure_element(element: _Element) -> tuple[int, int]:
    if element.inner is None:
        element.size = (NODE_W, NODE_H)
    else:
        w, h = _measure_row(element.inner)
        element.size = (max(w, NODE_W) + 2 * PAD, HEAD + h + PAD + (PAD if h else 0))
    return element.size


def short_label(name: str, limit: int = LABEL_CHARS) -> str:
    """The last part of a dotted name, cut to ``limit`` characters."""
    last = name.rsplit(".", 1)[-1] or name
    return last if len(last) <= limit else last[: limit - 1] + "\u2026"


def compact(n: int) -> str:
    """A count in four characters at most (below 10^15): 999, 1.2k, 12k, 1.2M; the node's details
    panel has it exact."""
    if n < 1000:
        return str(n)
    value = float(n)
    for unit in "kMGT":
        value /= 1000
        tenths = f"{value:.1f}"
        if float(tenths) < 10:
            return tenths.removesuffix(".0") + unit
        whole = f"{value:.0f}"
        if len(whole) <= 3:  # (999.6k rounds to 1000k: the next unit writes it 1M)
            return whole + unit
    return f"{value:.0f}T"


def facts_chars(facts: Sequence[tuple[str, str]], more: str) -> int:
    """How many characters the template writes for a counts line: each entry as "<icon>
    <text>", then ``more``, one space apart (it puts two, which SVG shows as one)."""
    parts = [2 + len(text) for _, text in facts] + ([len(more)] if more else [])
    return sum(parts) + max(0, len(parts) - 1)


def counts_line(counts: Mapping[str, int], limit: int = FACTS_CHARS) -> tuple[tuple[tuple[str, str], ...], str]:
    """What a template's box shows of its instances per status, in ``limit`` characters:
    (status, "12 completed") entries, the largest counts first (ties by status), as many as
    fit, then "+N more" for the N statuses left out (the node's details panel lists all). If
    not even the largest fits with its word beside "+N more", it is shown as its number alone."""
    ordered = sorted(counts.items(), key=lambda c: (-c[1], c[0]))
    entries = [(status, f"{compact(n)} {status.replace('_', ' ').lower()}") for status, n in ordered]
    for shown in range(len(entries), 0, -1):
        left = len(entries) - shown
        more = f"+{left} more" if left else ""
        if facts_chars(entries[:shown], more) <= limit:
            return tuple(entries[:shown]), more
    if not entries:
        return (), ""
    first = (ordered[0][0], compact(ordered[0][1]))
    return (first,), (f"+{len(entries) - 1} more" if len(entries) > 1 else "")


def group_label(item: Item) -> str:
    label = short_label(item.name, 40)
    if item.kind == "parallel":
        return f"{label} \u00b7 parallel{f' ({item.operator})' if item.operator else ''}"
    if item.kind == "dynamic":
        return f"{label} \u00b7 dynamic"
    return label


def branch_state(decision: Item, head: Item) -> str:
    if decision.status != "COMPLETED":
        return "open"
    return "skipped" if head.status == "SKIPPED" else "chosen"


class _Placer:
    def __init__(self) -> None:
        self.boxes: list[Box] = []
        self.groups: list[Group] = []
        self.edges: list[Edge] = []

    def row(self, row: _Row, x: int, y: int, width: int) -> list[tuple[_Chain, int, int]]:
        """Place a row centred in ``width``; the top centre of each of its columns."""
        left = x + (width - row.size[0]) // 2
        tops = []
        for chain in row.chains:
            branch = (
                branch_state(row.decision, chain.elements[0].item)
                if row.decision and chain.elements
                else None
            )
            top = self.chain(chain, left, y, chain.size[0], branch)
            tops.append((chain, *top))
            left += chain.size[0] + GAP_X
        return tops

    def chain(self, chain: _Chain, x: int, y: int, width: int, branch: str | None = None) -> tuple[int, int]:
        """Place a chain's column; returns its top centre."""
        centre, top = x + width // 2, y
        previous: tuple[str, int] | None = None  # (id, bottom y)
        for i, element in enumerate(chain.elements):
            w, h = element.size
            self.element(element, centre - w // 2, y, branch if i == 0 else None)
            if previous is not None:
                self.edges.append(Edge(previous[0], element.item.id, ((centre, previous[1]), (centre, y))))
            previous = (element.item.id, y + h)
            y += h + GAP_Y
        if chain.fork is not None and previous is not None:
            for column, cx, cy in self.row(chain.fork, x, y, width):
                head = column.elements[0].item
                kind = branch_state(chain.fork.decision, head) if chain.fork.decision else "next"
                mid = previous[1] + GAP_Y // 2
                points = ((centre, previous[1]), (centre, mid), (cx, mid), (cx, cy))
                self.edges.append(
                    Edge(previous[0], head.id, points if cx != centre else (points[0], points[3]), kind)
                )
        return centre, top

    def element(self, element: _Element, x: int, y: int, branch: str | None) -> None:
        w, h = element.size
        item = element.item
        if element.inner is None:
            facts, more = counts_line(item.counts)
            self.boxes.append(Box(item, x, y, w, h, short_label(item.name), branch, facts, more))
            return
        self.groups.append(Group(item, x, y, w, h, group_label(item), branch))
        self.row(element.inner, x + PAD, y + HEAD, w - 2 * PAD)


def layout(structure: Structure) -> Graph:
    builder = _Builder(structure.items)
    main = _Row([builder.chain(s) for s in structure.start])
    rest = _Row(builder.rest(structure.items))
    placer = _Placer()
    width, height = _measure_row(main)
    rest_w, rest_h = _measure_row(rest)
    total_w = max(width, rest_w)
    placer.row(main, MARGIN, MARGIN, total_w)
    if rest.chains:
        placer.row(rest, MARGIN, MARGIN + height + (GAP_Y * 2 if height else 0), total_w)
        height += rest_h + (GAP_Y * 2 if height else 0)
    return Graph(
        width=total_w + 2 * MARGIN,
        height=height + 2 * MARGIN,
        boxes=tuple(placer.boxes),
        groups=tuple(placer.groups),
        edges=tuple(placer.edges),
    )


# From the API's shapes ----------------------------------------------------------------


def _status_of(node: Mapping[str, Any]) -> str | None:
    status = node.get("status")
    if isinstance(status, Mapping):
        return str(status.get("code", "")) or None
    return str(status) if status else None


def _times(node: Mapping[str, Any], status: str | None) -> tuple[float | None, float | None]:
    """(seconds it ran, when it started) of a snapshot node."""
    started = float(node.get("time_submitted") or 0)
    ended = float(node.get("time_completed") or 0)
    if status in TERMINAL:
        return (ended - started if started and ended >= started else None), None
    if status in (None, "NOT_STARTED"):
        return None, None
    return None, started or float(node.get("time_created") or 0) or None


def snapshot_item(node: Mapping[str, Any]) -> Item:
    status = _status_of(node)
    seconds, since = _times(node, status)
    if node.get("kind") == "parallel":
        children = tuple(node.get("parallel_child_task_list") or ())
    else:
        children = (node["root_dag"],) if node.get("root_dag") else ()
    return Item(
        id=str(node["id"]),
        name=str(node.get("task_name", node["id"])),
        kind=str(node.get("kind", "")),
        status=status,
        children=children,
        next=tuple(node.get("next_dags") or ()),
        attempts=int(node.get("attempts") or 0),
        seconds=seconds,
        since=since,
        operator=node.get("operator_type"),
    )


def from_snapshot(snapshot: Mapping[str, Any]) -> Structure:
    """An instance as the API's snapshot gives it: the workflow (the root) is not drawn, its
    processes are the top-level chain."""
    tasks: Mapping[str, Mapping[str, Any]] = snapshot.get("tasks") or {}
    items = {nid: snapshot_item(node) for nid, node in tasks.items()}
    root_dag = snapshot.get("root_dag")
    return Structure(items, (root_dag,) if root_dag in items else ())


def from_template(
    nodes: Sequence[Mapping[str, Any]], counts: Mapping[str, Mapping[str, int]] | None = None
) -> Structure:
    """A template's nodes as ``GET /api/v1/templates`` lists them (dotted names, each with its
    ``parent``, ``next`` and ``children``), with instances per node status if known."""
    counts = counts or {}
    items: dict[str, Item] = {}
    for node in nodes:
        name = str(node["name"])
        items[name] = Item(
            id=name,
            name=name,
            kind=str(node.get("kind", "")),
            children=tuple(node.get("children") or ()),
            next=tuple(node.get("next") or ()),
            operator=node.get("operator"),
            counts=dict(counts.get(name, {})),
        )
    linked = {c for i in items.values() for c in (*i.children, *i.next)}
    start = tuple(
        n for n, node in zip(items, nodes, strict=True)
        if not node.get("parent") and n not in linked and node.get("kind") != "monitor"
    )  # fmt: skip
    return Structure(items, start)
