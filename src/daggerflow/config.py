"""The engine's configuration: one frozen, validated object.

``Dagger(**options)`` builds an ``EngineConfig``; the CLI derives another with
``dataclasses.replace`` (``Dagger.reconfigure``), which validates again, so an option set
from the command line is checked exactly like one given in code. Each runtime gets the part
it needs: ``pipeline_settings()`` for the processors, ``embedded_config()`` or
``kafka_config()`` for the runtime itself.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError
from .pipeline.items import Limits, Settings
from .store.factory import check_store_url
from .web.auth import (
    ApiToken,
    TokenOption,
    WebSecurity,
    check_server_tls,
    client_ssl_context,
    client_token,
    parse_tokens,
    tokens_from_env,
)

if TYPE_CHECKING:
    from .embedded.runtime import EmbeddedConfig
    from .kafka.config import KafkaConfig

# Dagger's constructor options that have no effect here: they configured faust, Aerospike or
# a timer poll that this design does not need. Accepted so Dagger code keeps working.
ACCEPTED_NO_EFFECT = frozenset(
    {
        "package_name",
        "tasks_topic",
        "bootstrap_topic",
        "beacon",
        "loop",
        "kafka_broker_list",
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
)

UpdateCallback = Callable[[Any], Awaitable[Any]]


#: Dagger's sensors, which this design replaces: None is accepted (Dagger's default), a
#: sensor is refused saying what to do instead.
REPLACED_SENSORS = {
    "tracing_sensor": (
        "tracing_sensor is not supported: daggerflow traces through OpenTelemetry. Install an "
        "OpenTelemetry SDK TracerProvider (opentelemetry.trace.set_tracer_provider) with the exporter "
        "you want before the engine starts, and drop tracing_sensor (tracing=False turns tracing off); "
        "see docs/observability.md"
    ),
    "datadog_sensor": (
        "datadog_sensor is not supported: daggerflow's metrics are served at /metrics (Prometheus) and "
        "sent through OpenTelemetry when a MeterProvider is installed; point the Datadog agent at either "
        "and drop datadog_sensor; see docs/observability.md"
    ),
}


def check_options(options: dict[str, Any]) -> None:
    """Dagger's faust-era options are accepted and ignored; its sensors are refused unless
    None; any other unknown option is an error that lists what is supported."""
    for name, why in REPLACED_SENSORS.items():
        if options.get(name) is not None:
            raise ConfigurationError(why)
    unknown = set(options) - ACCEPTED_NO_EFFECT - set(REPLACED_SENSORS)
    if unknown:
        supported = ", ".join(f.name for f in dataclasses.fields(EngineConfig))
        raise ConfigurationError(
            f"unknown Dagger option(s): {', '.join(sorted(unknown))}. Supported: {supported}, clock, "
            f"and Dagger's faust-era options (accepted, no effect): {', '.join(sorted(ACCEPTED_NO_EFFECT))}"
        )


@dataclass(frozen=True)
class EngineConfig:
    broker: str | None = None
    store: str | None = None
    datadir: str = ""  # "" -> $DAGGERFLOW_DATA, else "daggerflow-data"
    application_name: str = "dagger"
    task_update_topic: str | None = None
    task_update_callbacks: tuple[UpdateCallback, ...] = ()
    delete_workflow_on_complete: bool = False
    web_port: int | None = 6066
    web_host: str = "127.0.0.1"
    consumer_auto_offset_reset: str = "earliest"
    max_concurrent_jobs: int = 1000
    max_batch_size: int = 1000
    durability: str = "normal"
    unmatched_message_ttl: float | dict[str, float] = 0.0
    dedupe_ttl: float = 7 * 24 * 3600.0
    dead_letter_topic: str | None = None  # None: the runtime's default (see ``dead_letter``)
    shutdown_timeout: float = 10.0
    kafka_partitions: int = 12
    processing_guarantee: str = "exactly_once"
    num_standby_replicas: int = 0
    role: str = "worker"
    inline_jobs: bool = True
    commit_interval: float = 0.0
    # None: $DAGGERFLOW_API_TOKEN, if set. Kept as a tuple of ApiToken once validated.
    api_token: TokenOption = field(default=None, repr=False)
    metrics_public: bool = False
    web_tls_certfile: str | None = None
    web_tls_keyfile: str | None = None
    web_tls_cafile: str | None = None
    # Kafka TLS/SASL of every client (kafka/client_options.py); secrets: never in a repr
    kafka_client_options: Mapping[str, Any] | None = field(default=None, repr=False)
    broker_credentials: Any = field(default=None, repr=False)
    max_request_bytes: int = 2 * 1024 * 1024
    # Size limits, in bytes (README, "Limits"): a message value, the encoded runtime
    # parameters, the whole encoded instance record. On Kafka each is also capped by what
    # one producer record can carry (``kafka.config.RECORD_LIMIT``).
    max_message_bytes: int = 1024 * 1024
    max_parameters_bytes: int = 1024 * 1024
    max_instance_bytes: int = 1024 * 1024
    # Embedded topics: {"topic" or "*": {"ms": ..., "messages": ...}} (``embedded.retention``).
    topic_retention: dict[str, dict[str, Any]] | None = None
    # Entries of each instance's history kept (the oldest are dropped); 0: no history.
    history_limit: int = 100
    # Telemetry (docs/observability.md). tracing: None, on when an OpenTelemetry tracer
    # provider is installed; metrics: False records none (``/metrics`` keeps its gauges).
    tracing: bool | None = None
    metrics: bool = True
    # OpenTelemetry providers to use instead of the global ones (tests, several engines).
    tracer_provider: Any = field(default=None, repr=False)
    meter_provider: Any = field(default=None, repr=False)
    # The web console at /ui of the REST port; whether it offers to send test messages
    # (None: on for an embedded engine, off on Kafka); seconds between a live page's reads.
    console: bool = True
    console_test_messages: bool | None = None
    console_refresh: float = 1.0

    def __post_init__(self) -> None:
        if not self.datadir:
            object.__setattr__(self, "datadir", os.environ.get("DAGGERFLOW_DATA", "daggerflow-data"))
        object.__setattr__(self, "task_update_callbacks", tuple(self.task_update_callbacks))
        if self.broker is not None:
            from .kafka.config import parse_broker

            parse_broker(self.broker)  # a clear error now, not at start()
        if self.processing_guarantee not in ("exactly_once", "at_least_once"):
            raise ConfigurationError("processing_guarantee must be 'exactly_once' or 'at_least_once'")
        if self.role not in ("worker", "client"):
            raise ConfigurationError("role must be 'worker' (processes partitions) or 'client'")
        if self.kafka_partitions < 1 or self.num_standby_replicas < 0:
            raise ConfigurationError("kafka_partitions must be >= 1 and num_standby_replicas >= 0")
        # On Kafka, "sqlite://"/"rocksdb://" choose the kind of the partition stores.
        if not (self.broker is not None and self.store in ("sqlite://", "rocksdb://")):
            check_store_url(self.store)  # naming what is supported (e.g. store="aerospike://")
        if self.consumer_auto_offset_reset not in ("earliest", "latest"):
            raise ConfigurationError("consumer_auto_offset_reset must be 'earliest' or 'latest'")
        if not isinstance(self.console, bool) or self.console_test_messages not in (None, True, False):
            raise ConfigurationError("console must be True or False, and console_test_messages None, True or False")
        if isinstance(self.console_refresh, bool) or not isinstance(self.console_refresh, (int, float)) or not (
            0.05 <= self.console_refresh <= 3600
        ):
            raise ConfigurationError(f"console_refresh must be seconds from 0.05 to 3600, not {self.console_refresh!r}")
        if self.tracing not in (None, True, False) or not isinstance(self.metrics, bool):
            raise ConfigurationError("tracing must be None (auto), True or False, and metrics True or False")
        if self.durability not in ("normal", "full"):
            raise ConfigurationError("durability must be 'normal' or 'full'")
        if isinstance(self.max_request_bytes, bool) or not isinstance(self.max_request_bytes, int) or self.max_request_bytes < 1:
            raise ConfigurationError("max_request_bytes must be a positive number of bytes")
        for name in ("max_message_bytes", "max_parameters_bytes", "max_instance_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1024:
                raise ConfigurationError(f"{name} must be an integer number of bytes >= 1024, got {value!r}")
        if isinstance(self.history_limit, bool) or not isinstance(self.history_limit, int) or not (
            0 <= self.history_limit <= 1_000_000
        ):
            raise ConfigurationError(
                f"history_limit must be an integer from 0 (no history) to 1000000, got {self.history_limit!r}"
            )
        if self.web_port is not None and (
            isinstance(self.web_port, bool) or not isinstance(self.web_port, int) or not 0 <= self.web_port <= 65535
        ):
            raise ConfigurationError(
                f"web_port must be a port number 0-65535 (0: any free port) or None (no REST API), not {self.web_port!r}"
            )
        from .embedded.retention import parse_retention

        parse_retention(self.topic_retention)  # a clear error now, not at the first housekeeping
        self._check_web_security()
        if self.kafka_client_options is not None or self.broker_credentials is not None:
            from .kafka.client_options import client_security

            client_security(self.kafka_client_options, self.broker_credentials)  # refused now, not at start()
            if self.kafka_client_options is not None:  # the caller's later changes do not leak in
                object.__setattr__(self, "kafka_client_options", dict(self.kafka_client_options))

    def _check_web_security(self) -> None:
        tokens = tokens_from_env() if self.api_token is None else parse_tokens(self.api_token)
        object.__setattr__(self, "api_token", tokens)
        for name in ("web_tls_certfile", "web_tls_keyfile", "web_tls_cafile"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, os.fspath(value))
        check_server_tls(self.web_tls_certfile, self.web_tls_keyfile)
        if self.web_tls_cafile is not None:
            client_ssl_context(self.web_tls_cafile)  # a clear error now, not at the first forwarded read

    @property
    def api_tokens(self) -> tuple[ApiToken, ...]:
        """The validated tokens (``api_token`` after ``__post_init__``)."""
        tokens = self.api_token
        assert isinstance(tokens, tuple)
        return tokens

    def web_security(self) -> WebSecurity:
        return WebSecurity(self.api_tokens, self.metrics_public, self.web_tls_certfile, self.web_tls_keyfile)

    def limits(self) -> Limits:
        """The size limits in force: the options, and on Kafka no more than one record holds."""
        limits = Limits(self.max_message_bytes, self.max_parameters_bytes, self.max_instance_bytes)
        if self.broker is None:
            return limits
        from .kafka.config import RECORD_LIMIT
        from .model.history import FLUSH_BYTES

        # (an instance's record also carries its history's tail, up to FLUSH_BYTES)
        capped = limits.capped(RECORD_LIMIT)
        return Limits(capped.message, capped.parameters, min(capped.instance, RECORD_LIMIT - FLUSH_BYTES))

    def replace(self, **changes: Any) -> EngineConfig:
        """A copy with ``changes``, validated again."""
        return dataclasses.replace(self, **changes)

    @property
    def kafka(self) -> bool:
        return self.broker is not None

    @property
    def dead_letter(self) -> str:
        """Where dead letters go: ``dead_letter_topic``, else the runtime's default
        (embedded ``daggerflow-dead-letter``, Kafka ``{application_name}-dead-letter``)."""
        if self.dead_letter_topic:
            return self.dead_letter_topic
        return f"{self.application_name}-dead-letter" if self.broker is not None else "daggerflow-dead-letter"

    def pipeline_settings(self) -> Settings:
        ttl = self.unmatched_message_ttl
        return Settings(
            delete_on_complete=self.delete_workflow_on_complete,
            task_update_topic=self.task_update_topic,
            unmatched_ttl=(lambda t: float(ttl.get(t, 0.0))) if isinstance(ttl, dict) else (lambda t: float(ttl)),
            max_batch=self.max_batch_size,
            commit_interval=self.commit_interval,
            limits=self.limits(),
            history_limit=self.history_limit,
        )

    def embedded_config(self) -> EmbeddedConfig:
        from .embedded.retention import parse_retention, retention_policy
        from .embedded.runtime import EmbeddedConfig

        return EmbeddedConfig(
            store=self.store,
            datadir=self.datadir,
            application_name=self.application_name,
            durability=self.durability,
            dead_letter_topic=self.dead_letter,
            start_at_end=self.consumer_auto_offset_reset == "latest",
            shutdown_timeout=self.shutdown_timeout,
            topic_retention=retention_policy(parse_retention(self.topic_retention), self.task_update_topic),
        )

    def kafka_config(self) -> KafkaConfig:
        from .kafka.client_options import client_security
        from .kafka.config import KafkaConfig, parse_broker

        assert self.broker is not None
        return KafkaConfig(
            bootstrap=parse_broker(self.broker),
            app=self.application_name,
            partitions=self.kafka_partitions,
            guarantee=self.processing_guarantee,
            standbys=self.num_standby_replicas,
            role=self.role,
            datadir=self.datadir,
            store_kind="rocksdb" if (self.store or "").startswith("rocksdb") else "sqlite",
            durability=self.durability,
            auto_offset_reset=self.consumer_auto_offset_reset,
            commit_interval=self.commit_interval,
            shutdown_timeout=self.shutdown_timeout,
            dead_letter_topic=self.dead_letter_topic or None,
            forward_token=client_token(self.api_tokens),
            forward_cafile=self.web_tls_cafile,
            security=client_security(self.kafka_client_options, self.broker_credentials),
        )
