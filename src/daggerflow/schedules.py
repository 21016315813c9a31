"""Schedules: create and start an instance of a template at every tick of a cron expression or
interval. A part of the facade (``Dagger`` inherits it).

Two ways to define one, by name, which meet in one idempotent upsert:

- in code, ``engine.schedule(...)`` before the engine starts: the definition is applied at
  every start (by every worker on Kafka; applying an identical definition changes nothing,
  and it never resumes a schedule an operator paused);
- at run time, ``await engine.put_schedule(...)`` (what ``POST /api/v1/schedules`` calls).

A definition in code wins at the next start over a REST change of the same name, and a
schedule deleted over REST while its definition is still in code comes back at that start.

Each action is an event for the schedule's key, applied by the owner of its partition like
an instance's (``pipeline.schedules``); on Kafka, from another worker, it is sent to the
owner and this waits (a few seconds at most) to read the result back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from .errors import TaskInvalidState, TemplateDoesNotExist, UnknownSchedule
from .machine.events import DeleteSchedule, Event, PauseSchedule, PutSchedule, ResumeSchedule
from .model.instance import Instance
from .model.schedule import Schedule, ScheduleSpec, check_name, schedule_key
from .model.template import instantiate
from .model.ticks import check_spec, upcoming
from .pipeline.ports import Runtime

log = logging.getLogger("daggerflow")

#: How long an action sent to another worker (Kafka) waits to read its result back.
READ_BACK_SECONDS = 5.0


class Schedules:
    template_dags: dict[str, Any]
    clock: Any
    _runtime: Callable[[], Runtime]
    _checked_params: Callable[[Any], dict[str, Any]]
    register_task_types_of: Callable[[Any], None]
    _code_schedules: dict[str, ScheduleSpec]
    runtime: Runtime | None

    def schedule(
        self,
        name: str,
        template: Any,
        *,
        cron: str | None = None,
        every: int | None = None,
        runtime_parameters: dict[str, Any] | None = None,
        timezone: str = "UTC",
        catch_up: str = "skip",
    ) -> ScheduleSpec:
        """Define a schedule in code: applied when the engine starts, at every start.
        ``cron`` (five fields, in ``timezone``) or ``every`` (seconds, aligned to the epoch);
        ``catch_up``: ``skip``, ``one`` or ``all`` ticks missed while no worker ran it.
        ``InvalidSchedule`` for a definition that cannot run."""
        spec = self._spec(name, template, cron, every, runtime_parameters, timezone, catch_up)
        if self.runtime is not None:
            raise TaskInvalidState(
                "engine.schedule() defines schedules applied at start; while the engine runs, "
                "use `await engine.put_schedule(...)`"
            )
        self._code_schedules[spec.name] = spec
        return spec

    async def put_schedule(
        self,
        name: str,
        template: Any,
        *,
        cron: str | None = None,
        every: int | None = None,
        runtime_parameters: dict[str, Any] | None = None,
        timezone: str = "UTC",
        catch_up: str = "skip",
        paused: bool | None = None,
        actor: str | None = None,
    ) -> Schedule:
        """Create or update a schedule now (by name). ``paused`` None keeps its paused flag."""
        spec = self._spec(name, template, cron, every, runtime_parameters, timezone, catch_up)
        result = await self._schedule_act(spec.name, PutSchedule(spec, paused, actor),
                                          lambda s: s is not None and s.spec == spec)  # fmt: skip
        assert result is not None
        return result

    async def list_schedules(self) -> list[Schedule]:
        """Every schedule (on Kafka: of every worker), by name."""
        return await self._runtime().list_schedules_all()

    async def get_schedule(self, name: str) -> Schedule:
        """The schedule called ``name``, or ``UnknownSchedule``."""
        found = await self._find_schedule(check_name(name))
        if found is None:
            raise UnknownSchedule(f"no schedule {name!r}")
        return found

    async def delete_schedule(self, name: str, *, actor: str | None = None) -> None:
        """Delete a schedule (``UnknownSchedule`` if there is none). Instances it created stay."""
        await self.get_schedule(name)
        await self._schedule_act(name, DeleteSchedule(actor), lambda s: s is None)

    async def pause_schedule(self, name: str, *, actor: str | None = None) -> Schedule:
        """No tick fires until it is resumed."""
        await self.get_schedule(name)
        result = await self._schedule_act(name, PauseSchedule(actor), lambda s: s is not None and s.paused)
        if result is None:
            raise UnknownSchedule(f"no schedule {name!r}")
        return result

    async def resume_schedule(self, name: str, *, actor: str | None = None) -> Schedule:
        """Fire again; the ticks that came due while paused are handled by its catch-up mode."""
        await self.get_schedule(name)
        result = await self._schedule_act(name, ResumeSchedule(actor), lambda s: s is not None and not s.paused)
        if result is None:
            raise UnknownSchedule(f"no schedule {name!r}")
        return result

    def local_schedules(self) -> list[Schedule]:
        """The schedules this process holds (REST forwarding answers with them)."""
        return self._runtime().list_schedules_local()

    @staticmethod
    def next_fire_times(schedule: Schedule, count: int = 5) -> list[float]:
        """The schedule's next ``count`` ticks (epoch seconds); none while paused."""
        if schedule.paused or schedule.next_due is None:
            return []
        return [schedule.next_due, *upcoming(schedule.spec, schedule.next_due, count - 1)] if count > 0 else []

    # Inside the engine ------------------------------------------------------------------

    def _spec(
        self,
        name: Any,
        template: Any,
        cron: str | None,
        every: Any,
        runtime_parameters: dict[str, Any] | None,
        timezone: str,
        catch_up: str,
    ) -> ScheduleSpec:
        template_name = template if isinstance(template, str) else getattr(template, "name", None)
        if not isinstance(template_name, str) or template_name not in self.template_dags:
            raise TemplateDoesNotExist(f"schedule {name!r}: no template {template_name or template!r} is registered")
        if isinstance(every, float) and every.is_integer():
            every = int(every)
        params = self._checked_params({} if runtime_parameters is None else runtime_parameters)
        return check_spec(ScheduleSpec(name=check_name(name), template=template_name, cron=cron, every=every,
                                       timezone=timezone, catch_up=catch_up, runtime_parameters=params))  # fmt: skip

    async def _apply_code_schedules(self) -> None:
        """Apply the schedules defined in code (at start; idempotent)."""
        runtime = self._runtime()
        for spec in self._code_schedules.values():
            await runtime.call(schedule_key(spec.name), PutSchedule(spec, None, "code"))
        if self._code_schedules:
            log.info("schedules defined in code applied: %s", ", ".join(sorted(self._code_schedules)))

    async def _find_schedule(self, name: str) -> Schedule | None:
        return await self._runtime().get_schedule(name)

    async def _schedule_act(
        self, name: str, event: Event, done: Callable[[Schedule | None], bool]
    ) -> Schedule | None:
        applied, result = await self._runtime().call(schedule_key(name), event)
        if applied:
            return result  # type: ignore[return-value]  # (the processor answers a schedule's call with it)
        # Sent to the owner (another worker, Kafka): read it back once it is applied.
        deadline = time.monotonic() + READ_BACK_SECONDS
        while True:
            found = await self._find_schedule(name)
            if done(found) or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.05)

    def _tick_instance(self, template_name: str, iid: str, params: dict[str, Any], now: float) -> Instance:
        """The instance a schedule's tick creates (``Settings.instantiate``)."""
        template = self.template_dags.get(template_name)
        if template is None:
            raise TemplateDoesNotExist(f"no template {template_name!r} is registered on this worker")
        overrides = template.overrides()
        for processes in (*overrides.dynamic.values(), *overrides.parallel.values()):
            for p in processes:
                self.register_task_types_of(p)
        return instantiate(template.spec, iid, params, now=now, overrides=overrides)
