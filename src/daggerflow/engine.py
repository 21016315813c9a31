"""``Dagger``: the engine object users create, with Dagger's constructor and methods.

A thin facade: it holds the configuration (``config.EngineConfig``), what the application
registered (``registry.Registry``) and, while started, one ``Runtime`` (embedded or Kafka)
to which every instance and topic call is delegated. Several engines can live in one
process: nothing here is global.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from .bulk_actions import BulkActions
from .config import EngineConfig, check_options
from .console_reads import ConsoleReads
from .errors import (
    ConfigurationError,
    InvalidInput,
    InvalidInstanceId,
    NotSerializable,
    TaskInvalidState,
    TooLarge,
)
from .history import HistoryReads
from .machine import Create, Stop, Submit
from .machine.events import Event
from .message_reads import MessageReads
from .migration import Migration
from .model.ids import ID_RULE, id_problem
from .model.instance import Instance, Node, decode_params, encode_params
from .model.records import Message, Outgoing
from .model.template import Overrides, check_search_attributes, instantiate
from .operations import Operations
from .pipeline.background import cancel_and_wait
from .pipeline.clock import Clock, SystemClock
from .pipeline.jobs import JobCallbacks, JobRunner, check_serialisable
from .pipeline.notify import CommitObserver
from .pipeline.outbox import message_size
from .pipeline.partition import TaskContext
from .pipeline.ports import Runtime, RuntimeParts
from .registration import Registration
from .registry import Registry
from .schedules import Schedules
from .search import Search
from .tasks import DefaultTemplateDAGInstance, ITask, ITemplateDAGInstance
from .telemetry import Telemetry, build
from .templates import ITemplateDAG
from .topics import Topics
from .versions import Versions
from .web.auth import TokenOption

log = logging.getLogger("daggerflow")

F = TypeVar("F", bound=Callable[..., Any])

HOUSEKEEPING_INTERVAL = 60.0  # seconds between purges of expired dedupe ids and buffers


class Dagger(
    Registration, Operations, HistoryReads, BulkActions, Search, Schedules, Versions, Migration, ConsoleReads,
    MessageReads,
):
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
        api_token: TokenOption = None,
        metrics_public: bool = False,
        web_tls_certfile: str | None = None,
        web_tls_keyfile: str | None = None,
        web_tls_cafile: str | None = None,
        kafka_client_options: Mapping[str, Any] | None = None,
        broker_credentials: Any = None,
        max_request_bytes: int = 2 * 1024 * 1024,
        max_message_bytes: int = 1024 * 1024,
        max_parameters_bytes: int = 1024 * 1024,
        max_instance_bytes: int = 1024 * 1024,
        topic_retention: dict[str, dict[str, Any]] | None = None,
        history_limit: int = 100,
        tracing: bool | None = None,
        metrics: bool = True,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        console: bool = True,
        console_test_messages: bool | None = None,
        console_refresh: float = 1.0,
        **kwargs: Any,
    ) -> None:
        check_options(kwargs)
        if aerospike_config is not None:
            raise ConfigurationError("aerospike_config is not supported: there is no Aerospike store")
        self.config = EngineConfig(
            broker=broker,
            store=store,
            datadir=datadir or "",
            application_name=application_name,
            task_update_topic=task_update_topic,
            task_update_callbacks=tuple(task_update_callbacks or ()),
            delete_workflow_on_complete=delete_workflow_on_complete,
            web_port=web_port,
            web_host=web_host,
            consumer_auto_offset_reset=consumer_auto_offset_reset,
            max_concurrent_jobs=max_concurrent_jobs,
            max_batch_size=max_batch_size,
            durability=durability,
            unmatched_message_ttl=unmatched_message_ttl,
            dedupe_ttl=dedupe_ttl,
            dead_letter_topic=dead_letter_topic,
            shutdown_timeout=shutdown_timeout,
            kafka_partitions=kafka_partitions,
            processing_guarantee=processing_guarantee,
            num_standby_replicas=num_standby_replicas,
            role=role,
            inline_jobs=inline_jobs,
            commit_interval=commit_interval,
            api_token=api_token,
            metrics_public=metrics_public,
            web_tls_certfile=web_tls_certfile,
            web_tls_keyfile=web_tls_keyfile,
            web_tls_cafile=web_tls_cafile,
            kafka_client_options=kafka_client_options,
            broker_credentials=broker_credentials,
            max_request_bytes=max_request_bytes,
            max_message_bytes=max_message_bytes,
            max_parameters_bytes=max_parameters_bytes,
            max_instance_bytes=max_instance_bytes,
            topic_retention=topic_retention,
            history_limit=history_limit,
            tracing=tracing,
            metrics=metrics,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            console=console,
            console_test_messages=console_test_messages,
            console_refresh=console_refresh,
        )
        self.clock: Clock = clock or SystemClock()
        self.topics: Topics = Topics(self)
        self._registry = Registry(self.topics)
        self.template_dags = self._registry.templates
        self.process_templates = self._registry.process_templates
        self.runtime: Runtime | None = None
        self._code_schedules = {}  # engine.schedule(): applied at every start
        self._limits = self.config.limits()
        self._observer: CommitObserver | None = None
        self.telemetry: Telemetry | None = None
        self._jobs: JobRunner | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._web: Any = None
        self.web_url: str | None = None
        self.started_at: float | None = None  # (the Workers view shows it)
        if task_update_topic:
            self.create_topic(task_update_topic)
        self.task_update_topic = self.topics[task_update_topic] if task_update_topic else None

    @property
    def max_request_bytes(self) -> int:
        return self.config.max_request_bytes

    def reconfigure(self, **changes: Any) -> None:
        """Change options before the engine starts (the CLI's overrides), validated again."""
        if self.runtime is not None:
            raise TaskInvalidState("the engine's options cannot change while it runs")
        self.config = self.config.replace(**changes)

    @property
    def running(self) -> bool:
        return self.runtime is not None and self.runtime.running

    @property
    def runtime_name(self) -> str:
        return "kafka" if self.config.broker is not None else "embedded"

    @property
    def console_test_messages(self) -> bool:
        """The option, else on for an embedded engine (a development set-up) and off on Kafka,
        where a test message would reach production consumers."""
        option = self.config.console_test_messages
        return self.config.broker is None if option is None else option

    @property
    def dead_letter_topic(self) -> str:
        """Where dead letters go: the option, else the runtime's default."""
        return self.config.dead_letter

    def add_template(
        self, name: str, template: ITemplateDAG, *, search_attributes: Sequence[str] | None = None
    ) -> None:
        """Register ``template`` under ``name`` and bind it to this engine; ``search_attributes``
        (if given) replaces the runtime parameters its new instances are indexed by."""
        if template.name != name:
            template.spec.name = name
        if search_attributes is not None:
            template.spec.search_attributes = check_search_attributes(search_attributes)
        template.app = self
        self.register_task_types_of(template.spec.root_process)
        self.template_dags[name] = template

    # Lifecycle ------------------------------------------------------------------------

    def _build_runtime(self, jobs: JobRunner, observer: CommitObserver) -> Runtime:
        cfg = self.config
        context = TaskContext(self.clock, jobs, observer, cfg.inline_jobs, cfg.dedupe_ttl, self.check_store)
        settings = dataclasses.replace(
            cfg.pipeline_settings(), instantiate=self._tick_instance, registered_version=self._registered_version
        )
        if self._observing():
            settings = dataclasses.replace(settings, observer=self.telemetry)
        parts = RuntimeParts(settings, self._registry, context, observer)
        if cfg.broker is None:
            from .embedded.runtime import EmbeddedRuntime

            return EmbeddedRuntime(cfg.embedded_config(), parts)
        from .kafka.runtime import KafkaRuntime  # the kafka extra: imported only when asked for

        return KafkaRuntime(cfg.kafka_config(), parts)

    async def start(self) -> None:
        """Start the REST API (first: a Kafka worker publishes its URL with its partitions,
        and the API answers "not ready" until the runtime is), then the runtime."""
        if self.runtime is not None:
            return
        cfg = self.config
        self.started_at = self.clock.now()
        self._limits = cfg.limits()  # (the options are fixed while the engine runs)
        self._jobs = JobRunner(JobCallbacks(self.committed, self.task_class, self.view, self._report),
                               cfg.max_concurrent_jobs, self._limits.message)  # fmt: skip
        # Tracing is decided here, once: a provider installed after the start is not used.
        self.telemetry = build(self.clock.now, system="kafka" if cfg.broker is not None else "daggerflow",
                               tracing=cfg.tracing, group=cfg.application_name if cfg.broker else "",
                               tracer_provider=cfg.tracer_provider,
                               meter_provider=cfg.meter_provider, metrics=cfg.metrics)  # fmt: skip
        self._observer = CommitObserver(self.view, cfg.task_update_callbacks, cfg.dead_letter,
                                        self.telemetry if self._observing() else None)  # fmt: skip
        runtime = self._build_runtime(self._jobs, self._observer)
        self.runtime = runtime
        self._observer.start()
        self._tasks.append(asyncio.create_task(self._housekeeping(), name="daggerflow-housekeeping"))
        try:
            if cfg.web_port is not None and cfg.role == "worker":
                await self._start_web()
            await runtime.start(self.web_url)
            await self._apply_code_schedules()
        except BaseException:
            await self.stop()  # do not leave a half-started engine holding the store
            raise
        if cfg.role == "worker":
            self.remember_registered_versions()
        if cfg.broker is not None:
            log.info("daggerflow engine %r started on Kafka as a %s (web %s)", cfg.application_name, cfg.role,
                     self.web_url or "off")  # fmt: skip

    def _observing(self) -> bool:
        """Whether the pipeline reports to the telemetry (metrics on, or spans to emit)."""
        tel = self.telemetry
        return tel is not None and (self.config.metrics or tel.tracing is not None)

    async def _start_web(self) -> None:
        from .web.server import WebServer, worker_app

        security = self.config.web_security()
        app = worker_app(self, security, console=self.config.console, refresh=self.config.console_refresh)
        web = WebServer(app, self.config.web_host, self.config.web_port or 0, security)
        await web.start()
        self._web = web
        self.web_url = web.url

    async def stop(self) -> None:
        """Drain and commit: stop reading, let running jobs finish (up to
        ``shutdown_timeout``), commit their outcomes, then close the state."""
        runtime = self.runtime
        if runtime is None:
            return
        if self._web is not None:
            await self._web.stop()
            self._web = None
        try:
            await runtime.stop()
        finally:
            self.runtime = None
            for task in self._tasks:
                await cancel_and_wait(task)
            self._tasks.clear()
            if self._observer is not None:
                await self._observer.stop()

    async def __aenter__(self) -> Dagger:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def main(self, override_logging: bool = False) -> None:
        """Run the worker and the REST API until SIGINT/SIGTERM, then drain and exit."""
        from .worker import run_worker

        run_worker(self, override_logging=override_logging)

    async def _housekeeping(self) -> None:
        """Forget expired dedupe ids and buffered messages, once a minute."""
        while True:
            await self.clock.sleep_until(self.clock.now() + HOUSEKEEPING_INTERVAL)
            if self.runtime is not None and self.runtime.running:
                self.runtime.purge()

    def _runtime(self) -> Runtime:
        runtime = self.runtime
        if runtime is None or not runtime.running:
            raise TaskInvalidState(
                "the engine is not running: use `async with engine:`, `await engine.start()` or `engine.main()`"
            )
        failed = self._jobs.failed if self._jobs is not None else None
        if failed is not None:
            raise TaskInvalidState(f"the engine's job runner stopped after an error: {failed!r}")
        return runtime

    # Instances ------------------------------------------------------------------------

    async def create_instance(
        self,
        template: ITemplateDAG,
        instance_id: Any,
        runtime_parameters: dict[str, Any],
        *,
        partition_key_lookup: str | None = None,
        repartition: bool = False,
        seed: random.Random | int | str | None = None,
        submit_task: bool = False,
        overrides: Overrides | None = None,
    ) -> ITemplateDAGInstance[Any, Any]:
        """Create (and with ``submit_task`` start) an instance. Refused before anything is
        written: an id outside the rule (``InvalidInstanceId``), a ``partition_key_lookup``
        that is not a parameter name or parameters that are not a dict of str keys
        (``InvalidInput``), values that cannot be stored (``NotSerializable``), and
        parameters or an instance record over the size limits (``TooLarge``)."""
        runtime = self._runtime()
        iid = _checked_id(instance_id)
        if partition_key_lookup is not None and not (isinstance(partition_key_lookup, str) and partition_key_lookup):
            raise InvalidInput(
                f"partition_key_lookup must be None or the name of a runtime parameter (a non-empty string), "
                f"got {partition_key_lookup!r}"
            )
        if not isinstance(runtime_parameters, dict):
            raise InvalidInput(f"runtime parameters must be a dict, got a {type(runtime_parameters).__name__}")
        for name in runtime_parameters:
            if not isinstance(name, str):
                raise InvalidInput(f"runtime parameter names must be strings, got {name!r}")
        problem = check_serialisable(runtime_parameters, "runtime parameter")
        if problem is not None:
            raise NotSerializable(problem)
        limits = self._limits
        encoded = encode_params(runtime_parameters)
        if len(encoded) > limits.parameters:
            raise TooLarge(f"the runtime parameters of instance {iid!r}", len(encoded), limits.parameters,
                           " (max_parameters_bytes)")  # fmt: skip
        if repartition and partition_key_lookup and runtime_parameters.get(partition_key_lookup) is None:
            raise TaskInvalidState(
                f"repartition=True needs runtime parameter {partition_key_lookup!r} (partition_key_lookup)"
            )
        if overrides is None:  # (called directly, as the REST API does: the template's defaults)
            overrides = template.overrides()
        else:
            for processes in (*overrides.dynamic.values(), *overrides.parallel.values()):
                for p in processes:
                    self.register_task_types_of(p)
        instance = instantiate(
            template.spec,
            iid,
            decode_params(encoded),
            now=self.clock.now(),
            seed=seed,
            partition_key_lookup=partition_key_lookup,
            overrides=overrides,
        )
        tel = self.telemetry
        if tel is not None and tel.tracing is not None:
            instance.trace = tel.tracing.context_for(iid, template.name)
        # The whole record's size is checked where it is encoded anyway (the batch that
        # creates it): a record over max_instance_bytes fails this call with TooLarge.
        applied, result = await runtime.call(iid, Create(instance, submit_task))
        # Sent to the owner (another worker): what it creates, unless the id exists there.
        return self.view(result if applied and result is not None else instance)

    async def submit(
        self, task: Any, *, repartition: bool = False, actor: str | None = None
    ) -> ITemplateDAGInstance[Any, Any]:
        """Start a created instance. Submitting a terminal instance raises TaskInvalidState.

        On Kafka, when another worker owns the instance, the submit is sent to it and this
        returns the instance as last known (``task`` itself if it is an instance view)."""
        instance_id = _checked_id(getattr(task, "id", task))
        applied, result = await self._runtime().call(instance_id, Submit(actor))
        if applied and result is not None:
            return self.view(result)
        if isinstance(task, ITemplateDAGInstance):
            return task
        known = await self.get_instance_state(instance_id)
        if known is None:
            raise TaskInvalidState(f"submit of {instance_id!r} was sent, but the instance is not known yet")
        return self.view(known)

    async def stop_instance(self, instance_id: Any) -> ITemplateDAGInstance[Any, Any] | None:
        """Stop a workflow: every non-terminal node becomes STOPPED; a no-op when terminal.
        None when there is no such instance (an id outside the rule names none)."""
        runtime = self._runtime()
        instance_id = _known_id(instance_id)
        if instance_id is None or await runtime.get_instance(instance_id) is None:
            return None
        applied, result = await runtime.call(instance_id, Stop())
        if applied:
            return None if result is None else self.view(result)
        known = await runtime.get_instance(instance_id)
        return None if known is None else self.view(known)

    async def get_instance(self, id: Any, log: bool = True) -> ITemplateDAGInstance[Any, Any] | None:
        iid = _known_id(id)
        instance = None if iid is None else await self.get_instance_state(iid)
        return None if instance is None else self.view(instance)

    async def get_instance_state(self, instance_id: str) -> Instance | None:
        """The committed state of any instance: from this process if it holds it, else (on
        Kafka) from the worker that owns it, through its REST API. None for an id outside
        the rule: no instance can have it."""
        if self.runtime is None or id_problem(instance_id) is not None:
            return None
        return await self.runtime.get_instance(str(instance_id))

    def local_instance(self, instance_id: str) -> Instance | None:
        """The committed instance if this process holds it (REST forwarding answers with it);
        on Kafka, ``NotOwner`` when this worker does not hold its partition now."""
        return self._runtime().local_instance(instance_id)

    def committed(self, instance_id: str) -> Instance | None:
        return None if self.runtime is None else self.runtime.committed(instance_id)

    async def wait_for(
        self,
        instance_id: Any,
        predicate: Callable[[Instance], bool] | None = None,
        timeout: float | None = None,
    ) -> ITemplateDAGInstance[Any, Any]:
        """Wait until the committed instance satisfies ``predicate`` (default: terminal)."""
        check = predicate or (lambda inst: inst.is_terminal())
        iid = str(getattr(instance_id, "id", instance_id))
        return self.view(await self._runtime().wait_for(iid, check, timeout))

    def view(
        self, instance: Instance, runtime_parameters: dict[str, Any] | None = None
    ) -> ITemplateDAGInstance[Any, Any]:
        # Committed instances are never changed (the processor applies events to copies),
        # so the view may share one; the view copies the parameters when they are read.
        template = self.template_dags.get(instance.template_name)
        cls = getattr(template, "template_type", None) or DefaultTemplateDAGInstance
        if not (isinstance(cls, type) and issubclass(cls, ITemplateDAGInstance)):
            cls = DefaultTemplateDAGInstance
        return cls(instance=instance, runtime_parameters=runtime_parameters, engine=self, task_factory=self._task_view)

    def _task_view(self, node: Node) -> ITask[Any, Any]:
        cls = self._registry.task_types.get(node.type_name or "", ITask)
        try:
            return cls(node)
        except Exception:
            return ITask(node)

    # Topics ---------------------------------------------------------------------------

    async def append(
        self, topic: str, key: str | None, value: Any, headers: dict[str, str] | None = None
    ) -> int:
        """Append a message (its value already encoded: str or bytes) to a topic; durable
        when this returns. ``TooLarge`` over ``max_message_bytes``."""
        runtime = self._runtime()
        limit = self._limits.message
        size = message_size(value)
        if size > limit:
            raise TooLarge(f"the message value for topic {topic!r}", size, limit, " (max_message_bytes)")
        return await runtime.append(topic, key, value, headers)

    def read_topic(self, topic: str, start: int, limit: int) -> list[Message]:
        return self._runtime().read_topic(topic, start, limit)

    def topic_names(self) -> list[str]:
        """Every topic this engine knows: those user code named, and the runtime's."""
        return sorted(set(self.topics) | set(self._runtime().topic_names()))

    def _report(self, instance: str, event: Event, box: list[Outgoing]) -> None:
        """A job's outcome, for the runtime that holds its instance."""
        if self.runtime is not None:
            self.runtime.submit_outcome(instance, event, box)

    def stats(self) -> dict[str, Any]:
        if self.runtime is None:
            return {"running": False, "transitions": 0, "batches": 0, "queued": 0, "jobs_running": 0, "timers": 0}
        return self.runtime.stats()


def _checked_id(value: Any) -> str:
    """The instance id as stored, or ``InvalidInstanceId`` naming the rule."""
    problem = id_problem(value)
    if problem is not None:
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        raise InvalidInstanceId(f"instance id {shown} is refused: {problem}; {ID_RULE}")
    return str(value)


def _known_id(value: Any) -> str | None:
    """The id of an instance (or of an instance view), or None when no instance can have it."""
    value = getattr(value, "id", value)
    return None if id_problem(value) is not None else str(value)
