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
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import ConfigurationError, NotSerializable, TaskInvalidState, TemplateDoesNotExist
from .machine import Create, Stop, Submit
from .model.instance import Instance, Node, copy_params, merge_listings
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

if TYPE_CHECKING:
    from .log.kafka_runtime import KafkaRuntime

log = logging.getLogger("daggerflow")

F = TypeVar("F", bound=Callable[..., Any])

HOUSEKEEPING_INTERVAL = 60.0  # seconds between purges of expired dedupe ids and buffers

# Dagger's constructor options that have no effect here: they configured faust, Aerospike or
# a timer poll that this design does not need. Accepted so Dagger code keeps working.
_ACCEPTED_NO_EFFECT = {
    "package_name",
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


def _dump_tasks() -> None:
    """Log the stack of every asyncio task (``kill -USR1`` a worker that seems stuck)."""
    import io

    for task in asyncio.all_tasks():
        out = io.StringIO()
        task.print_stack(file=out)
        log.warning("task %s:\n%s", task.get_name(), out.getvalue())


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
        dead_letter_topic: str | None = None,
        shutdown_timeout: float = 10.0,
        kafka_partitions: int = 12,
        processing_guarantee: str = "exactly_once",
        num_standby_replicas: int = 0,
        role: str = "worker",
        inline_jobs: bool = True,
        commit_interval: float = 0.0,
        **kwargs: Any,
    ) -> None:
        unknown = set(kwargs) - _ACCEPTED_NO_EFFECT
        if unknown:
            raise ConfigurationError(
                f"unknown Dagger option(s): {', '.join(sorted(unknown))}. Supported: broker, store, "
                "datadir, application_name, task_update_topic, task_update_callbacks, "
                "delete_workflow_on_complete, web_port, web_host, consumer_auto_offset_reset, "
                "clock, max_concurrent_jobs, max_batch_size, durability, unmatched_message_ttl, "
                "dedupe_ttl, dead_letter_topic, shutdown_timeout, kafka_partitions, "
                "processing_guarantee, num_standby_replicas, role, inline_jobs, commit_interval, and Dagger's faust-era options "
                f"(accepted, no effect): {', '.join(sorted(_ACCEPTED_NO_EFFECT))}"
            )
        if broker is not None:
            from .log.kafka_runtime import parse_broker

            parse_broker(broker)  # a clear error now, not at start()
        if processing_guarantee not in ("exactly_once", "at_least_once"):
            raise ConfigurationError("processing_guarantee must be 'exactly_once' or 'at_least_once'")
        if role not in ("worker", "client"):
            raise ConfigurationError("role must be 'worker' (processes partitions) or 'client'")
        if kafka_partitions < 1 or num_standby_replicas < 0:
            raise ConfigurationError("kafka_partitions must be >= 1 and num_standby_replicas >= 0")
        # Fail at construction, naming what is supported (e.g. store="aerospike://").
        if not (broker is not None and store in ("sqlite://", "rocksdb://")):
            check_store_url(store)  # on Kafka, "sqlite://"/"rocksdb://" choose the partition stores' kind
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
        self.inline_jobs = inline_jobs
        self.commit_interval = commit_interval
        self.durability = durability
        self.unmatched_message_ttl = unmatched_message_ttl
        self.dedupe_ttl = dedupe_ttl
        self._dead_letter_topic = dead_letter_topic or None
        self.shutdown_timeout = shutdown_timeout
        self.kafka_partitions = kafka_partitions
        self.processing_guarantee = processing_guarantee
        self.num_standby_replicas = num_standby_replicas
        self.role = role
        self.options = dict(kwargs)
        self._kafka: KafkaRuntime | None = None

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

    @property
    def dead_letter_topic(self) -> str:
        """Where dead letters go: the ``dead_letter_topic`` option, else the runtime's default
        (embedded ``daggerflow-dead-letter``, Kafka ``{application_name}-dead-letter``). Read
        when used: the CLI may set the broker and application name after construction."""
        if self._dead_letter_topic is not None:
            return self._dead_letter_topic
        return f"{self.application_name}-dead-letter" if self.broker is not None else "daggerflow-dead-letter"

    @dead_letter_topic.setter
    def dead_letter_topic(self, name: str | None) -> None:
        self._dead_letter_topic = name or None

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

    def processor_settings(self) -> Settings:
        ttl = self.unmatched_message_ttl
        return Settings(
            delete_on_complete=self.delete_workflow_on_complete,
            task_update_topic=self.task_update_topic_name,
            unmatched_ttl=(lambda t: float(ttl.get(t, 0.0)))
            if isinstance(ttl, dict)
            else (lambda t: float(ttl)),
            max_batch=self.max_batch_size,
        )

    @property
    def is_kafka(self) -> bool:
        return self.broker is not None

    async def start(self) -> None:
        if self.started_flag:
            return
        if self.broker is not None:
            await self._start_kafka()
            return
        store = open_store(
            self.store_url,
            datadir=self.datadir,
            application_name=self.application_name,
            durability=self.durability,
        )
        self._store = store
        processor = Processor(store, self.clock, self.processor_settings())
        self._processor = processor
        jobs = JobRunner(self, self.max_concurrent_jobs)
        self._jobs = jobs
        timers = TimerService(self.clock, self._timer_fired)
        self._timers = timers
        processor.on_job = jobs.submit
        processor.run_inline = jobs.run_inline if self.inline_jobs else None
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
        await self._start_web()
        log.info(
            "daggerflow engine %r started (store %s, web %s)",
            self.application_name,
            store.path,
            self.web_url or "off",
        )

    async def _start_web(self) -> None:
        if self.web_port is None:
            return
        from .web.server import WebServer

        self._web = WebServer(self, self.web_host, self.web_port)
        try:
            await self._web.start()
        except BaseException:
            self._web = None
            await self.stop()  # do not leave a half-started engine holding the store
            raise
        self.web_url = self._web.url

    def _kafka_config(self) -> Any:
        from .log.kafka_runtime import KafkaConfig, parse_broker

        assert self.broker is not None
        store_kind = "rocksdb" if (self.store_url or "").startswith("rocksdb") else "sqlite"
        return KafkaConfig(
            bootstrap=parse_broker(self.broker),
            app=self.application_name,
            partitions=self.kafka_partitions,
            guarantee=self.processing_guarantee,
            standbys=self.num_standby_replicas,
            role=self.role,
            datadir=self.datadir,
            store_kind=store_kind,
            durability=self.durability,
            auto_offset_reset=self.consumer_auto_offset_reset,
            commit_interval=self.commit_interval,
            dead_letter_topic=self._dead_letter_topic,
        )

    def _user_topics(self) -> set[str]:
        """Topics the templates send to or listen on (created up front in Kafka)."""
        names = set(self._listeners) | {a[0] for a in self._agents} | set(self.topics)
        for template in self.template_dags.values():
            for t in walk_templates(template.spec.root_process):
                if isinstance(t, TaskTemplate) and t.topic:
                    names.add(t.topic)
        if self.task_update_topic_name:
            names.add(self.task_update_topic_name)
        return names

    async def _start_kafka(self) -> None:
        from .log.kafka_runtime import KafkaRuntime

        runtime = KafkaRuntime(self, self._kafka_config())
        self._kafka = runtime
        self._jobs = JobRunner(self, self.max_concurrent_jobs)
        self._updates = asyncio.Queue()
        self._tasks.append(asyncio.create_task(self._notify_updates(), name="daggerflow-updates"))
        self._tasks.append(asyncio.create_task(self._housekeeping(), name="daggerflow-housekeeping"))
        self.started_flag = True
        try:
            if self.role == "worker":
                await self._start_web()  # first: owners publish its URL
            await runtime.start(self._listeners, self._agents, self._user_topics())
        except BaseException:
            await self.stop()
            raise
        log.info("daggerflow engine %r started on Kafka as a %s (web %s)", self.application_name, self.role,
                 self.web_url or "off")  # fmt: skip

    async def _stop_kafka(self) -> None:
        assert self._kafka is not None
        if self._jobs is not None:
            await self._jobs.drain(self.shutdown_timeout)
        await self._kafka.stop()
        self._kafka = None

    async def stop(self) -> None:
        """Drain and commit: stop reading, let running jobs finish (up to
        ``shutdown_timeout``), commit their outcomes, then close the store."""
        if not self.started_flag:
            return
        self.started_flag = False
        if self._web is not None:
            await self._web.stop()
            self._web = None
        if self._kafka is not None:
            await self._stop_kafka()
            for task in self._tasks:
                await cancel_and_wait(task)
            self._tasks.clear()
            self._fail_waiters()
            return
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
        self._fail_waiters()
        if self._store is not None:
            self._store.close()
            self._store = None

    def _fail_waiters(self) -> None:
        for waiters in self._waiters.values():
            for _, fut in waiters:
                if not fut.done():
                    fut.cancel()
        self._waiters.clear()

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
        loop.add_signal_handler(signal.SIGUSR1, _dump_tasks)  # what is each task waiting on?
        await self.start()
        # A worker owns its process: move what start-up built (modules, templates) out of
        # the collector's reach, which halved the full-collection pause in the benchmark.
        gc.freeze()
        jobs_failed: asyncio.Task[None] | None = None
        try:
            waiter = asyncio.create_task(stop.wait())
            vital: asyncio.Task[None] | None
            if self._kafka is not None:
                # Partition tasks recover on their own; the fetch or a topic loop ending is fatal.
                vital = self._kafka.vital_task()
            else:
                assert self._processor is not None
                vital = self._processor._task
            assert vital is not None and self._jobs is not None
            # The job runner serves every partition: its failure is fatal on both runtimes.
            jobs_failed = asyncio.create_task(self._jobs.failure(), name="daggerflow-job-runner")
            await asyncio.wait({waiter, vital, jobs_failed}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            loops = "the processor" if self._kafka is None else "the fetch or a topic loop"
            for what, task in (("the job runner", jobs_failed), (loops, vital)):
                if task.done() and not task.cancelled() and (exc := task.exception()) is not None:
                    log.error("the worker stops: %s failed: %r", what, exc)
                    raise exc
            # (it ends while stopping, the loops being stopped: that is not news)
            vital.add_done_callback(lambda t: t.cancelled() or t.exception())
            log.info("signal received: draining")
        finally:
            if jobs_failed is not None:
                jobs_failed.cancel()
            await self.stop()
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
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
        self._require_job_runner()
        return self._processor

    def _require_job_runner(self) -> None:
        failed = self._jobs.failed if self._jobs is not None else None
        if failed is not None:
            raise TaskInvalidState(f"the engine's job runner stopped after an error: {failed!r}")

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
        self._require_running()
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
        if self._kafka is not None:
            applied, result = await self._kafka.call(instance_id, Create(instance, submit_task))
            # Sent to the owner (another worker): what it creates, unless the id exists there.
            return self.view(result if applied and result is not None else instance)
        created: Instance = await self._require_started().call(instance_id, Create(instance, submit_task))
        return self.view(created)

    async def submit(self, task: Any, *, repartition: bool = False) -> ITemplateDAGInstance[Any, Any]:
        """Start a created instance. Submitting a terminal instance raises TaskInvalidState.

        On Kafka, when another worker owns the instance, the submit is sent to it and this
        returns the instance as last known (``task`` itself if it is an instance view)."""
        instance_id = str(getattr(task, "id", task))
        if self._kafka is not None:
            applied, result = await self._kafka.call(instance_id, Submit())
            if applied and result is not None:
                return self.view(result)
            if isinstance(task, ITemplateDAGInstance):
                return task
            known = await self.get_instance_state(instance_id)
            if known is None:
                raise TaskInvalidState(
                    f"submit of {instance_id!r} was sent, but the instance is not known yet"
                )
            return self.view(known)
        submitted: Instance | None = await self._require_started().call(instance_id, Submit())
        assert submitted is not None
        return self.view(submitted)

    async def stop_instance(self, instance_id: Any) -> ITemplateDAGInstance[Any, Any] | None:
        """Stop a workflow: every non-terminal node becomes STOPPED; a no-op when terminal."""
        instance_id = str(getattr(instance_id, "id", instance_id))
        if self._kafka is not None:
            self._require_running()
            if await self.get_instance_state(instance_id) is None:
                return None
            applied, result = await self._kafka.call(instance_id, Stop())
            if applied:
                return None if result is None else self.view(result)
            known = await self.get_instance_state(instance_id)
            return None if known is None else self.view(known)
        processor = self._require_started()
        if processor.committed(instance_id) is None:
            return None
        stopped: Instance | None = await processor.call(instance_id, Stop())
        return None if stopped is None else self.view(stopped)

    async def get_instance(self, id: Any, log: bool = True) -> ITemplateDAGInstance[Any, Any] | None:
        instance = await self.get_instance_state(str(getattr(id, "id", id)))
        return None if instance is None else self.view(instance)

    async def get_instance_state(self, instance_id: str) -> Instance | None:
        """The committed state of any instance: from this process if it holds it, else (on
        Kafka) from the worker that owns it, through its REST API."""
        local = self.committed(instance_id)
        if local is not None or self._kafka is None:
            return local
        return await self._kafka.remote_instance(instance_id)

    def local_instance(self, instance_id: str) -> Instance | None:
        """The committed instance if this process holds it (REST forwarding answers with it).

        On Kafka, raises ``NotOwner`` when this worker has no active task for the instance's
        partition (it moved, or is being activated): "ask the owner again", not "no such
        instance"."""
        if self._kafka is not None and self._kafka.local_task(instance_id) is None:
            from .log.owners import NotOwner

            raise NotOwner(f"this worker does not hold the partition of {instance_id!r} now")
        return self.committed(instance_id)

    def committed(self, instance_id: str) -> Instance | None:
        if self._kafka is not None:
            return self._kafka.committed(instance_id)
        if self._processor is not None:
            return self._processor.committed(instance_id)
        return None

    def list_instances(
        self, *, status: str | None = None, template: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[Instance]:
        """Instances held by this process (every instance when embedded)."""
        if self._kafka is not None:
            return merge_listings(
                (
                    store.list_instances(status=status, template=template, limit=offset + limit, offset=0)
                    for store in self._kafka.stores()
                ),
                offset=offset,
                limit=limit,
            )
        store = self._require_store()
        return store.list_instances(status=status, template=template, limit=limit, offset=offset)

    def count_instances(self, *, status: str | None = None, template: str | None = None) -> int:
        if self._kafka is not None:
            return sum(s.count_instances(status=status, template=template) for s in self._kafka.stores())
        return self._require_store().count_instances(status=status, template=template)

    async def list_instances_async(
        self, *, status: str | None = None, template: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[Instance]:
        """Like ``list_instances``, across every worker on Kafka."""
        if self._kafka is not None:
            return await self._kafka.list_everywhere(
                status=status, template=template, limit=limit, offset=offset
            )
        return self.list_instances(status=status, template=template, limit=limit, offset=offset)

    async def count_instances_async(self, *, status: str | None = None, template: str | None = None) -> int:
        if self._kafka is not None:
            return await self._kafka.count_everywhere(status=status, template=template)
        return self.count_instances(status=status, template=template)

    def _require_running(self) -> None:
        if self._kafka is not None and self.started_flag:
            self._require_job_runner()
            return
        self._require_started()

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
        if self._kafka is not None and self._kafka.local_task(iid) is None:
            return self.view(await self._kafka.poll_until(iid, check, timeout))
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
        if self._kafka is not None:
            return await self._kafka.append(topic, key, value, headers)
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
        if self._kafka is not None:
            self._kafka.report(instance, event, box)
        elif self._processor is not None:
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
            if self._kafka is not None:
                self._kafka.purge()  # through each partition's changelog
            elif self._store is not None:
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
        if self._kafka is not None:
            tasks = list(self._kafka.tasks.values())
            return {
                "running": self.started_flag,
                "transitions": sum(t.processor.transitions for t in tasks),
                "batches": sum(t.processor.batches for t in tasks),
                "queued": sum(t.processor.queue.qsize() for t in tasks),
                "jobs_running": len(self._jobs) if self._jobs else 0,
                "timers": sum(len(t.timers) for t in tasks),
                "partitions": sorted(self._kafka.active_partitions),
            }
        p = self._processor
        return {
            "running": self.started_flag,
            "transitions": p.transitions if p else 0,
            "batches": p.batches if p else 0,
            "queued": p.queue.qsize() if p else 0,
            "jobs_running": len(self._jobs) if self._jobs else 0,
            "timers": len(self._timers) if self._timers else 0,
        }
