"""Operating running workflows: retry, skip, complete, patch parameters. A part of the
facade (``Dagger`` inherits it). Each action is an event sent like ``stop_instance``'s: the
owner of the instance applies it through the pipeline (single writer, exactly-once on
Kafka); refused in the caller's words before anything is sent where the caller can tell.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import InvalidInput, NotSerializable, TaskInvalidState, TooLarge, UnknownInstance
from .machine.events import Complete, PatchParameters, Retry, Skip
from .machine.repair import refusal
from .model.ids import id_problem
from .model.instance import Instance, encode_params
from .model.values import params_problem
from .pipeline.ports import Runtime
from .tasks import ITemplateDAGInstance


class Operations:
    view: Callable[..., ITemplateDAGInstance[Any, Any]]
    _runtime: Callable[[], Runtime]
    _limits: Any

    async def retry(
        self, instance_id: Any, runtime_parameters: dict[str, Any] | None = None, *, actor: str | None = None
    ) -> ITemplateDAGInstance[Any, Any]:
        """Run a FAILURE workflow again from its failed tasks (completed ones do not run
        again), ``runtime_parameters`` merged first. ``TaskInvalidState`` for any other status."""
        params = None if runtime_parameters is None else self._checked_params(runtime_parameters)
        return await self._act(instance_id, Retry(params, actor))

    async def skip_task(self, instance_id: Any, node_id: str, *, actor: str | None = None) -> ITemplateDAGInstance[Any, Any]:
        """End a task the workflow waits at (EXECUTING, no user code running) as SKIPPED."""
        return await self._act(instance_id, Skip(str(node_id), actor))

    async def complete_task(
        self, instance_id: Any, node_id: str, *, actor: str | None = None
    ) -> ITemplateDAGInstance[Any, Any]:
        """End a waiting listener, sensor or trigger as COMPLETED."""
        return await self._act(instance_id, Complete(str(node_id), actor))

    async def patch_parameters(
        self, instance_id: Any, changes: dict[str, Any], *, actor: str | None = None
    ) -> ITemplateDAGInstance[Any, Any]:
        """Merge ``changes`` into the runtime parameters of a workflow that has not ended;
        waiting listeners are indexed under the new values."""
        return await self._act(instance_id, PatchParameters(self._checked_params(changes), actor))

    def _checked_params(self, params: Any) -> dict[str, Any]:
        if not isinstance(params, dict):
            raise InvalidInput(f"runtime parameters must be a dict, got a {type(params).__name__}")
        problem = params_problem(params)
        if problem is not None:
            if problem.startswith("runtime parameter names"):
                raise InvalidInput(problem)
            raise NotSerializable(problem)
        size = len(encode_params(params))
        if size > self._limits.parameters:
            raise TooLarge("the runtime parameters", size, self._limits.parameters, " (max_parameters_bytes)")
        return params

    async def _act(self, instance_id: Any, event: Retry | Skip | Complete | PatchParameters) -> ITemplateDAGInstance[Any, Any]:
        runtime = self._runtime()
        iid = getattr(instance_id, "id", instance_id)
        known = None if id_problem(iid) is not None else await runtime.get_instance(str(iid))
        if known is None:
            raise UnknownInstance(f"no workflow instance {iid!r}")
        iid = str(iid)
        _check(known, event)
        if isinstance(event, PatchParameters):
            merged = {**known.runtime_parameters, **event.changes}
            if len(encode_params(merged)) > self._limits.parameters:
                raise TooLarge("the patched runtime parameters", len(encode_params(merged)),
                               self._limits.parameters, " (max_parameters_bytes)")  # fmt: skip
        applied, result = await runtime.call(iid, event)
        if applied:
            if result is None:
                raise UnknownInstance(f"no workflow instance {iid!r}")
            return self.view(result)
        # Sent to the owner (another worker): the state as last known here.
        return self.view(known)


def _check(known: Instance, event: Retry | Skip | Complete | PatchParameters) -> None:
    if isinstance(event, (Skip, Complete)) and event.node not in known.nodes:
        raise UnknownInstance(f"workflow {known.id} has no node {event.node!r}")
    problem = refusal(known, event)
    if problem is not None:
        raise TaskInvalidState(problem)

