"""Moving a running instance to another version of its template (pure).

The caller builds the target version's node tree for the instance (``Migrate.target``, every
node NOT_STARTED, from the template registered in the calling process); ``plan`` carries the
instance's state over onto it: a node takes the state of the old node of the same name (or
the one ``node_map`` names), and keeps that node's id, so that its timers ("<node id>:..."),
its correlation index entries and any stored job follow it unchanged. New nodes stay
NOT_STARTED; old nodes without a counterpart disappear.

Refused, with the reason, where the move would lose or break work: user code of the
instance is running (its outcome would land on a different tree), a waiting listener has no
counterpart (its message would find nothing), or the workflow is at a node the target has
no counterpart for (or one of a different kind).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..model.instance import Instance, Node
from .events import Migrate
from .transitions import (
    EXECUTING,
    K_LISTENER,
    K_PARALLEL,
    K_ROOT,
    K_SENSOR,
    NOT_STARTED,
    Context,
    Transition,
    _Walk,
)

_WAITING = frozenset({K_LISTENER, K_SENSOR})


@dataclass
class Plan:
    """The migrated instance, or why there is none."""

    instance: Instance | None
    refusal: str | None = None


def _refused(reason: str) -> Plan:
    return Plan(None, reason)


def counterparts(old: Instance, new: Instance, node_map: dict[str, str]) -> dict[str, str]:
    """Old node id -> new node id: by name (after ``node_map``), the roots by id. A name that
    occurs several times (a successor shared by branches) is paired in creation order."""
    by_name: dict[str, list[str]] = {}
    for node in new.nodes.values():
        if node.kind != K_ROOT:
            by_name.setdefault(node.name, []).append(node.id)
    pairs = {old.id: new.id}
    for node in old.nodes.values():
        if node.kind == K_ROOT:
            continue
        candidates = by_name.get(node_map.get(node.name, node.name))
        if candidates:
            pairs[node.id] = candidates.pop(0)
    return pairs


def plan(old: Instance, target: Instance, node_map: dict[str, str], from_version: str | None) -> Plan:
    """``old`` moved onto ``target`` (neither is changed), or the refusal."""
    if target.template_name != old.template_name:
        return _refused(f"workflow {old.id} is of template {old.template_name!r}, not {target.template_name!r}")
    if from_version is not None and old.template_version != from_version:
        return _refused(f"workflow {old.id} is at version {old.template_version}, not {from_version}")
    if old.template_version == target.template_version:
        return _refused(f"workflow {old.id} is at version {target.template_version} already")
    if old.is_terminal():
        return _refused(f"workflow {old.id} is {old.status}: only a running workflow can be migrated")
    names = {n.name for n in old.nodes.values()}
    target_names = {n.name for n in target.nodes.values()}
    for source, dest in node_map.items():
        if source not in names:
            return _refused(f"node_map: workflow {old.id} has no node {source!r}")
        if dest not in target_names:
            return _refused(f"node_map: version {target.template_version} has no node {dest!r}")
    pairs = counterparts(old, target, node_map)
    for node in old.nodes.values():
        if node.job is not None:
            return _refused(f"task {node.name!r} is running its {node.job}(): wait for it to end")
        indexed = node.id in old.correlations
        if (node.status == NOT_STARTED and not indexed) or node.is_terminal():
            continue
        dest_id = pairs.get(node.id)
        if dest_id is None:
            if node.kind in _WAITING:
                return _refused(
                    f"listener {node.name!r} is waiting and version {target.template_version} has no "
                    "counterpart for it (name one with node_map)"
                )
            return _refused(
                f"the workflow is at {node.name!r} ({node.status}), which version "
                f"{target.template_version} has no counterpart for (name one with node_map)"
            )
        counterpart = target.nodes[dest_id]
        if counterpart.kind != node.kind:
            return _refused(
                f"node {node.name!r} is a {node.kind} and its counterpart {counterpart.name!r} in version "
                f"{target.template_version} a {counterpart.kind}"
            )
    return Plan(_carried_over(old, target, pairs))


def _carried_over(old: Instance, target: Instance, pairs: dict[str, str]) -> Instance:
    # Target ids of nodes that have a counterpart become the old ids (timers, index entries
    # and jobs are keyed by node id); the others keep their fresh ids.
    rename = {new_id: old_id for old_id, new_id in pairs.items()}

    def ids(values: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(rename.get(v, v) for v in values)

    def one(value: str | None) -> str | None:
        return None if value is None else rename.get(value, value)

    nodes: dict[str, Node] = {}
    for node in target.nodes.values():
        nid = rename.get(node.id, node.id)
        moved = Node(
            id=nid,
            name=node.name,
            kind=node.kind,
            parent=one(node.parent),
            type_name=node.type_name,
            next=ids(node.next),
            children=ids(node.children),
            process_name=node.process_name,
            time_created=node.time_created,
            topic=node.topic,
            correlatable_key=node.correlatable_key,
            allow_skip_to=node.allow_skip_to,
            reprocess_on_message=node.reprocess_on_message,
            match_only_one=node.match_only_one,
            time_to_execute=node.time_to_execute,
            time_to_force_complete=node.time_to_force_complete,
            interval_execute_period=node.interval_execute_period,
            monitored=one(node.monitored),
            operator=node.operator,
            max_run_duration=node.max_run_duration,
            monitor=one(node.monitor),
            retry=node.retry,
            continue_on_failure=node.continue_on_failure,
            timeout=node.timeout,
            timeout_status=node.timeout_status,
        )
        source = old.nodes.get(nid) if node.id in rename else None
        if source is not None:
            moved.status = source.status
            moved.time_created = source.time_created
            moved.time_submitted = source.time_submitted
            moved.time_completed = source.time_completed
            moved.attempts = source.attempts
            moved.error = source.error
            moved.traceback = source.traceback
            moved.job_seq = source.job_seq
            moved.inbox = source.inbox
            moved.halted_by_failure = source.halted_by_failure
            if source.status != NOT_STARTED:
                # Its timers were armed from these times: keep them in step.
                moved.time_to_execute = source.time_to_execute
                moved.time_to_force_complete = source.time_to_force_complete
                moved.interval_execute_period = source.interval_execute_period
        nodes[nid] = moved
    kept = {k: due for k, due in old.timers.items() if k.split(":", 1)[0] in nodes}
    return Instance(
        id=old.id,
        template_name=target.template_name,
        template_version=target.template_version,
        nodes=nodes,
        runtime_parameters=old.runtime_parameters,
        partition_key_lookup=old.partition_key_lookup,
        update_count=old.update_count,
        lastupdated=old.lastupdated,
        correlations=dict(old.correlations),
        timers=kept,
        history_seq=old.history_seq,
        history_flushed=old.history_flushed,
        history_rows=old.history_rows,
        history_tail=old.history_tail,
        trace=old.trace,
        # The target version's declared search attributes: the batch recomputes the search
        # rows after a Migrate, so the instance is then found by what the new version declares.
        search_keys=target.search_keys,
    )


def apply_migrate(instance: Instance | None, event: Migrate, ctx: Context) -> Transition:
    """Apply a ``Migrate``: the instance replaced by its migrated tree, the correlation index
    and the timers moved by the usual diff (``_Walk.finish_transition``)."""
    if instance is None:
        return Transition(None, error="unknown workflow instance")
    goal = event.target
    if ctx.registered_version is not None:
        here = ctx.registered_version(goal.template_name)
        if here != goal.template_version:
            return Transition(instance, error=(
                f"version {goal.template_version} of {goal.template_name!r} is not registered on the worker "
                f"that owns workflow {instance.id} (it registers {here or 'none'}): deploy that code there first"
            ))  # fmt: skip
    result = plan(instance, event.target, dict(event.node_map), event.from_version)
    if result.instance is None:
        return Transition(instance, error=result.refusal)
    moved = result.instance
    kept_timers = moved.timers
    moved.timers = dict(instance.timers)  # the walk diffs against the old ones
    walk = _Walk(moved, ctx)
    moved.timers = kept_timers
    walk.changed = True
    # A new member of a parallel the workflow is in would never be reached: start it now.
    for node in list(moved.nodes.values()):
        parent = moved.nodes.get(node.parent or "")
        if (
            node.status == NOT_STARTED
            and node.id not in instance.nodes
            and parent is not None
            and parent.kind == K_PARALLEL
            and parent.status == EXECUTING
            and node.id in parent.children
        ):
            walk.start(node)
    return walk.finish_transition()
