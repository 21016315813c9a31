"""One module per part of the console; each lists its routes in ``ROUTES``."""

from __future__ import annotations

from starlette.routing import BaseRoute

from . import instance, login, schedules, templates

ROUTES: list[BaseRoute] = [
    *login.ROUTES,
    *schedules.ROUTES,
    *instance.ROUTES,
    *templates.ROUTES,
]
