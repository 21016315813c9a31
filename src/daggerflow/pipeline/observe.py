"""What the pipeline tells an observer (``telemetry.Telemetry``: traces and metrics), at the
points where it already knows what happened. The pipeline holds None when nothing observes,
so each point costs one ``is not None`` test then; an observer records into pre-bound
instruments and keeps what it reports until the commit (``pending``, the batch's
``PostCommit.telemetry``): nothing is reported of a batch that did not commit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ..model.instance import Instance
from ..model.records import Message, Outgoing

if TYPE_CHECKING:
    from ..store.base import Store

#: ``correlated``'s results (the ``daggerflow.correlation.result`` attribute and label).
MATCHED, UNMATCHED, DUPLICATE, BUFFERED, LATE, ERROR = "matched", "unmatched", "duplicate", "buffered", "late", "error"


class AgentObserver(Protocol):
    """One agent message being handled (``PipelineObserver.agent``): current while the
    handler runs; told what it sent (``error``: why it went to the dead letters)."""

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc: object) -> None: ...

    def sent(self, box: list[Outgoing], error: str | None) -> None: ...


class PipelineObserver(Protocol):
    def agent(self, msg: Message, name: str) -> AgentObserver | None:
        """What observes agent ``name`` handling ``msg`` (None: nothing)."""

    def outbox(self, pending: list[Any], inst: Instance, node: str, box: list[Outgoing]) -> None:
        """A job of ``node`` sent ``box``: stamp its trace headers (in place), count it."""

    def headers(self, inst: Instance) -> dict[str, str] | None:
        """The trace headers of a message about ``inst`` (its update-topic snapshot), if any."""

    def correlated(
        self, pending: list[Any], msg: Message, consumer: str, result: str, matched: list[Instance], forwarded: int,
        partition: int | None = None,
    ) -> None:  # fmt: skip
        """A listener message was matched (``matched``: the local instances it went to;
        ``forwarded``: deliveries sent to other partitions' owners), or not (``result``);
        ``partition``: the Kafka partition whose task matched it (None: embedded)."""

    def forward_trace(self, msg: Message, partition: int | None) -> str | None:
        """The ``traceparent`` a delivery of ``msg`` forwarded to another partition's owner
        carries (``ForwardEvent.trace``): its consumer span's; None when not tracing."""

    def delivered(self, pending: list[Any], instance: str, event: Any, trace: str) -> None:
        """A forwarded delivery (``event``, a ``Deliver``) carrying ``trace`` was applied to
        ``instance``: its span joins the trace of the message's span, linking the instance."""

    def batch_committed(self, items: int, seconds: float) -> None:
        """A batch of ``items`` inputs committed in ``seconds``."""

    def timer_fired(self, key: str, late: float) -> None:
        """A timer fired ``late`` seconds after its due time."""

    def consumer_lag(self, topic: str, lag: int) -> None:
        """Kafka: the records of ``topic`` this worker's partitions are behind its end."""

    def rebalanced(self, change: str, partitions: int) -> None:
        """Kafka: ``partitions`` were ``"assigned"`` or ``"revoked"``."""

    def partition_opened(self, store: Store) -> None:
        """A partition's task starts on ``store`` (restored, or moved here): count the
        listeners its running instances wait on."""

    def partition_closed(self, owns: Callable[[str], bool] | None) -> None:
        """A partition's task closed (revoked, or the engine stops): forget what it counted
        of the instances ``owns`` accepts (None: every instance)."""

    def committed(self, changed: dict[str, Instance | None], deleted: dict[str, Instance],
                  before: dict[str, Instance | None], pending: list[Any]) -> None:  # fmt: skip
        """After a commit: the instances it changed (None: deleted; ``deleted`` holds their
        final state) and their states before it; ``pending``: what the batch left to report
        (the ``machine.Transition`` of each event it applied, in order, and what ``outbox``
        and ``correlated`` put there)."""
