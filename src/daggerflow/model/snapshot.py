"""The JSON shape of an instance for the REST API and the update topic.

It keeps Dagger's field names (``task_name``, ``task_type``, ``status: {code, value}``,
``runtime_parameters``, ``tasks`` keyed by id, ``update_count``) with plain JSON values:
ids are strings and there are no type tags.
"""

from __future__ import annotations

from typing import Any

from .console import timer_node
from .instance import Instance, Node
from .status import task_type_of


def node_snapshot(node: Node) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": node.id,
        "task_name": node.name,
        "task_type": task_type_of(node.kind),
        "kind": node.kind,
        "type_name": node.type_name,
        "parent_id": node.parent,
        "status": {"code": node.status, "value": node.status},
        "time_created": node.time_created,
        "time_submitted": node.time_submitted,
        "time_completed": node.time_completed,
        "next_dags": list(node.next),
        "root_dag": node.children[0] if node.children else None,
        "attempts": node.attempts,
    }
    if node.kind == "parallel":
        out["parallel_child_task_list"] = list(node.children)
        out["operator_type"] = node.operator
    if node.process_name is not None:
        out["process_name"] = node.process_name
    if node.topic is not None:
        out["topic"] = node.topic
    if node.correlatable_key is not None:
        out["correlatable_key"] = node.correlatable_key
    if node.time_to_execute is not None:
        out["time_to_execute"] = node.time_to_execute
    if node.error is not None:
        out["error"] = node.error
        out["traceback"] = node.traceback
    return out


def snapshot(instance: Instance) -> dict[str, Any]:
    root = instance.root
    out = node_snapshot(root)
    out.update(
        {
            "template_name": instance.template_name,
            "template_version": instance.template_version,
            "partition_key_lookup": instance.partition_key_lookup,
            "runtime_parameters": instance.runtime_parameters,
            "update_count": instance.update_count,
            "lastupdated": instance.lastupdated,
            "tasks": {nid: node_snapshot(n) for nid, n in instance.nodes.items() if nid != instance.id},
        }
    )
    return out


def rest_snapshot(instance: Instance) -> dict[str, Any]:
    """``snapshot`` plus what a client of the REST API reads to show a workflow: each indexed
    listener's ``correlation_value``, each node's pending ``timers`` and the instance's
    ``history_seq``. Not on the update topic: that snapshot is made for every change."""
    out = snapshot(instance)
    out["history_seq"] = instance.history_seq
    for nid, at in instance.correlations.items():
        node = out if nid == instance.id else out["tasks"].get(nid)
        if node is not None:
            node["correlation_value"] = at.value
    for key, due in instance.timers.items():
        found = timer_node(instance, key)
        if found is None:
            continue
        nid, purpose = found
        node = out if nid == instance.id else out["tasks"][nid]
        node.setdefault("timers", []).append({"purpose": purpose, "due": due})
    return out


def summary(instance: Instance) -> dict[str, Any]:
    """A short form for listings: no task tree."""
    root = instance.root
    return {
        "id": instance.id,
        "template_name": instance.template_name,
        "status": {"code": root.status, "value": root.status},
        "time_created": root.time_created,
        "time_completed": root.time_completed,
        "lastupdated": instance.lastupdated,
        "update_count": instance.update_count,
    }
