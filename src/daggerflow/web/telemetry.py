"""Every REST request: its duration in ``daggerflow_http_request_duration_seconds`` (by
method, route template and status: never the path, which holds ids), and, when tracing
is on, the caller's W3C trace context (``traceparent``/``tracestate``) made current while
it is handled, so that an instance it creates continues the caller's trace.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import propagate
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from .api import EngineAPI


class RequestTelemetry:
    def __init__(self, app: ASGIApp, engine: EngineAPI) -> None:
        self.app = app
        self.engine = engine

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tel = getattr(self.engine, "telemetry", None)  # (None until the engine starts)
        if scope["type"] != "http" or tel is None:
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        token = None
        if tel.tracing is not None:
            carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ())
                       if k in (b"traceparent", b"tracestate")}  # fmt: skip
            if carrier:
                token = otel_context.attach(propagate.extract(carrier))
        began = time.perf_counter()
        try:
            await self.app(scope, receive, send_status)
        finally:
            if token is not None:
                otel_context.detach(token)
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            tel.metrics.http_duration.child(scope.get("method", ""), template, str(status)).observe(
                time.perf_counter() - began
            )
