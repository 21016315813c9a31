"""``WorkflowEnvironment``: an embedded engine for tests, with time that moves when told.

The environment starts a real embedded engine (a temporary SQLite file by default, removed
afterwards) on a :class:`~daggerflow.pipeline.clock.ManualClock`. Every action it offers
returns once the engine has *settled*: nothing queued, no job running, no timer due, every
listener and agent caught up with its topic. So a test reads as a story::

    async with WorkflowEnvironment() as env:
        register_pizza_workflow(env.engine, deliver=deliveries.append_async)
        order = await env.start_workflow("PizzaWorkflow", order_id="o-1", customer_id="c-1", pizza_type=1)
        assert env.sent_json("pizza_order_topic") == [{"order_id": "o-1", ...}]
        await env.send("PizzaWaitForReadyListener", {"order_id": "o-1", "status": "READY"})
        await env.wait_for_status(order, "COMPLETED")

``await env.sleep(3600)`` moves the clock an hour ahead the way real time would: it steps
from one due timer to the next, letting the engine settle after each, so an interval task
polls every period and a retry's backoff is honoured, in no wall-clock time at all.

User code that waits on real time (``asyncio.sleep``, ``loop.call_later``, a network call)
still takes that time: settling waits for running jobs, but cannot see a callback a task
scheduled on the event loop for later.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

from ..embedded.runtime import EmbeddedRuntime
from ..engine import Dagger
from ..model.instance import Instance, Node
from ..model.records import Message
from ..pipeline.clock import ManualClock
from ..tasks import ITemplateDAGInstance
from ..templates import ITemplateDAG

EngineFactory = Callable[..., Dagger]
"""Builds an engine; called with ``clock=`` (which it must pass on to ``Dagger``)."""

#: How many timers one ``sleep`` may step through before it suspects a timer re-arming
#: itself at the same moment forever.
MAX_STEPS = 100_000
_READ_BATCH = 10_000


class WorkflowEnvironment:
    """An embedded engine on a skipping clock, for tests. Use as ``async with``.

    ``engine`` is one of:

    - ``None`` (default): a fresh ``Dagger`` on a temporary SQLite file (``store=`` another
      store URL, e.g. ``"memory://"``), with the web API off; ``options`` go to ``Dagger``;
    - a factory, called as ``factory(clock=env.clock, **options)``: the way to reuse the
      function your application builds its engine with (it may register templates too);
    - a ``Dagger`` that is not started yet: its clock is replaced by the environment's
      (unless it already is a ``ManualClock``).

    ``start`` is the clock's initial time (default: the wall clock when the environment
    is made). ``settle_timeout`` bounds, in real seconds, how long any action waits for the
    engine to settle.
    """

    def __init__(
        self,
        engine: Dagger | EngineFactory | None = None,
        *,
        store: str | None = None,
        start: float | None = None,
        settle_timeout: float = 10.0,
        **options: Any,
    ) -> None:
        self.settle_timeout = settle_timeout
        self._tmpdir: str | None = None
        self._factory: EngineFactory | None = None
        self._options: dict[str, Any] = {}
        if isinstance(engine, Dagger):
            if engine.runtime is not None:
                raise RuntimeError("WorkflowEnvironment needs an engine that is not started yet")
            if options or store is not None:
                raise TypeError("options and store= are for the engine the environment builds; this one is built")
            if isinstance(engine.clock, ManualClock):
                self.clock = engine.clock
            else:
                self.clock = ManualClock(time.time() if start is None else start)
                engine.clock = self.clock
            self.engine = engine
            return
        self.clock = ManualClock(time.time() if start is None else start)
        if engine is None:
            if store is None:
                self._tmpdir = tempfile.mkdtemp(prefix="daggerflow-test-")
                store = f"sqlite:///{self._tmpdir}/engine.db"
            options.setdefault("web_port", None)
            options.setdefault("application_name", "daggerflow-test")
            self.engine = Dagger(store=store, clock=self.clock, **options)
        else:
            if store is not None:
                options["store"] = store
            self._factory, self._options = engine, options
            self.engine = self._build(engine, options)
        if self.engine.config.broker is not None:
            raise ValueError("WorkflowEnvironment runs the embedded runtime: build the engine without broker=")

    def _build(self, factory: EngineFactory, options: dict[str, Any]) -> Dagger:
        built = factory(clock=self.clock, **options)
        if not isinstance(built, Dagger):
            raise TypeError(f"the engine factory returned {type(built).__name__}, not a Dagger")
        if built.clock is not self.clock:
            raise TypeError("the engine factory must pass its clock= argument on to Dagger(clock=...)")
        return built

    # Lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        if self.engine.config.broker is not None:
            raise ValueError("WorkflowEnvironment runs the embedded runtime: build the engine without broker=")
        await self.engine.start()
        await self.settle()

    async def stop(self) -> None:
        try:
            await self.engine.stop()
        finally:
            if self._tmpdir is not None:
                shutil.rmtree(self._tmpdir, ignore_errors=True)
                self._tmpdir = None

    async def restart(self, *, down_for: float = 0.0) -> Dagger:
        """Stop the engine as a worker stops (draining), let ``down_for`` seconds pass, and
        start again on the same store: a new engine from the factory, as a new process
        would build it, else the same engine object. Timers that fell due meanwhile fire
        at the start. Returns the running engine (``env.engine``)."""
        if self.engine.config.store == "memory://":
            raise RuntimeError("an engine on memory:// loses its state when it stops: restart needs a file store")
        await self.engine.stop()
        self.clock.set(self.clock.now() + down_for)
        if self._factory is not None:
            self.engine = self._build(self._factory, self._options)
        await self.start()
        return self.engine

    async def __aenter__(self) -> WorkflowEnvironment:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def runtime(self) -> EmbeddedRuntime:
        runtime = self.engine.runtime
        if not isinstance(runtime, EmbeddedRuntime) or not runtime.running:
            raise RuntimeError("the environment is not started: use `async with WorkflowEnvironment(...) as env:`")
        return runtime

    # Time -----------------------------------------------------------------------------------

    def now(self) -> float:
        """The engine's time (epoch seconds)."""
        return self.clock.now()

    async def settle(self, timeout: float | None = None) -> None:
        """Return once the engine has nothing left to do until time moves or a message
        arrives. ``TimeoutError`` after ``timeout`` real seconds (``settle_timeout``)."""
        loop = asyncio.get_running_loop()
        limit = self.settle_timeout if timeout is None else timeout
        deadline = loop.time() + limit
        quiet = spins = 0
        while quiet < 2:  # idle twice in a row: nothing was about to wake between the looks
            runtime = self.runtime
            runtime.processor  # noqa: B018 (raises if the processor stopped after an error)
            if spins < 50:
                await asyncio.sleep(0)
            else:  # something takes real time (I/O, a thread): do not spin on it
                await asyncio.sleep(0.001)
            if runtime.idle():
                quiet += 1
                continue
            quiet = 0
            spins += 1
            if loop.time() > deadline:
                raise TimeoutError(f"the engine did not settle within {limit} s: {self.engine.stats()}")

    async def sleep(self, seconds: float) -> None:
        """Move time ``seconds`` ahead, firing every timer that falls due on the way at its
        own time (one after the other, each followed by what it causes), then settle."""
        await self.sleep_until(self.clock.now() + seconds)

    async def sleep_until(self, when: float) -> None:
        """Move time to ``when`` (epoch seconds) as :meth:`sleep` does."""
        await self.settle()
        for _ in range(MAX_STEPS):
            due = self.runtime.next_timer()
            if due is None or due > when:
                break
            self.clock.set(due)
            await self.settle()
        else:
            raise RuntimeError(f"sleep stepped through {MAX_STEPS} timers without reaching {when}: "
                               "a timer re-arms itself without time moving?")  # fmt: skip
        self.clock.set(when)
        await self.settle()

    # Workflows --------------------------------------------------------------------------------

    async def start_workflow(
        self, template: str | ITemplateDAG, instance_id: Any = None, /, **runtime_parameters: Any
    ) -> ITemplateDAGInstance[Any, Any]:
        """Create and submit an instance of ``template`` (a name or the template), then
        settle; the id defaults to a fresh UUID. Returns the instance as committed then."""
        if isinstance(template, str):
            found = self.engine.template_dags.get(template)
            if found is None:
                known = ", ".join(sorted(self.engine.template_dags)) or "none"
                raise KeyError(f"no template named {template!r} is registered (registered: {known})")
            template = found
        iid = uuid.uuid4().hex if instance_id is None else instance_id
        view = await template.create_instance(iid, submit_task=True, **runtime_parameters)
        await self.settle()
        return self.engine.view(self.instance(view.id))

    def instance(self, instance: Any) -> Instance:
        """The committed state of an instance (an id or a view); ``KeyError`` if unknown."""
        iid = str(getattr(instance, "id", instance))
        found = self.engine.committed(iid)
        if found is None:
            raise KeyError(f"no instance {iid!r}")
        return found

    async def wait_for_status(
        self,
        instance: Any,
        status: str = "COMPLETED",
        *,
        task: str | None = None,
        timeout: float = 5.0,
    ) -> ITemplateDAGInstance[Any, Any]:
        """Wait until the instance (or its task or process named ``task``) has ``status``.

        Fails at once with ``AssertionError`` when the workflow ends in another status (its
        errors in the message), and after ``timeout`` real seconds saying where it is."""
        iid = str(getattr(instance, "id", instance))
        wanted = status.upper()
        current = self.engine.committed(iid)
        if task is not None and current is not None and _node(current, task) is None:
            raise AssertionError(f"instance {iid!r} {_describe(current, task)}")

        def reached(inst: Instance) -> bool:
            node = inst.root if task is None else _node(inst, task)
            return node is not None and node.status == wanted

        def ended_otherwise(inst: Instance) -> bool:
            return inst.is_terminal() and not reached(inst)

        try:
            view = await self.engine.wait_for(iid, lambda i: reached(i) or ended_otherwise(i), timeout)
        except TimeoutError:
            current = self.engine.committed(iid)
            where = "does not exist" if current is None else _describe(current, task)
            raise AssertionError(f"instance {iid!r} did not reach {wanted} within {timeout} s: it {where}") from None
        inst = self.instance(iid)
        if not reached(inst):
            raise AssertionError(f"instance {iid!r} ended: it {_describe(inst, task)}, not {wanted}{_errors(inst)}")
        return view

    # Topics -------------------------------------------------------------------------------------

    async def send(
        self, topic: str, value: Any, *, key: Any = None, headers: dict[str, str] | None = None
    ) -> int:
        """Append a message to ``topic`` (a listener's, an agent's) as an outside service
        would, then settle. A value that is not str or bytes is sent as its JSON text.
        Returns the message's offset."""
        offset = await self.engine.topics[topic].send(key=key, value=value, headers=headers)
        await self.settle()
        assert offset is not None  # (outside a job a send appends at once)
        return offset

    def sent(self, topic: str) -> list[Message]:
        """Every message on ``topic`` so far, oldest first: what command tasks and agents
        sent there (and anything :meth:`send` put there)."""
        messages: list[Message] = []
        while True:
            chunk = self.engine.read_topic(topic, messages[-1].offset + 1 if messages else 0, _READ_BATCH)
            messages.extend(chunk)
            if len(chunk) < _READ_BATCH:
                return messages

    def sent_json(self, topic: str) -> list[Any]:
        """The values of :meth:`sent`, decoded from JSON."""
        return [json.loads(m.value) for m in self.sent(topic)]


def _node(inst: Instance, name: str) -> Node | None:
    """The node called ``name``: its full name (``PizzaWorkflow.Order.Order_command_task``,
    as the REST API shows it) or the last part of it (``Order_command_task``)."""
    suffix = [n for n in inst.nodes.values() if n.name == name or n.name.endswith("." + name)]
    exact = [n for n in suffix if n.name == name]
    found = exact or suffix
    return found[0] if len(found) == 1 else None


def _describe(inst: Instance, task: str | None) -> str:
    if task is None:
        return f"is {inst.status}"
    node = _node(inst, task)
    if node is None:
        names = ", ".join(sorted(n.name for n in inst.nodes.values()))
        return f"is {inst.status}, with no one task or process named {task!r} (it has: {names})"
    return f"is {inst.status}, its {task} {node.status}"


def _errors(inst: Instance) -> str:
    errors = [f"{n.name}: {n.error}" for n in inst.nodes.values() if getattr(n, "error", None)]
    return ("; errors: " + "; ".join(errors)) if errors else ""


__all__ = ["EngineFactory", "WorkflowEnvironment"]
