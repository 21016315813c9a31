"""One module per part of the console; each lists its routes in ``ROUTES``."""

from __future__ import annotations

from starlette.routing import BaseRoute

from . import (
    bulk,
    dashboard,
    instance,
    instances,
    login,
    messages,
    schedules,
    search,
    templates,
    waiting,
    workers,
)

ROUTES: list[BaseRoute] = [
    *login.ROUTES,
    *dashboard.ROUTES,
    *bulk.ROUTES,
    *schedules.ROUTES,
    # Before ``instance``: its /instances/{id:path} would catch these paths.
    *instances.ROUTES,
    *search.ROUTES,
    *instance.ROUTES,
    *templates.ROUTES,
    *waiting.ROUTES,
    *messages.ROUTES,
    *workers.ROUTES,
]
