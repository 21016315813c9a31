"""The Kafka runtime's internal topics: their shape, and creating/verifying them up front.

Facts this relies on (``docs/kafka-runtime-notes.md`` §6, measured with aiokafka 0.14 on Kafka 4.3):

- ``AIOKafkaAdminClient.create_topics()`` raises nothing for per-topic errors (topic exists,
  invalid config, replication factor larger than the cluster): each one is only in
  ``response.topic_errors`` as ``(topic, error_code, error_message)``.
- With ``auto.create.topics.enable=true`` (the broker default, and the dev broker's setting) a
  producer send, a consumer subscribe, ``end_offsets()`` and even ``admin.describe_topics([name])``
  create a missing topic with the broker defaults (3 partitions, ``cleanup.policy=delete``). A later
  ``create_topics(12, compact)`` then only answers TopicAlreadyExists and the topic keeps the wrong
  shape. So existence is tested with ``list_topics()`` / a metadata request for *all* topics (which
  never auto-creates), and every topic, new or existing, is verified after creation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from daggerflow.errors import ConfigurationError

from .client_options import Connection

log = logging.getLogger(__name__)

#: Partition count of the co-partitioned internal topics when the application does not choose one.
DEFAULT_PARTITIONS = 12
#: The events topic keeps what the workers have not processed yet; 30 days leaves room for a long
#: outage (broker default: 7 days). It is not the source of truth once processed (the changelog is).
EVENTS_RETENTION_MS = 30 * 24 * 3600 * 1000
#: Changelog settings measured in docs/kafka-runtime-notes.md §6.
CHANGELOG_CONFIGS: Mapping[str, str] = {
    "cleanup.policy": "compact",
    "min.compaction.lag.ms": "60000",
    "segment.ms": "3600000",
    "min.cleanable.dirty.ratio": "0.1",
}

#: Configs whose mismatch makes a topic unusable: ``ensure_topics`` refuses to start on them. Any
#: other declared config that differs is only logged (operators may tune retention, segments...).
STRICT_CONFIGS = ("cleanup.policy",)

_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")


@dataclass(frozen=True)
class TopicSpec:
    """The shape a topic must have: name, partition count, topic configs, replication factor."""

    name: str
    partitions: int
    configs: Mapping[str, str] = field(default_factory=dict)
    replication_factor: int = 1

    def __post_init__(self) -> None:
        if not _TOPIC_NAME.fullmatch(self.name) or self.name in (".", ".."):
            raise ConfigurationError(
                f"invalid Kafka topic name {self.name!r}: use 1-249 characters among a-z A-Z 0-9 . _ -"
            )
        if self.partitions < 1:
            raise ConfigurationError(f"topic {self.name!r}: partitions must be >= 1, not {self.partitions}")
        if self.replication_factor < 1:
            raise ConfigurationError(
                f"topic {self.name!r}: replication_factor must be >= 1, not {self.replication_factor}"
            )

    @property
    def cleanup_policy(self) -> str:
        return self.configs.get("cleanup.policy", "delete")


@dataclass(frozen=True)
class InternalTopics:
    """The runtime's internal topics of one application (design.md, "Kafka runtime: the plan")."""

    events: TopicSpec
    changelog: TopicSpec
    correlation: TopicSpec
    dead_letter: TopicSpec

    def all(self) -> list[TopicSpec]:
        return [self.events, self.changelog, self.correlation, self.dead_letter]


def internal_topics(
    app: str,
    partitions: int = DEFAULT_PARTITIONS,
    *,
    replication_factor: int = 1,
    dead_letter_partitions: int = 1,
    dead_letter: str | None = None,
) -> InternalTopics:
    """The specs of ``<app>-events``, ``<app>-changelog``, ``<app>-correlation``, ``<app>-dead-letter``
    (or ``dead_letter``, the name the application chose).

    events, changelog and correlation have the same partition count (co-partitioned: partition p
    of each is task p, owned by one worker under the range assignor); the changelog is compacted.
    Never change ``partitions`` of an existing deployment: it breaks the key -> partition mapping
    of the state (``ensure_topics`` refuses to start if it differs).
    """
    if partitions < 1:
        raise ConfigurationError(f"partitions must be >= 1, not {partitions}")

    def spec(suffix: str, n: int, configs: Mapping[str, str]) -> TopicSpec:
        return TopicSpec(f"{app}-{suffix}", n, dict(configs), replication_factor)

    return InternalTopics(
        events=spec(
            "events", partitions, {"cleanup.policy": "delete", "retention.ms": str(EVENTS_RETENTION_MS)}
        ),
        changelog=spec("changelog", partitions, CHANGELOG_CONFIGS),
        correlation=spec("correlation", partitions, {"cleanup.policy": "delete"}),
        dead_letter=TopicSpec(
            dead_letter or f"{app}-dead-letter",
            dead_letter_partitions,
            {"cleanup.policy": "delete"},
            replication_factor,
        ),
    )


@dataclass(frozen=True)
class TopicShape:
    """What a topic on the broker has: partition count and (some of) its configs."""

    name: str
    partitions: int
    configs: Mapping[str, str]


async def ensure_topics(
    broker: Connection | str,
    specs: Sequence[TopicSpec],
    *,
    timeout: float = 30.0,
) -> dict[str, TopicShape]:
    """Create the missing topics of ``specs`` and verify the shape of every one of them.

    Raises ``ConfigurationError`` naming the topic, what it has and what is needed when a topic
    has another partition count or ``cleanup.policy`` (typically: auto-created by a client before
    the runtime created it), or when the broker refuses to create one (the per-topic error of the
    CreateTopics response: invalid config, replication factor larger than the cluster...).
    A topic created concurrently by another worker (TopicAlreadyExists) is accepted, then
    verified like any existing one. Returns the verified shapes by topic name.
    """
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"duplicate topic names in {names}")
    async with _admin_client(broker, timeout) as admin:
        await _create_missing(admin, specs, timeout)
        shapes = await _wait_for_shapes(admin, names, timeout)

    problems: list[str] = []
    for spec in specs:
        shape = shapes[spec.name]
        have_policy = shape.configs.get("cleanup.policy", "?")
        if shape.partitions != spec.partitions or have_policy != spec.cleanup_policy:
            problems.append(
                f"Kafka topic {spec.name!r} has {shape.partitions} partitions and "
                f"cleanup.policy={have_policy}, daggerflow needs {spec.partitions} partitions and "
                f"cleanup.policy={spec.cleanup_policy}"
            )
            continue
        for key, wanted_value in spec.configs.items():
            if key in STRICT_CONFIGS:
                continue
            have = shape.configs.get(key)
            if have is not None and have != wanted_value:
                log.warning(
                    "Kafka topic %r has %s=%s (daggerflow creates it with %s)",
                    spec.name,
                    key,
                    have,
                    wanted_value,
                )
    if problems:
        raise ConfigurationError(
            "; ".join(problems)
            + ". A topic of the wrong shape was usually auto-created by a client before the runtime "
            "created it (set auto.create.topics.enable=false on the brokers). Its partition count "
            "must never change under existing state: delete the topic if it holds nothing of value, "
            "or configure the application with the existing shape."
        )
    return shapes


async def ensure_application_topics(
    broker: Connection | str, names: Sequence[str], partitions: int, *, timeout: float = 30.0
) -> None:
    """Create the application's own topics that do not exist yet (listener, agent, command and
    update topics) with ``partitions`` partitions and the broker's default configs; existing
    ones are left as they are (their producers chose their shape).

    Raises ``ConfigurationError`` naming the topic when the broker refuses to create one, as
    ``ensure_topics`` does: a topic that then does not exist would be auto-created with the
    broker defaults by the first client that touches it, or never read. A topic created
    concurrently by another worker (TopicAlreadyExists) is fine."""
    if not names:
        return
    specs = [TopicSpec(n, partitions) for n in dict.fromkeys(names)]
    async with _admin_client(broker, timeout) as admin:
        await _create_missing(admin, specs, timeout)


@contextlib.asynccontextmanager
async def _admin_client(broker: Connection | str, timeout: float) -> AsyncIterator[Any]:
    """A started ``AIOKafkaAdminClient`` whose requests time out after ``timeout`` seconds."""
    from .settings import new_admin

    admin = new_admin(broker, request_timeout_ms=int(timeout * 1000))
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def _create_missing(admin: Any, specs: Sequence[TopicSpec], timeout: float) -> None:
    """Create those of ``specs`` that do not exist (existence from the list of *all* topics,
    which never auto-creates one). Raises ``ConfigurationError`` for every per-topic error of
    the answer but TopicAlreadyExists (``create_topics`` itself raises nothing for them)."""
    from aiokafka.admin import NewTopic

    existing = set(await admin.list_topics())
    missing = [s for s in specs if s.name not in existing]
    if not missing:
        return
    response = await admin.create_topics(
        [
            NewTopic(s.name, s.partitions, s.replication_factor, topic_configs=dict(s.configs))
            for s in missing
        ],
        timeout_ms=int(timeout * 1000),
    )
    refused = refusals(response.topic_errors, {s.name: s for s in missing})
    if refused:
        raise ConfigurationError("; ".join(refused))
    log.info("created Kafka topics %s", [s.name for s in missing])


def refusals(topic_errors: Sequence[Sequence[Any]], specs: Mapping[str, TopicSpec]) -> list[str]:
    """One message per topic a CreateTopics answer refused, naming the topic and what was asked
    for; TopicAlreadyExists is not a refusal (another worker created it meanwhile: the topic
    is then verified, or left as it is, like any existing one). ``topic_errors`` are the
    answer's ``(topic, error_code[, error_message])`` entries."""
    from aiokafka.errors import TopicAlreadyExistsError, for_code

    refused: list[str] = []
    for entry in topic_errors:
        name, code = entry[0], entry[1]
        message = entry[2] if len(entry) > 2 and entry[2] else ""
        if code and for_code(code) is not TopicAlreadyExistsError:
            spec = specs.get(name)
            wanted = _describe(spec.partitions, spec.configs) if spec is not None else "?"
            refused.append(
                f"Kafka refused to create topic {name!r} ({wanted}, replication factor "
                f"{spec.replication_factor if spec else '?'}): {for_code(code).__name__}"
                + (f": {message}" if message else "")
            )
    return refused


def _describe(partitions: int, configs: Mapping[str, str]) -> str:
    return f"{partitions} partitions, cleanup.policy={configs.get('cleanup.policy', 'delete')}"


async def _wait_for_shapes(admin: Any, names: Sequence[str], timeout: float) -> dict[str, TopicShape]:
    """Partition counts (from metadata) and configs of ``names``, once all of them are visible.

    Metadata is requested for *all* topics (``describe_topics()`` without arguments): asking for
    named topics would auto-create any that is missing.
    """
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    deadline = time.monotonic() + timeout
    partitions: dict[str, int] = {}
    while True:
        partitions = {
            t["topic"]: len(t["partitions"])
            for t in await admin.describe_topics()
            if t["topic"] in names and t["error_code"] == 0 and t["partitions"]
        }
        if len(partitions) == len(names):
            break
        if time.monotonic() > deadline:
            raise ConfigurationError(
                f"Kafka topics {sorted(set(names) - set(partitions))} not visible after {timeout:.0f} s"
            )
        await asyncio.sleep(0.1)
    responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in names])
    configs: dict[str, dict[str, str]] = {}
    for response in responses:
        # resources: (error_code, error_message, resource_type, resource_name, config_entries)
        for error_code, error_message, _type, name, entries in response.resources:
            if error_code:
                raise ConfigurationError(
                    f"cannot read the configs of Kafka topic {name!r}: error {error_code} {error_message}"
                )
            # entry: (name, value, read_only, config_source, is_sensitive[, synonyms])
            configs[name] = {e[0]: e[1] for e in entries if e[1] is not None}
    return {n: TopicShape(n, partitions[n], configs.get(n, {})) for n in names}
