"""The handlers of ``/api/v1/schedules``: list, create or update, read, delete, pause, resume.

Each decodes its query and body into ``web.schemas`` structs and calls the engine's schedule
methods (``daggerflow.schedules``); a definition that cannot run is a 400 (``InvalidSchedule``),
an unknown name a 404 (``UnknownSchedule``), an unknown template a 404.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from ..model.schedule import Schedule
from ..model.ticks import iso, upcoming
from .errors import JSONResponse
from .inputs import decode_body, decode_query, read_body
from .schemas import ActionQuery, DeletedSchedule, NoQuery, ScheduleInfo, ScheduleList, ScheduleRequest

if TYPE_CHECKING:
    from .api import EngineAPI

#: How many next fire times a schedule shows.
NEXT_FIRE_TIMES = 5


def schedule_info(schedule: Schedule) -> ScheduleInfo:
    spec = schedule.spec
    following: list[float] = []
    if not schedule.paused and schedule.next_due is not None:
        following = [schedule.next_due, *upcoming(spec, schedule.next_due, NEXT_FIRE_TIMES - 1)]
    return ScheduleInfo(
        name=spec.name,
        template=spec.template,
        cron=spec.cron,
        every=spec.every,
        timezone=spec.timezone,
        catch_up=spec.catch_up,
        runtime_parameters=spec.runtime_parameters,
        paused=schedule.paused,
        next_fire_times=[iso(spec, t) for t in following],
        next_due=schedule.next_due,
        last_fired=None if schedule.last_fired is None else iso(spec, schedule.last_fired),
        last_instance=schedule.last_instance,
        fired=schedule.fired,
        missed=schedule.missed,
        last_error=schedule.last_error,
        created=schedule.created,
        updated=schedule.updated,
        updated_by=schedule.updated_by,
    )


async def list_schedules(engine: EngineAPI, request: Request) -> Response:
    decode_query(request, NoQuery)
    return JSONResponse(ScheduleList(items=[schedule_info(s) for s in await engine.list_schedules()]))


async def put_schedule(engine: EngineAPI, request: Request) -> Response:
    q = decode_query(request, ActionQuery)
    body = decode_body(await read_body(request, engine.max_request_bytes), ScheduleRequest)
    schedule = await engine.put_schedule(
        body.name, body.template, cron=body.cron, every=body.every, runtime_parameters=body.runtime_parameters,
        timezone=body.timezone, catch_up=body.catch_up, paused=body.paused, actor=q.actor,
    )  # fmt: skip
    return JSONResponse(schedule_info(schedule))


async def get_schedule(engine: EngineAPI, request: Request) -> Response:
    decode_query(request, NoQuery)
    return JSONResponse(schedule_info(await engine.get_schedule(request.path_params["name"])))


async def delete_schedule(engine: EngineAPI, request: Request) -> Response:
    q = decode_query(request, ActionQuery)
    name: str = request.path_params["name"]
    await engine.delete_schedule(name, actor=q.actor)
    return JSONResponse(DeletedSchedule(name=name, deleted=True))


async def pause_schedule(engine: EngineAPI, request: Request) -> Response:
    q = decode_query(request, ActionQuery)
    return JSONResponse(schedule_info(await engine.pause_schedule(request.path_params["name"], actor=q.actor)))


async def resume_schedule(engine: EngineAPI, request: Request) -> Response:
    q = decode_query(request, ActionQuery)
    return JSONResponse(schedule_info(await engine.resume_schedule(request.path_params["name"], actor=q.actor)))
