"""The engine as the REST application sees it: the members its handlers call."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..bulk_actions import BulkResult
    from ..model.bulk import BulkProgress, BulkShare
    from ..model.console import ListenerPart, NodeCountsPart, OverviewPart, TimerPart
    from ..model.history import Page
    from ..model.instance import Instance
    from ..model.messages import DeadLetter, Explanation, MessageItem
    from ..model.query import InstanceQuery
    from ..model.records import Message
    from ..model.schedule import Schedule
    from ..model.versions import MigrationReport, TemplateVersion
    from ..model.workers import PartitionRow, WorkerPart
    from ..tasks import ITemplateDAGInstance
    from ..telemetry import Telemetry
    from ..templates import ITemplateDAG


class EngineAPI(Protocol):
    """What the REST application calls on its engine (``Dagger`` is one)."""

    async def append(
        self, topic: str, key: str | None, value: Any, headers: dict[str, str] | None = None
    ) -> int: ...

    @property
    def running(self) -> bool: ...

    @property
    def runtime_name(self) -> str:
        """``embedded`` or ``kafka``."""
        ...

    @property
    def console_test_messages(self) -> bool:
        """Whether the console offers a form that appends test messages to listener topics."""
        ...

    #: Its metrics and tracing, once started (None before).
    telemetry: Telemetry | None

    @property
    def template_dags(self) -> dict[str, ITemplateDAG]: ...

    def get_template(self, template_name: str) -> ITemplateDAG: ...

    async def get_instance_state(self, instance_id: str) -> Instance | None: ...

    async def create_instance(
        self,
        template: ITemplateDAG,
        instance_id: Any,
        runtime_parameters: dict[str, Any],
        *,
        partition_key_lookup: str | None = None,
        submit_task: bool = False,
    ) -> ITemplateDAGInstance[Any, Any]: ...

    def local_instance(self, instance_id: str) -> Instance | None: ...

    async def history(self, instance_id: Any, *, limit: int = 100, after: int | None = None) -> Page: ...

    def local_history(self, instance_id: str, *, after: int | None = None, limit: int = 100) -> Page | None: ...

    async def stop_instance(self, instance_id: Any) -> ITemplateDAGInstance[Any, Any] | None: ...

    async def submit(self, task: Any, *, actor: str | None = None) -> ITemplateDAGInstance[Any, Any]: ...

    async def retry(
        self, instance_id: Any, runtime_parameters: dict[str, Any] | None = None, *, actor: str | None = None
    ) -> ITemplateDAGInstance[Any, Any]: ...

    async def skip_task(self, instance_id: Any, node_id: str, *, actor: str | None = None) -> ITemplateDAGInstance[Any, Any]: ...

    async def complete_task(
        self, instance_id: Any, node_id: str, *, actor: str | None = None
    ) -> ITemplateDAGInstance[Any, Any]: ...

    async def patch_parameters(
        self, instance_id: Any, changes: dict[str, Any], *, actor: str | None = None
    ) -> ITemplateDAGInstance[Any, Any]: ...

    async def template_versions(self) -> list[TemplateVersion]: ...

    def local_versions(self) -> list[TemplateVersion]: ...

    async def migrate(
        self,
        template: str,
        from_version: str,
        to_version: str | None = None,
        *,
        node_map: Mapping[str, str] | None = None,
        filter: Mapping[str, Any] | None = None,
        dry_run: bool = False,
        actor: str | None = None,
    ) -> MigrationReport: ...

    def list_instances(
        self, query: InstanceQuery | None = None, *, status: str | None = None, template: str | None = None,
        limit: int = 100, offset: int = 0,
    ) -> list[Instance]: ...

    def count_instances(
        self, query: InstanceQuery | None = None, *, status: str | None = None, template: str | None = None
    ) -> int: ...

    async def list_instances_async(
        self, query: InstanceQuery | None = None, *, status: str | None = None, template: str | None = None,
        limit: int = 100, offset: int = 0,
    ) -> list[Instance]: ...

    async def count_instances_async(
        self, query: InstanceQuery | None = None, *, status: str | None = None, template: str | None = None
    ) -> int: ...

    async def bulk(
        self,
        action: str,
        filter: Any = None,
        *,
        dry_run: bool = False,
        batch_size: int | None = None,
        actor: str | None = None,
    ) -> BulkResult: ...

    async def bulk_job(self, job_id: str) -> BulkProgress: ...

    def bulk_local_shares(self, job: str) -> list[BulkShare]:
        """The shares of bulk job ``job`` this process holds (the internal route)."""
        ...

    def bulk_jobs_local_shares(self, *, active: bool, limit: int) -> list[BulkShare]:
        """The shares this process holds of the active or the newest jobs (the internal route)."""
        ...

    async def bulk_jobs(self, limit: int = 50) -> list[BulkProgress]: ...

    async def list_schedules(self) -> list[Schedule]: ...

    def local_schedules(self) -> list[Schedule]: ...

    async def get_schedule(self, name: str) -> Schedule: ...

    async def put_schedule(
        self,
        name: str,
        template: Any,
        *,
        cron: str | None = None,
        every: int | None = None,
        runtime_parameters: dict[str, Any] | None = None,
        timezone: str = "UTC",
        catch_up: str = "skip",
        paused: bool | None = None,
        actor: str | None = None,
    ) -> Schedule: ...

    async def delete_schedule(self, name: str, *, actor: str | None = None) -> None: ...

    async def pause_schedule(self, name: str, *, actor: str | None = None) -> Schedule: ...

    async def resume_schedule(self, name: str, *, actor: str | None = None) -> Schedule: ...

    def read_topic(self, topic: str, start: int, limit: int) -> list[Message]: ...

    # The console's reads (``console_reads``), whole and this process's share.

    async def list_listeners(
        self, *, topic: str | None = None, template: str | None = None, limit: int = 100, offset: int = 0
    ) -> ListenerPart: ...

    def local_listeners(self, *, topic: str | None = None, template: str | None = None, first: int = 100) -> ListenerPart: ...

    async def list_timers(self, *, overdue: bool = False, limit: int = 100, offset: int = 0) -> TimerPart: ...

    def local_timers(self, *, overdue: bool = False, first: int = 100) -> TimerPart: ...

    async def overview(self) -> OverviewPart: ...

    def local_overview(self) -> OverviewPart: ...

    async def workers(self) -> tuple[list[WorkerPart], list[PartitionRow] | None]: ...

    def local_worker(self) -> WorkerPart: ...

    async def node_counts(self, template: str, *, version: str | None = None, limit: int = 10_000) -> NodeCountsPart: ...

    def local_node_counts(
        self, template: str, *, version: str | None = None, limit: int = 10_000,
        created_after: float | None = None, times: bool = False,
    ) -> NodeCountsPart: ...  # fmt: skip

    # Messages (``message_reads``).

    async def newest_messages(
        self, topic: str, *, limit: int = 50, partition: int | None = None, before: int | None = None
    ) -> list[MessageItem]: ...

    async def explain_message(self, topic: str, offset: int, *, partition: int | None = None) -> Explanation: ...

    async def dead_letters(
        self, *, limit: int = 50, partition: int | None = None, before: int | None = None
    ) -> list[DeadLetter]: ...

    async def replay_dead_letter(
        self, offset: int, *, partition: int | None = None, actor: str | None = None
    ) -> tuple[str, int]: ...

    def local_seen(self, topic: str, message_id: str) -> bool: ...

    def count_dead_letters(self) -> int | None: ...

    @property
    def dead_letter_topic(self) -> str: ...

    def topic_names(self) -> list[str]: ...

    def stats(self) -> dict[str, Any]: ...

    @property
    def max_request_bytes(self) -> int:
        """The largest request body the REST API reads (``max_request_bytes``)."""
        ...
