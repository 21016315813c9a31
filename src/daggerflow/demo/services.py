"""Stand-ins for the two external services of the pizza workflow.

- :class:`OrderService` plays the order service: it reads orders from ``pizza_order_topic``
  (as an agent) and answers ``{"order_id": ..., "status": "READY"}`` on the listener topic
  after a short random delay.
- :class:`DeliveryService` plays the delivery service: a small HTTP server on a free local
  port that accepts ``POST /deliveries`` and records each JSON body; :func:`post_json` is
  the small client the demo's delivery task posts with.

Durability of the delayed answer: with ``max_delay == 0`` the READY message is sent inside
the agent, so it is committed atomically with the agent's input position (a crash either
re-runs the agent or has published the answer, exactly once). With ``max_delay > 0`` the
agent only schedules the send and returns, so that one slow kitchen never holds up the
agent; a scheduled answer is lost if the process stops before it fires, and that order
waits for a READY that never comes. A real order service keeps its own durable state; a
simulation trades that for not blocking the topic.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from ..engine import Dagger

log = logging.getLogger(__name__)

ORDER_TOPIC = "pizza_order_topic"
READY_TOPIC = "PizzaWaitForReadyListener"


class OrderService:
    """Answers every order with READY after ``uniform(0, max_delay)`` seconds.

    Register :meth:`handle` as an agent on the order topic::

        orders = OrderService(workflow_engine, max_delay=0.5)
        workflow_engine.agent("pizza_order_topic")(orders.handle)
    """

    def __init__(
        self,
        engine: Dagger,
        *,
        ready_topic: str = READY_TOPIC,
        max_delay: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        self.engine = engine
        self.ready_topic = ready_topic
        self.max_delay = max(0.0, max_delay)
        self._rng = rng or random.Random()
        self._pending: set[asyncio.TimerHandle] = set()
        self._sending: set[asyncio.Task[None]] = set()

    async def handle(self, value: Any) -> None:
        order = json.loads(value)
        answer = json.dumps({"order_id": order["order_id"], "status": "READY"})
        delay = self._rng.uniform(0.0, self.max_delay) if self.max_delay > 0 else 0.0
        if delay <= 0.0:
            # Inside the agent: committed together with the agent's position.
            await self.engine.topics[self.ready_topic].send(value=answer)
            return
        # A fresh context, so the send does not go to this agent's (already committed) outbox.
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle | None = None

        def fire() -> None:
            if handle is not None:
                self._pending.discard(handle)
            task = loop.create_task(self._send_later(answer))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

        handle = loop.call_later(delay, fire, context=contextvars.Context())
        self._pending.add(handle)

    async def _send_later(self, answer: str) -> None:
        try:
            await self.engine.topics[self.ready_topic].send(value=answer)
        except Exception as exc:  # the engine stopped before the kitchen finished
            log.warning("order service: READY %s not sent: %r", answer, exc)

    @property
    def pending(self) -> int:
        """Answers scheduled but not sent yet."""
        return len(self._pending) + len(self._sending)

    def close(self) -> None:
        """Forget the answers not sent yet (they are lost, as documented above)."""
        for handle in self._pending:
            handle.cancel()
        self._pending.clear()


async def post_json(url: str, payload: Any, *, timeout: float = 30.0) -> int:
    """POST ``payload`` as JSON over a fresh connection and return the status code; raise
    ``OSError`` on a status >= 400.

    Dependency-free and without a connection pool on purpose: for the demo's many small
    local requests it is several times faster than a general client, so the demo measures
    the engine rather than an HTTP library.
    """
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None:
        raise ValueError(f"post_json supports http:// URLs only, got {url!r}")
    body = json.dumps(payload).encode()
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
        try:
            writer.write(request)
            status_line = await reader.readline()
            await reader.read()  # the server closes after the reply
        finally:
            writer.close()
    try:
        status = int(status_line.split()[1])
    except (IndexError, ValueError):
        raise OSError(f"POST {url}: malformed reply {status_line!r}") from None
    if status >= 400:
        raise OSError(f"POST {url}: HTTP {status}")
    return status


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # the default listen backlog (5) resets bursts of connections


class DeliveryService:
    """An HTTP server in a background thread that records ``POST`` JSON bodies.

    ``start()`` returns the URL to post to (``http://127.0.0.1:<port>/deliveries``);
    ``deliveries`` is the list of bodies received, in arrival order.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._address = (host, port)
        self._lock = threading.Lock()
        self._deliveries: list[dict[str, Any]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url: str | None = None

    @property
    def deliveries(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._deliveries)

    def _record(self, body: dict[str, Any]) -> None:
        with self._lock:
            self._deliveries.append(body)

    def start(self) -> str:
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, so clients can reuse connections
            disable_nagle_algorithm = True  # else each reply waits for a delayed ACK (~40 ms)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"null")
                except ValueError:
                    self._reply(400, {"error": "body is not JSON"})
                    return
                if not isinstance(body, dict) or "order_id" not in body:
                    self._reply(400, {"error": 'expected {"order_id": ..., "customer_id": ...}'})
                    return
                service._record(body)
                self._reply(201, {"accepted": body["order_id"]})

            def do_GET(self) -> None:
                self._reply(200, {"deliveries": len(service.deliveries)})

            def _reply(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        server = _Server(self._address, Handler)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},  # how long stop() may wait for the loop to notice
            name="pizza-delivery-service",
            daemon=True,
        )
        self._thread.start()
        host, port = server.server_address[:2]
        self.url = f"http://{host!s}:{port}/deliveries"
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
