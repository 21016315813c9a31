"""The lifecycle log: what each commit did to workflows, for operators (logger
``daggerflow.lifecycle``).

Run by the commit observer after each commit, so it reports only what is durable. It
compares each changed instance with its state before the batch (``PostCommit.before``):

========================  =======  =======================================================
event                     level    when
========================  =======  =======================================================
``workflow_started``      INFO     the root left NOT_STARTED
``workflow_completed``    INFO     the root became COMPLETED
``workflow_failed``       WARNING  the root became FAILURE (``task``, ``error``: the first
                                   failed task)
``workflow_stopped``      WARNING  the root became STOPPED (or SKIPPED)
``task_failed``           WARNING  a task's user code raised or it failed otherwise; with
                                   ``retrying`` when a retry is scheduled
``task_timeout``          WARNING  a task (or a process's max_run_duration) timed out
``dead_letter``           WARNING  a message went to the dead-letter topic
========================  =======  =======================================================

Every record carries ``event``, ``instance_id``, ``template``, ``task`` and ``status`` as
``extra=`` fields (``error`` when there is one; dead letters: ``topic``, ``offset``,
``consumer``, ``error``). The traceback of a failed task is stored on its node (REST:
``GET /api/v1/instances/{id}``) and logged at DEBUG as ``traceback``: at WARNING it would
put dozens of lines per failure into production logs.

Cost: ``isEnabledFor`` is checked once per commit; with WARNING off nothing runs, with
INFO off the workflow starts and completions are not even formatted.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

from ..model.instance import Instance, Node
from ..model.records import Outgoing
from ..model.status import TERMINAL_STATUSES

log = logging.getLogger("daggerflow.lifecycle")

_TIMEOUT_PREFIXES = ("timed out after ", "max_run_duration of ")


def log_commit(
    changed: dict[str, Instance | None],
    deleted: dict[str, Instance],
    before: dict[str, Instance | None],
    appends: list[Outgoing],
    dead_letter_topic: str | None,
) -> None:
    if not log.isEnabledFor(logging.WARNING):
        return
    info = log.isEnabledFor(logging.INFO)
    for iid, inst in changed.items():
        if inst is None:
            inst = deleted.get(iid)
            if inst is None:
                continue
        _instance(inst, before.get(iid), info)
    if dead_letter_topic is not None:
        for out in appends:
            if out.topic == dead_letter_topic:
                _dead_letter(out.topic, out.value)


def _fields(event: str, inst: Instance, node: Node, **more: Any) -> dict[str, Any]:
    return {
        "event": event,
        "instance_id": inst.id,
        "template": inst.template_name,
        "task": node.name,
        "status": node.status,
        **more,
    }


def _instance(inst: Instance, prev: Instance | None, info: bool) -> None:
    root = inst.root
    was = prev.root.status if prev is not None else "NOT_STARTED"
    status = root.status
    if info and was == "NOT_STARTED" and status != was:
        log.info("workflow %s (%s) started", inst.id, inst.template_name,
                 extra=_fields("workflow_started", inst, root))  # fmt: skip
    prev_nodes = prev.nodes if prev is not None else {}
    for node in inst.nodes.values():
        # A node whose job ended with an error in this batch (a job ran: ``job_seq`` moved
        # or a job was in flight), or that got a new error while waiting (a timeout). A
        # retry in flight has ``job`` set: it is reported when it ends.
        if node.error is None or node.job is not None or node is root:
            continue
        old = prev_nodes.get(node.id)
        if old is not None and old.job is None and old.job_seq == node.job_seq and old.error == node.error:
            continue
        _task_event(inst, node)
    if status == was or status not in TERMINAL_STATUSES:
        return
    if status == "COMPLETED":
        if info:
            log.info("workflow %s (%s) completed", inst.id, inst.template_name,
                     extra=_fields("workflow_completed", inst, root))  # fmt: skip
    elif status == "FAILURE":
        failed = _first_failed(inst)
        task, error = (failed.name, failed.error) if failed is not None else (root.name, root.error)
        log.warning("workflow %s (%s) failed in task %s: %s", inst.id, inst.template_name, task, error,
                    extra={**_fields("workflow_failed", inst, root), "task": task, "error": error})  # fmt: skip
    else:
        log.warning("workflow %s (%s) %s", inst.id, inst.template_name, status.lower(),
                    extra=_fields("workflow_stopped", inst, root))  # fmt: skip


def _task_event(inst: Instance, node: Node) -> None:
    error = node.error or ""
    if error.startswith(_TIMEOUT_PREFIXES):
        log.warning("task %s of workflow %s (%s) %s: %s", node.name, inst.id, inst.template_name,
                    node.status, error, extra=_fields("task_timeout", inst, node, error=error))  # fmt: skip
        return
    retrying = node.status not in TERMINAL_STATUSES
    what = f"failed (attempt {node.attempts}, retrying)" if retrying else "failed"
    log.warning("task %s of workflow %s (%s) %s: %s", node.name, inst.id, inst.template_name, what, error,
                extra=_fields("task_failed", inst, node, error=error, attempts=node.attempts,
                              retrying=retrying))  # fmt: skip
    if node.traceback and log.isEnabledFor(logging.DEBUG):
        log.debug("task %s of workflow %s: traceback", node.name, inst.id,
                  extra=_fields("task_traceback", inst, node, traceback=node.traceback))  # fmt: skip


def _first_failed(inst: Instance) -> Node | None:
    for node in inst.nodes.values():
        if node.status == "FAILURE" and node.error and node is not inst.root:
            return node
    return None


def dead_letters_committed(records: Iterable[tuple[str, str | bytes | None]], dead_letter_topic: str) -> None:
    """Log the dead letters among ``(topic, value)`` records just committed, for the loops
    that commit without the processor (Kafka's routed listener topics and agents)."""
    if log.isEnabledFor(logging.WARNING):
        for topic, value in records:
            if topic == dead_letter_topic:
                _dead_letter(topic, value)


def _dead_letter(dead_letter_topic: str, value: str | bytes | None) -> None:
    try:
        letter = json.loads(value) if isinstance(value, (str, bytes)) else {}
    except ValueError:
        letter = {}
    if not isinstance(letter, dict):
        letter = {}
    topic, offset, consumer = letter.get("topic"), letter.get("offset"), letter.get("consumer")
    error = letter.get("error")
    log.warning("message %s@%s dead-lettered by %s to %s: %s", topic, offset, consumer, dead_letter_topic, error,
                extra={"event": "dead_letter", "topic": topic, "offset": offset, "consumer": consumer,
                       "dead_letter_topic": dead_letter_topic, "error": error})  # fmt: skip
