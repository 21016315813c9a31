"""Task base classes that users subclass, with Dagger's names and override signatures.

A task object is made fresh for each call of user code from the node it stands for, so it
carries that node's fields (``id``, ``task_name``, ``status``, ``topic`` ...) but holds no
state between calls: the state lives in the instance record. Setting ``self.status`` to
FAILURE (or SKIPPED) inside ``execute`` ends the task with that status, as in Dagger.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from .errors import InvalidTaskType
from .model.instance import Instance, Node, RetryPolicy, copy_params
from .model.status import Kind, TaskOperator, TaskStatus, TaskStatusEnum, task_type_of

KT = TypeVar("KT")
VT = TypeVar("VT")
TaskLookupKey = tuple[Any, Any]


class InstanceStopper(Protocol):
    """What an instance view calls on its engine (``Dagger`` is one)."""

    async def stop_instance(self, instance_id: Any) -> Any: ...


class ITask(Generic[KT, VT]):
    """Base of every node users see: tasks, processes and workflow instances."""

    #: Name this class is registered and stored under (default: the class name).
    type_name: ClassVar[str | None] = None
    #: Runtime parameter a listener correlates on.
    correlatable_key: ClassVar[str | None] = None
    #: Deliver a message to only the first waiting match per correlation value.
    match_only_one: ClassVar[bool] = False
    #: Default retry policy for this task type (builders may override it).
    retry_policy: ClassVar[RetryPolicy | None] = None

    id: str
    task_name: str
    parent_id: str | None
    status: TaskStatus
    next_dags: list[str]
    root_dag: str | None
    topic: str | None
    time_created: float
    time_submitted: float
    time_completed: float
    allow_skip_to: bool
    reprocess_on_message: bool
    attempts: int
    error: str | None
    task_type: str

    def __init__(self, node: Node | None = None) -> None:
        if node is None:
            node = Node(id="", name=type(self).__name__, kind="executor")
        self._node = node
        self.id = node.id
        self.task_name = node.name
        self.parent_id = node.parent
        self.status = TaskStatus.of(node.status)
        self.next_dags = list(node.next)
        self.root_dag = node.children[0] if node.children else None
        self.topic = node.topic
        self.time_created = node.time_created
        self.time_submitted = node.time_submitted
        self.time_completed = node.time_completed
        self.allow_skip_to = node.allow_skip_to
        self.reprocess_on_message = node.reprocess_on_message
        self.attempts = node.attempts
        self.error = node.error
        self.task_type = task_type_of(node.kind)

    def get_id(self) -> str:
        return self.id

    def status_code(self) -> str:
        """The status as set by user code, accepting TaskStatus, the enum or a string."""
        status: Any = self.status
        if isinstance(status, TaskStatus):
            return status.code
        if isinstance(status, TaskStatusEnum):
            return status.value
        return str(status)

    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        raise NotImplementedError(f"{type(self).__name__}.execute is not implemented")

    async def stop(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        """Called when the workflow is stopped while this task is executing."""
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.task_name} {self.status.code}>"


class ExecutorTask(ITask[KT, VT]):
    """Runs ``execute`` once when reached, then the next task starts."""


class KafkaCommandTask(ExecutorTask[KT, VT]):
    """An executor whose ``topic`` names the command topic it sends to."""


class SensorTask(ITask[KT, VT]):
    """Waits for a correlated message; ``on_message`` returning True completes it."""

    async def on_message(self, runtime_parameters: dict[str, Any], *args: Any, **kwargs: Any) -> bool:
        return True

    async def get_correlatable_keys_from_payload(self, payload: Any) -> list[TaskLookupKey]:
        key = await self.get_correlatable_key_from_payload(payload)
        if isinstance(key, list):
            return key
        return [key] if key else []

    async def get_correlatable_key_from_payload(self, payload: Any) -> Any:
        return self.get_correlatable_key(payload)

    def get_correlatable_key(self, payload: Any) -> Any:
        """Deprecated in Dagger: map a payload to one (key name, value) pair."""
        return payload

    def get_message_id(self, payload: Any) -> str | None:
        """Override to deduplicate: a message whose id was already seen is ignored."""
        return None


class KafkaListenerTask(SensorTask[KT, VT]):
    """A sensor on a topic (Dagger's listener)."""


class TriggerTask(ExecutorTask[KT, VT]):
    """Runs ``execute`` at ``time_to_execute`` (epoch seconds, read at creation)."""

    time_to_execute: float | None

    def __init__(self, node: Node | None = None) -> None:
        super().__init__(node)
        self.time_to_execute = self._node.time_to_execute


class IntervalTask(TriggerTask[KT, VT]):
    """Polls ``interval_execute`` every period until it returns True or the deadline passes,
    then runs ``execute`` once."""

    time_to_force_complete: float | None
    interval_execute_period: float | None

    def __init__(self, node: Node | None = None) -> None:
        super().__init__(node)
        self.time_to_force_complete = self._node.time_to_force_complete
        self.interval_execute_period = self._node.interval_execute_period

    async def interval_execute(self, runtime_parameters: dict[str, Any]) -> bool:
        return True

    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        return None


class DecisionTask(ITask[KT, VT]):
    """``evaluate`` returns the successor to run (its id, full name or short name); the
    others are SKIPPED. Returning None skips every successor."""

    async def evaluate(self, **runtime_parameters: Any) -> Any:
        return None


class ParallelCompositeTask(ITask[KT, VT]):
    """Marker type of parallel composite nodes (task or process level)."""

    operator_type: TaskOperator = TaskOperator.JOIN_ALL


class MonitoringTask(TriggerTask[KT, VT]):
    monitored_task_id: str | None

    def __init__(self, node: Node | None = None) -> None:
        super().__init__(node)
        self.monitored_task_id = self._node.monitored

    async def process_monitored_task(self, monitored_task: ITask[Any, Any], workflow_instance: Any) -> None:
        return None


class DefaultMonitoringTask(MonitoringTask[KT, VT]):
    """Calls ``process_monitored_task`` if the monitored process has not finished."""

    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        if workflow_instance is None or self.monitored_task_id is None:
            return
        monitored = workflow_instance.get_task(self.monitored_task_id)
        if monitored is not None and monitored.status.code not in (
            "COMPLETED",
            "SKIPPED",
            "FAILURE",
            "STOPPED",
        ):
            await self.process_monitored_task(monitored, workflow_instance)


class IProcessTemplateDAGInstance(ITask[KT, VT]):
    process_name: str | None

    def __init__(self, node: Node | None = None) -> None:
        super().__init__(node)
        self.process_name = self._node.process_name


class DefaultProcessTemplateDAGInstance(IProcessTemplateDAGInstance[KT, VT]):
    pass


class IMonitoredTask:
    def get_monitoring_task_type(self) -> type[MonitoringTask[Any, Any]]:
        return DefaultMonitoringTask


class MonitoredProcessTemplateDAGInstance(DefaultProcessTemplateDAGInstance[KT, VT], IMonitoredTask):
    """A process that runs a monitoring task at ``runtime_parameters["complete_by_time"]``
    if it has not finished by then."""


class ITemplateDAGInstance(ITask[KT, VT]):
    """A workflow instance as user code and API callers see it: a snapshot.

    ``runtime_parameters`` is the live working copy while user code runs; elsewhere it is
    a private copy of the committed state, made on first use. ``await instance.stop()``
    stops the workflow.
    """

    template_name: str
    template_version: str
    update_count: int
    lastupdated: float
    partition_key_lookup: str | None

    def __init__(
        self,
        node: Node | None = None,
        instance: Instance | None = None,
        runtime_parameters: dict[str, Any] | None = None,
        engine: InstanceStopper | None = None,
        task_factory: Callable[[Node], ITask[Any, Any]] | None = None,
    ) -> None:
        if instance is None:
            raise TypeError("ITemplateDAGInstance is created by the engine")
        super().__init__(instance.root)
        self._instance = instance
        self._engine = engine
        self.template_name = instance.template_name
        self.template_version = instance.template_version
        # None until first read: most callers only look at the id and the status.
        self._runtime_parameters = runtime_parameters
        self._task_factory: Callable[[Node], ITask[Any, Any]] = task_factory or ITask
        self._tasks: dict[str, ITask[Any, Any]] | None = None
        self.update_count = instance.update_count
        self.lastupdated = instance.lastupdated
        self.partition_key_lookup = instance.partition_key_lookup

    @property
    def runtime_parameters(self) -> dict[str, Any]:
        if self._runtime_parameters is None:
            # The committed instance is shared and never changed: the caller gets a copy.
            self._runtime_parameters = copy_params(self._instance.runtime_parameters)
        return self._runtime_parameters

    @runtime_parameters.setter
    def runtime_parameters(self, value: dict[str, Any]) -> None:
        self._runtime_parameters = value

    @property
    def tasks(self) -> dict[str, ITask[Any, Any]]:
        """Every process and task of the instance by id (built on first use)."""
        if self._tasks is None:
            inst = self._instance
            factory = self._task_factory
            self._tasks = {nid: factory(n) for nid, n in inst.nodes.items() if nid != inst.id}
        return self._tasks

    def get_task(self, id: Any) -> ITask[Any, Any] | None:
        key = str(id)
        if key == self.id:
            return self
        return self.tasks.get(key)

    async def stop(
        self, runtime_parameters: dict[str, Any] | None = None, workflow_instance: Any = None
    ) -> None:
        if self._engine is None:
            raise RuntimeError("this instance snapshot is not bound to an engine")
        await self._engine.stop_instance(self.id)

    def to_dict(self) -> dict[str, Any]:
        from .model.snapshot import snapshot

        return snapshot(self._instance)


class DefaultTemplateDAGInstance(ITemplateDAGInstance[KT, VT]):
    pass


def type_name_of(cls: type) -> str:
    """The name a task class is stored under: its ``type_name`` or its class name."""
    explicit = cls.__dict__.get("type_name")
    return explicit if isinstance(explicit, str) and explicit else cls.__name__


def kind_of(cls: type) -> Kind:
    """The node kind a task class runs as."""
    if not isinstance(cls, type) or not issubclass(cls, ITask):
        raise InvalidTaskType(f"{cls!r} is not a daggerflow task class (subclass of ITask)")
    if issubclass(cls, MonitoringTask):
        return Kind.MONITOR
    if issubclass(cls, IntervalTask):
        return Kind.INTERVAL
    if issubclass(cls, TriggerTask):
        return Kind.TRIGGER
    if issubclass(cls, KafkaCommandTask):
        return Kind.COMMAND
    if issubclass(cls, KafkaListenerTask):
        return Kind.LISTENER
    if issubclass(cls, SensorTask):
        return Kind.SENSOR
    if issubclass(cls, DecisionTask):
        return Kind.DECISION
    return Kind.EXECUTOR
