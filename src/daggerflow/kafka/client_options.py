"""How every Kafka client of the runtime connects: TLS, SASL and a few connection settings,
from Dagger/faust's ``broker_credentials`` and the ``kafka_client_options`` mapping.

No aiokafka here: ``EngineConfig`` validates the options at construction, without the extra.
The result, ``ClientSecurity``, holds aiokafka keyword arguments; ``kafka/settings.py``'s
factories spread them into every producer, consumer, admin and low-level client.
Secrets (the SASL password, the key's password) are never in a repr or an error message.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import ConfigurationError

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

#: The keys ``kafka_client_options`` accepts, with what each is. The ``ssl_*`` file options
#: build the ``ssl_context`` (they are not aiokafka's own keywords).
ACCEPTED_OPTIONS: Mapping[str, str] = {
    "security_protocol": "one of " + ", ".join(SECURITY_PROTOCOLS),
    "sasl_mechanism": "one of " + ", ".join(SASL_MECHANISMS),
    "sasl_plain_username": "the SASL user",
    "sasl_plain_password": "the SASL password",
    "ssl_context": "an ssl.SSLContext (instead of the ssl_* files)",
    "ssl_cafile": "PEM file of the CA(s) that signed the brokers' certificates (default: the system's)",
    "ssl_certfile": "PEM file of the client certificate (mutual TLS)",
    "ssl_keyfile": "PEM file of the client certificate's key",
    "ssl_password": "password of ssl_keyfile",
    "ssl_check_hostname": "check the broker's name against its certificate (default true)",
    "client_id": "the id the clients give the brokers (quotas, logs)",
    "connections_max_idle_ms": "close idle connections after this",
    "metadata_max_age_ms": "refresh metadata at least this often",
}

#: aiokafka settings the runtime sets itself, so an application may not: why, for each.
RUNTIME_OWNED: Mapping[str, str] = {
    "bootstrap_servers": "the broker option gives it (kafka://host:port,...)",
    "group_id": "the runtime's consumer groups are named after application_name",
    "group_instance_id": "the runtime chooses static membership per worker",
    "transactional_id": "exactly-once needs one transactional id per input partition",
    "enable_idempotence": "exactly-once needs idempotent producers",
    "transaction_timeout_ms": "the hanging-transaction check depends on the runtime's value",
    "isolation_level": "the runtime reads read_committed (and read_uncommitted where it must)",
    "enable_auto_commit": "offsets are committed in the runtime's transactions",
    "auto_offset_reset": "use the consumer_auto_offset_reset option",
    "acks": "the runtime's producers need acks=all",
    "partition_assignment_strategy": "the runtime co-partitions its topics with the range assignor",
    "partitioner": "daggerflow chooses the partitions of its keyed records",
    "key_serializer": "the runtime encodes its records",
    "value_serializer": "the runtime encodes its records",
    "key_deserializer": "the runtime decodes its records",
    "value_deserializer": "the runtime decodes its records",
    "api_version": "aiokafka negotiates it",
    "loop": "the clients run on the engine's event loop",
}

#: ``broker_credentials`` as a mapping: these keys (faust's credential attributes).
CREDENTIAL_KEYS = ("username", "password", "mechanism", "ssl_context", "protocol")

_SECRET_KEYS = frozenset({"sasl_plain_password", "ssl_password"})
_SSL_FILE_KEYS = ("ssl_cafile", "ssl_certfile", "ssl_keyfile")
_SASL_KEYS = ("sasl_mechanism", "sasl_plain_username", "sasl_plain_password")


@dataclass(frozen=True)
class ClientSecurity:
    """The settings every client gets: ``kwargs()`` are aiokafka keyword arguments."""

    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: str | None = field(default=None, repr=False)
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)
    #: those of EXTRAS that were given
    extra: Mapping[str, Any] = field(default_factory=dict)

    #: the connection settings besides TLS and SASL (a client's own settings may override them)
    EXTRAS: ClassVar[tuple[str, ...]] = ("client_id", "connections_max_idle_ms", "metadata_max_age_ms")

    @property
    def sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``AIOKafkaProducer``/``Consumer``/``AdminClient``/``Client``
        (PLAINTEXT without extras: none, i.e. aiokafka's defaults)."""
        out: dict[str, Any] = dict(self.extra)
        if self.security_protocol != "PLAINTEXT":
            out["security_protocol"] = self.security_protocol
        if self.tls:
            out["ssl_context"] = self.ssl_context
        if self.sasl:
            out["sasl_mechanism"] = self.sasl_mechanism
            out["sasl_plain_username"] = self.sasl_plain_username
            out["sasl_plain_password"] = self.sasl_plain_password
        return out

    def describe(self) -> str:
        """For messages: protocol, mechanism and user, never the password."""
        if not self.sasl:
            return self.security_protocol
        return f"{self.security_protocol}, {self.sasl_mechanism}, user {self.sasl_plain_username!r}"


@dataclass(frozen=True)
class Connection:
    """Where the runtime's clients connect, and how. Every client is made from one
    (``kafka/settings.py``); a bare bootstrap string means PLAINTEXT."""

    bootstrap: str
    security: ClientSecurity = field(default_factory=ClientSecurity)

    def __str__(self) -> str:
        return self.bootstrap


def connection_of(broker: Connection | str) -> Connection:
    return broker if isinstance(broker, Connection) else Connection(broker)


def client_security(options: Mapping[str, Any] | None = None, credentials: Any = None) -> ClientSecurity:
    """Validate ``kafka_client_options`` and ``broker_credentials`` and combine them.

    Raises ``ConfigurationError`` for an unknown or runtime-owned key, a wrong value, an
    inconsistent combination (SASL settings without a SASL protocol, TLS files without TLS) or
    an unreadable certificate file; the message names the option, never a secret's value."""
    if options is not None and not isinstance(options, Mapping):
        raise ConfigurationError(f"kafka_client_options must be a mapping, not {type(options).__name__}")
    given = {k: v for k, v in (options or {}).items() if v is not None}  # None: not given
    _check_keys(given)
    from_credentials = _from_credentials(credentials)
    for key, value in from_credentials.items():
        if key in given and given[key] != value:
            raise ConfigurationError(
                f"broker_credentials and kafka_client_options both set {key} (differently): give it once"
            )
        given.setdefault(key, value)
    return _settle(given)


def _check_keys(given: Mapping[str, Any]) -> None:
    for key in given:
        if not isinstance(key, str):
            raise ConfigurationError(f"kafka_client_options keys must be strings, not {key!r}")
        if key in RUNTIME_OWNED:
            raise ConfigurationError(f"kafka_client_options: {key} is set by daggerflow ({RUNTIME_OWNED[key]})")
        if key not in ACCEPTED_OPTIONS:
            raise ConfigurationError(
                f"kafka_client_options: unknown key {key!r}. Accepted: {', '.join(ACCEPTED_OPTIONS)}"
            )


def _enum_value(value: Any) -> Any:
    """faust's AuthProtocol/SASLMechanism are enums: their value is the name aiokafka takes."""
    return getattr(value, "value", value)


def _from_credentials(credentials: Any) -> dict[str, Any]:
    """faust's credentials (``SASLCredentials``, ``SSLCredentials``, ``GSSAPICredentials``: any
    object with their attributes), an ``ssl.SSLContext`` or a mapping of ``CREDENTIAL_KEYS``
    -> kafka_client_options keys."""
    if credentials is None:
        return {}
    if isinstance(credentials, ssl.SSLContext):
        return {"security_protocol": "SSL", "ssl_context": credentials}
    if isinstance(credentials, Mapping):
        unknown = sorted(set(map(str, credentials)) - set(CREDENTIAL_KEYS))
        if unknown:
            raise ConfigurationError(
                f"broker_credentials: unknown key(s) {', '.join(unknown)}. Accepted: {', '.join(CREDENTIAL_KEYS)}"
            )
        attrs = dict(credentials)
    else:
        attrs = {k: getattr(credentials, k) for k in CREDENTIAL_KEYS if getattr(credentials, k, None) is not None}
        if "ssl_context" not in attrs and isinstance(getattr(credentials, "context", None), ssl.SSLContext):
            attrs["ssl_context"] = credentials.context  # faust's SSLCredentials
        if not attrs:
            raise ConfigurationError(
                f"broker_credentials: a {type(credentials).__name__} has none of {', '.join(CREDENTIAL_KEYS)} "
                "(expected faust's SASLCredentials/SSLCredentials, an ssl.SSLContext or a mapping)"
            )
    out: dict[str, Any] = {}
    context = attrs.get("ssl_context")
    if context is not None:
        out["ssl_context"] = context
    sasl = attrs.get("username") is not None or attrs.get("password") is not None or "mechanism" in attrs
    if sasl:
        out["sasl_mechanism"] = str(_enum_value(attrs.get("mechanism") or "PLAIN"))
        if attrs.get("username") is not None:
            out["sasl_plain_username"] = attrs["username"]
        if attrs.get("password") is not None:
            out["sasl_plain_password"] = attrs["password"]
    protocol = _enum_value(attrs.get("protocol"))
    if protocol is None:  # faust's rule: SASL over TLS when a context is given
        protocol = ("SASL_SSL" if context is not None else "SASL_PLAINTEXT") if sasl else "SSL"
    out["security_protocol"] = str(protocol)
    return out


def _settle(given: dict[str, Any]) -> ClientSecurity:
    protocol = given.get("security_protocol", "PLAINTEXT")
    if not isinstance(protocol, str) or protocol.upper() not in SECURITY_PROTOCOLS:
        raise ConfigurationError(
            f"kafka security_protocol must be one of {', '.join(SECURITY_PROTOCOLS)}, not {protocol!r}"
        )
    protocol = protocol.upper()
    for key in _SSL_FILE_KEYS:
        if isinstance(given.get(key), os.PathLike):
            given[key] = os.fspath(given[key])
    for key, value in given.items():
        if key in ("ssl_context", "ssl_check_hostname", "connections_max_idle_ms", "metadata_max_age_ms"):
            continue
        if not isinstance(value, str) or not value:
            shown = "a secret" if key in _SECRET_KEYS else repr(value)
            raise ConfigurationError(f"kafka_client_options: {key} must be a non-empty string, not {shown}")
    sasl = protocol.startswith("SASL_")
    tls = protocol in ("SSL", "SASL_SSL")
    stray_sasl = [k for k in _SASL_KEYS if k in given and not sasl]
    if stray_sasl:
        raise ConfigurationError(
            f"kafka {', '.join(stray_sasl)} given but security_protocol is {protocol}: use SASL_SSL or SASL_PLAINTEXT"
        )
    stray_tls = [k for k in (*_SSL_FILE_KEYS, "ssl_password", "ssl_check_hostname", "ssl_context")
                 if k in given and not tls]  # fmt: skip
    if stray_tls:
        raise ConfigurationError(
            f"kafka {', '.join(stray_tls)} given but security_protocol is {protocol}: use SSL or SASL_SSL"
        )
    mechanism: str | None = None
    username = password = None
    if sasl:
        mechanism = str(given.get("sasl_mechanism", "PLAIN")).upper()
        if mechanism not in SASL_MECHANISMS:
            raise ConfigurationError(
                f"kafka sasl_mechanism must be one of {', '.join(SASL_MECHANISMS)}, not {given.get('sasl_mechanism')!r}"
                " (GSSAPI and OAUTHBEARER are not supported)"
            )
        username, password = given.get("sasl_plain_username"), given.get("sasl_plain_password")
        if username is None or password is None:
            missing = [k for k in ("sasl_plain_username", "sasl_plain_password") if given.get(k) is None]
            raise ConfigurationError(f"kafka security_protocol {protocol} needs {' and '.join(missing)}")
    extra = {k: given[k] for k in ClientSecurity.EXTRAS if k in given}
    for key in ("connections_max_idle_ms", "metadata_max_age_ms"):
        if key in extra and (not isinstance(extra[key], int) or isinstance(extra[key], bool) or extra[key] <= 0):
            raise ConfigurationError(f"kafka_client_options: {key} must be a positive integer, not {extra[key]!r}")
    return ClientSecurity(
        security_protocol=protocol,
        sasl_mechanism=mechanism,
        sasl_plain_username=username,
        sasl_plain_password=password,
        ssl_context=_ssl_context(given) if tls else None,
        extra=extra,
    )


def _ssl_context(given: Mapping[str, Any]) -> ssl.SSLContext:
    """The given context, or one built from the ``ssl_*`` files (the system's CAs without
    ``ssl_cafile``), as ``aiokafka.helpers.create_ssl_context`` would."""
    context = given.get("ssl_context")
    files = [k for k in (*_SSL_FILE_KEYS, "ssl_password", "ssl_check_hostname") if k in given]
    if context is not None:
        if not isinstance(context, ssl.SSLContext):
            raise ConfigurationError(f"kafka ssl_context must be an ssl.SSLContext, not {type(context).__name__}")
        if files:
            raise ConfigurationError(f"kafka ssl_context and {', '.join(files)} both given: give one or the other")
        return context
    for key in _SSL_FILE_KEYS:
        if key in given and not os.path.isfile(given[key]):
            raise ConfigurationError(f"kafka {key}: no such file: {given[key]}")
    if "ssl_keyfile" in given and "ssl_certfile" not in given:
        raise ConfigurationError("kafka ssl_keyfile given without ssl_certfile")
    check_hostname = given.get("ssl_check_hostname", True)
    if not isinstance(check_hostname, bool):
        raise ConfigurationError(f"kafka ssl_check_hostname must be true or false, not {check_hostname!r}")
    try:
        context = ssl.create_default_context(purpose=ssl.Purpose.SERVER_AUTH, cafile=given.get("ssl_cafile"))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigurationError(f"kafka ssl_cafile {given['ssl_cafile']}: not a PEM CA file ({exc})") from None
    context.check_hostname = check_hostname
    if "ssl_certfile" in given:
        try:
            context.load_cert_chain(given["ssl_certfile"], given.get("ssl_keyfile"), given.get("ssl_password"))
        except (ssl.SSLError, OSError) as exc:
            raise ConfigurationError(
                f"kafka ssl_certfile {given['ssl_certfile']}"
                + (f" / ssl_keyfile {given['ssl_keyfile']}" if "ssl_keyfile" in given else "")
                + f": cannot load the certificate and key ({type(exc).__name__}; wrong ssl_password?)"
            ) from None
    return context


def command_line_options(
    *,
    security_protocol: str | None = None,
    sasl_mechanism: str | None = None,
    sasl_username: str | None = None,
    sasl_password_file: str | None = None,
    ssl_cafile: str | None = None,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
    client_id: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The ``kafka_client_options`` keys that ``daggerflow worker``'s ``--kafka-*`` flags (or
    their ``DAGGERFLOW_KAFKA_*`` variables) give. Secrets never come from the command line,
    where ``ps`` shows them: the SASL password from ``$DAGGERFLOW_KAFKA_SASL_PASSWORD`` or the
    file ``sasl_password_file``, the key's password from ``$DAGGERFLOW_KAFKA_SSL_PASSWORD``."""
    env = os.environ if environ is None else environ
    out: dict[str, Any] = {
        key: value
        for key, value in (
            ("security_protocol", security_protocol),
            ("sasl_mechanism", sasl_mechanism),
            ("sasl_plain_username", sasl_username),
            ("ssl_cafile", ssl_cafile),
            ("ssl_certfile", ssl_certfile),
            ("ssl_keyfile", ssl_keyfile),
            ("client_id", client_id),
        )
        if value
    }
    password = env.get("DAGGERFLOW_KAFKA_SASL_PASSWORD")
    if sasl_password_file:
        if password:
            raise ConfigurationError(
                "the SASL password is given twice ($DAGGERFLOW_KAFKA_SASL_PASSWORD and --kafka-sasl-password-file)"
            )
        try:
            with open(sasl_password_file, encoding="utf-8") as f:
                password = f.read().rstrip("\r\n")
        except OSError as exc:
            raise ConfigurationError(f"cannot read the SASL password file {sasl_password_file}: {exc.strerror}") from None
        if not password:
            raise ConfigurationError(f"the SASL password file {sasl_password_file} is empty")
    if password:
        out["sasl_plain_password"] = password
    key_password = env.get("DAGGERFLOW_KAFKA_SSL_PASSWORD")
    if key_password:
        out["ssl_password"] = key_password
    return out
