"""``Dagger``: the engine object users create, with Dagger's constructor and methods.

It wires the pipeline (store, processor, jobs, timers, consumers, REST API) and exposes the
Python API. Several engines can live in one process: nothing here is global.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import random
import signal
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from .errors import ConfigurationError, NotSerializable, TaskInvalidState, TemplateDoesNotExist
from .machine import Create, Stop, Submit
from .model.instance import Instance, Node, copy_params
from .model.template import (
    Overrides,
    ProcessLike,
    TaskTemplate,
    instantiate,
    walk_templates,
)
from .runtime.background import cancel_and_wait
from .runtime.clock import Clock, SystemClock
from .runtime.consumers import AgentConsumer, AgentHandler, Consumer, ListenerConsumer, TopicSignals
from .runtime.jobs import JobRunner, check_serialisable
from .runtime.processor import Processor, Settings
from .runtime.timers import TimerService
from .store.base import Store
from .store.sqlite import check_store_url, open_store
from .tasks import DefaultTemplateDAGInstance, ITask, ITemplateDAGInstance
from .templates import ITemplateDAG
from .topics import Topic, Topics

log = logging.getLogger("daggerflow")

F = TypeVar("F", bound=Callable[..., Any])

HOUSEKEEPING_INTERVAL = 60.0  # seconds between purges of expired dedupe ids and buffers

# Dagger's constructor options that have no effect here: they configured faust, Aerospike or
# a timer poll that this design does not need. Accepted so Dagger code keeps working.
_ACCEPTED_NO_EFFECT = {
    "package_name",
    "kafka_partitions",
    "tasks_topic",
    "bootstrap_topic",
    "beacon",
    "loop",
    "kafka_broker_list",
    "tracing_sensor",
    "datadog_sensor",
    "trigger_interval",
    "max_tasks_per_trigger",
    "restart_tasks_on_boot",
    "enable_changelog",
    "max_correletable_keys_in_values",
    "schema_registry_url",
    "message_serializer",
    "logging_config",
    "serializer",
    "value_serializer",
    "key_serializer",
    "web_in_thread",
}


class _either_class_or_instance:
    """``@Dagger.register_template(name)`` (Dagger's README) and
    ``@engine.register_template(name)`` both work: on the class, the engine is the one the
    template was built with."""

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func
        functools.update_wrapper(self, func)  # type: ignore[arg-type]

    def __get__(self, obj: Any, owner: type) -> Callable[..., Any]:
        return functools.partial(self.func, obj)


class Dagger:
    """The workflow engine.

    Embedded by default (``broker=None``): one process, state in a SQLite database under
    ``datadir`` (``store="sqlite:///path.db"`` to choose the file, ``"memory://"`` for
    tests). Keyword options follow Dagger's; see the README's configuration reference.
    """

    def __init__(
        self,
        *,
        broker: str | None = None,
        store: str | None = None,
        datadir: str | None = None,
        application_name: str = "dagger",
        task_update_topic: str | None = None,
        task_update_callbacks: Iterable[Callable[[Any], Awaitable[Any]]] | None = None,
        delete_workflow_on_complete: bool = False,
        web_port: int | None = 6066,
        web_host: str = "127.0.0.1",
        aerospike_config: Any = None,
        consumer_auto_offset_reset: str = "earliest",
        clock: Clock | None = None,
        max_concurrent_jobs: int = 1000,
        max_batch_size: int = 1000,
        durability: str = "normal",
        unmatched_message_ttl: float | dict[str, float] = 0.0,
        dedupe_ttl: float = 7 * 24 * 3600.0,
        dead_letter_topic: str = "daggerflow-dead-letter",
        shutdown_timeout: float = 10.0,
        **kwargs: Any,
    ) -> None:
        unknown = set(kwargs) - _ACCEPTED_NO_EFFECT
        if unknown:
            raise ConfigurationError(
                f"unknown Dagger option(s): {', '.join(sorted(unknown))}. Supported: broker, store, "
                "datadir, application_name, task_update_topic, task_update_callbacks, "
                "delete_workflow_on_complete, web_port, web_host, consumer_auto_offset_reset, "
                "clock, max_concurrent_jobs, max_batch_size, durability, unmatched_message_ttl, "
                "dedupe_ttl, dead_letter_topic, shutdown_timeout, and Dagger's faust-era options "
                f"(accepted, no effect): {', '.join(sorted(_ACCEPTED_NO_EFFECT))}"
            )
        if broker is not None:
            raise ConfigurationError(
                f"broker={broker!r}: the Kafka runtime is not part of this build yet; "
                "use broker=None (the embedded runtime)"
            )
        # Fail at construction, naming what is supported (e.g. store="aerospike://").
        check_store_url(store)
        if aerospike_config is not None:
            raise ConfigurationError("aerospike_config is not supported: there is no Aerospike store")
        if consumer_auto_offset_reset not in ("earliest", "latest"):
            raise ConfigurationError("consumer_auto_offset_reset must be 'earliest' or 'latest'")
        if durability not in ("normal", "full"):
            raise ConfigurationError("durability must be 'normal' or 'full'")
        self.broker = broker
        self.store_url = store
        self.datadir = datadir or os.environ.get("DAGGERFLOW_DATA", "daggerflow-data")
        self.application_name = application_name
        self.task_update_topic_name = task_update_topic
        self.task_update_callbacks = list(task_update_callbacks or [])
        self.delete_workflow_on_complete = delete_workflow_on_complete
        self.web_port = web_port
        self.web_host = web_host
        self.consumer_auto_offset_reset = consumer_auto_offset_reset
        self.clock: Clock = clock or SystemClock()
        self.max_concurrent_jobs = max_concurrent_jobs
        self.max_batch_size = max_batch_size
        self.durability = durability
        self.unmatched_message_ttl = unmatched_message_ttl
        self.dedupe_ttl = dedupe_ttl
        self.dead_letter_topic = dead_letter_topic
        self.shutdown_timeout = shutdown_timeout
        self.options = dict(kwargs)

        self.template_dags: dict[str, ITemplateDAG] = {}
        self.process_templates: dict[str, ProcessLike] = {}
        self.topics: Topics = Topics(self)
        self._task_types: dict[str, type[ITask[Any, Any]]] = {}
        self._listeners: dict[str, list[type]] = {}
        self._agents: list[tuple[str, AgentHandler, str, int]] = []
        self._consumers: dict[str, Consumer] = {}
        self._waiters: dict[str, list[tuple[Callable[[Instance], bool], asyncio.Future[Instance]]]] = {}
        self._updates: asyncio.Queue[ITemplateDAGInstance[Any, Any]] | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._store: Store | None = None
        self._processor: Processor | None = None
        self._jobs: JobRunner | None = None
        self._timers: TimerService | None = None
        self._signals = TopicSignals()
        self._web: Any = None
        self.web_url: str | None = None
        self.started_flag = False
        if task_update_topic:
            self.create_topic(task_update_topic)
        self.task_update_topic = self.topics[task_update_topic] if task_update_topic else None

    # Registration ---------------------------------------------------------------------

    @_either_class_or_instance
    def register_template(self: Dagger | None, template_name: str) -> Callable[[F], F]:
        """Decorator: call ``fn(template_name)`` now and register the template it returns."""

        def decorator(fn: F) -> F:
            template = fn(template_name)
            if not isinstance(template, ITemplateDAG):
                raise TypeError(f"{fn.__name__} must return a template (DAGBuilderHelper.generic_template)")
            engine = self if self is not None else template.app
            if engine is None:
                raise ConfigurationError(
                    f"template {template_name!r} is not bound to an engine: build it with "
                    "DAGBuilderHelper(engine) or use @engine.register_template"
                )
            engine.add_template(template_name, template)
            return fn

        return decorator

    @_either_class_or_instance
    def register_process_template(self: Dagger | None, process_template_name: str) -> Callable[[F], F]:
        def decorator(fn: F) -> F:
            built = fn(process_template_name)
            process = built.build() if hasattr(built, "build") else built
            engine = self if self is not None else getattr(built, "app", None)
            if engine is None:
                raise ConfigurationError(
                    f"process template {process_template_name!r} is not bound to an engine"
                )
            engine.register_task_types_of(process)
            engine.process_templates[process_template_name] = process
            return fn

        return decorator

    def add_template(self, name: str, template: ITemplateDAG) -> None:
        if template.name != name:
            template.spec.name = name
        template.app = self
        self.register_task_types_of(template.spec.root_process)
        self.template_dags[name] = template

    def get_template(self, template_name: str) -> ITemplateDAG:
        try:
            return self.template_dags[template_name]
        except KeyError:
            raise TemplateDoesNotExist(
                f"no template named {template_name!r}; registered: {sorted(self.template_dags)}"
            ) from None

    def register_task_type(self, cls: type) -> str:
        from .builders import type_name_of

        name = type_name_of(cls)
        existing = self._task_types.get(name)
        if existing is not None and existing is not cls:
            same = existing.__qualname__ == cls.__qualname__ and existing.__module__ == cls.__module__
            if not same:
                raise ConfigurationError(
                    f"two task classes are registered as {name!r} ({existing.__module__}."
                    f"{existing.__qualname__} and {cls.__module__}.{cls.__qualname__}); "
                    "give one a distinct `type_name`"
                )
        self._task_types[name] = cls
        return name

    def register_task_types_of(self, template: Any) -> None:
        """Register every task class a template uses, and its listener topics."""
        for t in walk_templates(template):
            if isinstance(t, TaskTemplate):
                self.register_task_type(t.task_class)
                if t.topic and t.kind.value in ("listener", "sensor"):
                    self.add_listener(t.topic, t.task_class)

    def task_class(self, type_name: str | None) -> type[ITask[Any, Any]]:
        if type_name is None:
            raise KeyError("node has no task type")
        try:
            return self._task_types[type_name]
        except KeyError:
            raise KeyError(
                f"task type {type_name!r} is not registered in this process (is the module that "
                "defines its template imported?)"
            ) from None

    def create_topic(
        self,
        topic_name: str,
        key_type: Any = None,
        value_type: Any = None,
        key_serializer: Any = None,
        value_serializer: Any = None,
    ) -> Topic:
        return self.topics[topic_name]

    def add_topic(self, topic_name: str, topic: Topic) -> None:
        self.topics[topic_name] = topic

    def get_topic(self, topic_name: str) -> Topic:
        return self.topics[topic_name]

    def add_listener(self, topic: str, cls: type) -> None:
        classes = self._listeners.setdefault(topic, [])
        if cls not in classes:
            classes.append(cls)
        if self.started_flag and f"listener:{topic}" not in self._consumers:
            self._start_consumer(self._listener_consumer(topic))

    def agent(self, topic: str | Topic, *, name: str | None = None, concurrency: int = 1) -> Callable[[F], F]:
        """Subscribe ``async def handler(value)`` to a topic. What it sends is committed
        atomically with its input position."""
        topic_name = topic.name if isinstance(topic, Topic) else topic

        def decorator(fn: F) -> F:
            self.create_topic(topic_name)
            consumer_name = name or f"{fn.__module__}.{fn.__qualname__}"
            self._agents.append((topic_name, fn, consumer_name, concurrency))
            if self.started_flag:
                self._start_consumer(self._agent_consumer(topic_name, fn, consumer_name, concurrency))
            return fn

        return decorator

    # Lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        if self.started_flag:
            return
        store = open_store(
            self.store_url,
            datadir=self.datadir,
            application_name=self.application_name,
            durability=self.durability,
        )
        self._store = store
        ttl = self.unmatched_message_ttl
        settings = Settings(
            delete_on_complete=self.delete_workflow_on_complete,
            task_update_topic=self.task_update_topic_name,
            unmatched_ttl=(lambda t: float(ttl.get(t, 0.0)))
            if isinstance(ttl, dict)
            else (lambda t: float(ttl)),
            max_batch=self.max_batch_size,
        )
        processor = Processor(store, self.clock, settings)
        self._processor = processor
        jobs = JobRunner(self, self.max_concurrent_jobs)
        self._jobs = jobs
        timers = TimerService(self.clock, self._timer_fired)
        self._timers = timers
        processor.on_job = jobs.submit
        processor.on_cancel = jobs.cancel
        processor.on_timer_set = timers.set
        processor.on_timer_cancel = timers.cancel
        processor.on_committed = self._committed
        store.purge(self.clock.now(), self.dedupe_ttl)
        for instance, key, due in store.all_timers():
            timers.set(instance, key, due)
        processor.start()
        timers.start()
        for job in store.pending_jobs():
            jobs.submit(job)
        self._updates = asyncio.Queue()
        self._tasks.append(asyncio.create_task(self._notify_updates(), name="daggerflow-updates"))
        self._tasks.append(asyncio.create_task(self._housekeeping(), name="daggerflow-housekeeping"))
        self.started_flag = True
        for topic in self._listeners:
            self._start_consumer(self._listener_consumer(topic))
        for topic, fn, consumer_name, concurrency in self._agents:
            self._start_consumer(self._agent_consumer(topic, fn, consumer_name, concurrency))
        if self.web_port is not None:
            from .web.server import WebServer

            self._web = WebServer(self, self.web_host, self.web_port)
            try:
                await self._web.start()
            except BaseException:
                self._web = None
                await self.stop()  # do not leave a half-started engine holding the store
                raise
            self.web_url = self._web.url
        log.info(
            "daggerflow engine %r started (store %s, web %s)",
            self.application_name,
            store.path,
            self.web_url or "off",
        )

    async def stop(self) -> None:
        """Drain and commit: stop reading, let running jobs finish (up to
        ``shutdown_timeout``), commit their outcomes, then close the store."""
        if not self.started_flag:
            return
        self.started_flag = False
        if self._web is not None:
            await self._web.stop()
            self._web = None
        for consumer in list(self._consumers.values()):
            await consumer.stop()
        self._consumers.clear()
        assert self._jobs is not None and self._processor is not None and self._timers is not None
        await self._timers.stop()
        await self._jobs.drain(self.shutdown_timeout)
        if self._processor.failed is None:
            await self._processor.wait_idle()
        await self._processor.stop()
        for task in self._tasks:
            await cancel_and_wait(task)
        self._tasks.clear()
        for waiters in self._waiters.values():
            for _, fut in waiters:
                if not fut.done():
                    fut.cancel()
        self._waiters.clear()
        if self._store is not None:
            self._store.close()
            self._store = None

    async def __aenter__(self) -> Dagger:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def main(self, override_logging: bool = False) -> None:
        """Run the worker and the REST API until SIGINT/SIGTERM, then drain and exit."""
        if not logging.getLogger().handlers or override_logging:
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        asyncio.run(self.run_until_signalled())

    async def run_until_signalled(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        # A worker owns its process: move what start-up built (modules, templates) out of
        # the collector's reach, which halved the full-collection pause in the benchmark.
        gc.freeze()
        try:
            waiter = asyncio.create_task(stop.wait())
            assert self._processor is not None and self._processor._task is not None
            _done, _ = await asyncio.wait(
                {waiter, self._processor._task}, return_when=asyncio.FIRST_COMPLETED
            )
            waiter.cancel()
            if self._processor.failed is not None:
                raise self._processor.failed
            log.info("signal received: draining")
        finally:
            await self.stop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    # Instances ------------------------------------------------------------------------

    def _require_started(self) -> Processor:
        if self._processor is None or not self.started_flag:
            raise TaskInvalidState(
                "the engine is not running: use `async with engine:`, "
                "`await engine.start()` or `engine.main()`"
            )
        failed = self._processor.failed
        if failed is not None:
            raise TaskInvalidState(f"the engine's processor stopped after an error: {failed!r}")
        return self._processor

    async def create_instance(
        self,
        template: ITemplateDAG,
        instance_id: str,
        runtime_parameters: dict[str, Any],
        *,
        partition_key_lookup: str | None = None,
        repartition: bool = False,
        seed: random.Random | int | str | None = None,
        submit_task: bool = False,
        overrides: Overrides | None = None,
    ) -> ITemplateDAGInstance[Any, Any]:
        processor = self._require_started()
        problem = check_serialisable(runtime_parameters, "runtime parameter")
        if problem is not None:
            raise NotSerializable(problem)
        if repartition and partition_key_lookup and runtime_parameters.get(partition_key_lookup) is None:
            raise TaskInvalidState(
                f"repartition=True needs runtime parameter {partition_key_lookup!r} (partition_key_lookup)"
            )
        if overrides is not None:
            for processes in (*overrides.dynamic.values(), *overrides.parallel.values()):
                for p in processes:
                    self.register_task_types_of(p)
        instance = instantiate(
            template.spec,
            instance_id,
            copy_params(runtime_parameters),
            now=self.clock.now(),
            seed=seed,
            partition_key_lookup=partition_key_lookup,
            overrides=overrides,
        )
        result: Instance = await processor.call(instance_id, Create(instance, submit_task))
        return self.view(result)

    async def submit(self, task: Any, *, repartition: bool = False) -> ITemplateDAGInstance[Any, Any]:
        """Start a created instance. Submitting a terminal instance raises TaskInvalidState."""
        instance_id = str(getattr(task, "id", task))
        result: Instance | None = await self._require_started().call(instance_id, Submit())
        assert result is not None
        return self.view(result)

    async def stop_instance(self, instance_id: Any) -> ITemplateDAGInstance[Any, Any] | None:
        """Stop a workflow: every non-terminal node becomes STOPPED; a no-op when terminal."""
        instance_id = str(getattr(instance_id, "id", instance_id))
        processor = self._require_started()
        if processor.committed(instance_id) is None:
            return None
        result: Instance | None = await processor.call(instance_id, Stop())
        return None if result is None else self.view(result)

    async def get_instance(self, id: Any, log: bool = True) -> ITemplateDAGInstance[Any, Any] | None:
        instance = self.committed(str(id))
        return None if instance is None else self.view(instance)

    def committed(self, instance_id: str) -> Instance | None:
        if self._processor is not None:
            return self._processor.committed(instance_id)
        return None

    def list_instances(
        self, *, status: str | None = None, template: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[Instance]:
        store = self._require_store()
        return store.list_instances(status=status, template=template, limit=limit, offset=offset)

    def count_instances(self, *, status: str | None = None, template: str | None = None) -> int:
        return self._require_store().count_instances(status=status, template=template)

    def _require_store(self) -> Store:
        if self._store is None:
            raise TaskInvalidState("the engine is not running")
        return self._store

    async def wait_for(
        self,
        instance_id: Any,
        predicate: Callable[[Instance], bool] | None = None,
        timeout: float | None = None,
    ) -> ITemplateDAGInstance[Any, Any]:
        """Wait until the committed instance satisfies ``predicate`` (default: terminal)."""
        check = predicate or (lambda inst: inst.is_terminal())
        iid = str(getattr(instance_id, "id", instance_id))
        current = self.committed(iid)
        if current is not None and check(current):
            return self.view(current)
        fut: asyncio.Future[Instance] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(iid, []).append((check, fut))
        result = await asyncio.wait_for(fut, timeout)
        return self.view(result)

    def view(
        self, instance: Instance, runtime_parameters: dict[str, Any] | None = None
    ) -> ITemplateDAGInstance[Any, Any]:
        # Committed instances are never changed (the processor applies events to copies),
        # so the view may share one; the view copies the parameters when they are read.
        template = self.template_dags.get(instance.template_name)
        cls = getattr(template, "template_type", None) or DefaultTemplateDAGInstance
        if not (isinstance(cls, type) and issubclass(cls, ITemplateDAGInstance)):
            cls = DefaultTemplateDAGInstance
        return cls(
            instance=instance,
            runtime_parameters=runtime_parameters,
            engine=self,
            task_factory=self._task_view,
        )

    def _task_view(self, node: Node) -> ITask[Any, Any]:
        cls = self._task_types.get(node.type_name or "", ITask)
        try:
            return cls(node)
        except Exception:
            return ITask(node)

    # Topics ---------------------------------------------------------------------------

    async def append(
        self, topic: str, key: str | None, value: Any, headers: dict[str, str] | None = None
    ) -> int:
        store = self._require_store()
        offset = store.append(topic, key, value, headers, self.clock.now())
        self._signals.notify(topic)
        return offset

    def read_topic(self, topic: str, start: int, limit: int) -> list[Any]:
        return self._require_store().read(topic, start, limit)

    # Internals ------------------------------------------------------------------------

    def _listener_consumer(self, topic: str) -> Consumer:
        return ListenerConsumer(
            f"listener:{topic}",
            topic,
            self._require_store(),
            self._require_started(),
            self._signals,
            self.consumer_auto_offset_reset == "latest",
            self.dead_letter_topic,
            classes=self._listeners[topic],
        )

    def _agent_consumer(self, topic: str, fn: AgentHandler, name: str, concurrency: int) -> Consumer:
        return AgentConsumer(
            f"agent:{name}",
            topic,
            self._require_store(),
            self._require_started(),
            self._signals,
            self.consumer_auto_offset_reset == "latest",
            self.dead_letter_topic,
            handler=fn,
            concurrency=concurrency,
        )

    def _start_consumer(self, consumer: Consumer) -> None:
        self._consumers[consumer.name] = consumer
        consumer.start()

    def _timer_fired(self, instance: str, key: str) -> None:
        from .machine import TimerFired

        if self._processor is not None:
            self._processor.submit_event(instance, TimerFired(key))

    def report(self, instance: str, event: Any, box: list[Any]) -> None:
        if self._processor is not None:
            self._processor.submit_event(instance, event, box)

    def _committed(
        self,
        changed: dict[str, Instance | None],
        deleted: dict[str, Instance],
        appended: list[tuple[str, int]],
    ) -> None:
        for topic in {t for t, _ in appended}:
            self._signals.notify(topic)
        for iid, inst in changed.items():
            if inst is None:
                inst = deleted.get(iid)  # waiters see the final state of a deleted instance
            waiters = self._waiters.get(iid)
            if waiters and inst is not None:
                remaining = []
                for check, fut in waiters:
                    if fut.done():
                        continue
                    if check(inst):
                        fut.set_result(inst)
                    else:
                        remaining.append((check, fut))
                if remaining:
                    self._waiters[iid] = remaining
                else:
                    del self._waiters[iid]
            if self.task_update_callbacks and inst is not None and self._updates is not None:
                # A copy: the cached record changes in place with later commits, and a
                # callback that lags behind must still see the state of this commit.
                self._updates.put_nowait(self.view(inst))

    async def _housekeeping(self) -> None:
        """Forget expired dedupe ids and buffered messages, once a minute."""
        while True:
            await self.clock.sleep_until(self.clock.now() + HOUSEKEEPING_INTERVAL)
            if self._store is not None:
                self._store.purge(self.clock.now(), self.dedupe_ttl)

    async def _notify_updates(self) -> None:
        assert self._updates is not None
        while True:
            view = await self._updates.get()
            for callback in self.task_update_callbacks:
                try:
                    await callback(view)
                except Exception:
                    log.exception("task_update_callback %r failed", callback)

    # Introspection for the REST API and metrics -------------------------------------------

    def stats(self) -> dict[str, Any]:
        p = self._processor
        return {
            "running": self.started_flag,
            "transitions": p.transitions if p else 0,
            "batches": p.batches if p else 0,
            "queued": p.queue.qsize() if p else 0,
            "jobs_running": len(self._jobs) if self._jobs else 0,
            "timers": len(self._timers) if self._timers else 0,
        }
