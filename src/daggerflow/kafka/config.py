"""The Kafka runtime's options (no aiokafka here: the facade validates them without the extra)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigurationError
from .client_options import ClientSecurity, Connection

EXACTLY_ONCE = "exactly_once"
AT_LEAST_ONCE = "at_least_once"


def parse_broker(url: str) -> str:
    """``kafka://host:port[,host:port...]`` (or a bare bootstrap list) -> the bootstrap list."""
    rest = url.strip()
    if rest.startswith("kafka://"):
        rest = rest[len("kafka://") :]
    elif "://" in rest:
        raise ConfigurationError(f"broker={url!r}: expected kafka://host:port[,host:port...]")
    rest = rest.rstrip("/")
    hosts = [h for h in rest.split(",") if h]
    if not hosts or any(":" not in h for h in hosts):
        raise ConfigurationError(f"broker={url!r}: expected kafka://host:port[,host:port...]")
    return ",".join(hosts)


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap: str
    app: str
    partitions: int
    guarantee: str
    standbys: int
    role: str  # "worker" or "client"
    datadir: str
    store_kind: str  # "sqlite" or "rocksdb"
    durability: str
    auto_offset_reset: str
    commit_interval: float = 0.0
    shutdown_timeout: float = 10.0  # seconds partition tasks may take to commit what they hold
    dead_letter_topic: str | None = None  # None: ``{app}-dead-letter``
    # What reads forwarded to another worker's REST API present and verify (``remote``).
    forward_token: str | None = field(default=None, repr=False)
    forward_cafile: str | None = None  # None: the system's CAs for https owners
    security: ClientSecurity = field(default_factory=ClientSecurity)  # TLS/SASL of every client

    @property
    def exactly_once(self) -> bool:
        return self.guarantee == EXACTLY_ONCE

    @property
    def connection(self) -> Connection:
        """What every client of the runtime is made from (``kafka/settings.py``)."""
        return Connection(self.bootstrap, self.security)

#: The most one record of the runtime's may carry (an instance's changelog record, a message):
#: the producers' ``max_request_size`` and ``max_batch_size`` and the broker's default
#: ``message.max.bytes`` are all about 1 MiB, less room for the key, headers and framing. A
#: larger record would fail its transaction at every retry, so the size limits are capped here.
RECORD_LIMIT = 1024 * 1024 - 4096
