"""The runtime's first contact with the brokers: fail fast, and say why.

aiokafka's clients log a failed bootstrap (a wrong password, an unknown CA, TLS spoken to a
plaintext listener) and raise only "Unable to bootstrap from [...]"; some mismatches (a TLS
client on a plaintext listener) wait for a handshake until the request timeout. So before its
clients start, the runtime opens one connection per bootstrap address itself, as the clients
would (TLS handshake, SASL authentication, a metadata request), within a bounded time, and
turns the first failure into a ``ConfigurationError`` naming the listener, the protocol and
mechanism and what went wrong. The message never holds a secret: the broker's own answer to a
failed authentication does not echo the password.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from aiokafka import errors as kafka_errors
from aiokafka.conn import create_conn
from aiokafka.protocol.metadata import MetadataRequest

from ..errors import ConfigurationError
from .client_options import Connection, connection_of

#: Seconds the whole check may take per address (connect, handshakes, one metadata round trip).
PREFLIGHT_TIMEOUT = 10.0


async def check_connection(broker: Connection | str, *, timeout: float = PREFLIGHT_TIMEOUT) -> None:
    """Connect to the bootstrap addresses of ``broker`` until one answers a metadata request.

    Returns as soon as one does (the clients bootstrap from it). Raises ``ConfigurationError``
    when none does, with the reason for each address."""
    conn = connection_of(broker)
    failures: list[str] = []
    for address in conn.bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            await asyncio.wait_for(_round_trip(host, int(port), conn), timeout)
            return
        except TimeoutError:
            failures.append(f"{address}: {_timeout_reason(conn, timeout)}")
        except (OSError, kafka_errors.KafkaError) as exc:
            failures.append(f"{address}: {_reason(conn, exc)}")
    if len(failures) == 1:  # one address: named once
        failures = [failures[0].split(": ", 1)[1]]
    raise ConfigurationError(
        f"cannot use the Kafka listener {conn.bootstrap} ({conn.security.describe()}): " + "; ".join(failures)
    )


async def _round_trip(host: str, port: int, conn: Connection) -> None:
    security = conn.security
    kwargs: dict[str, Any] = {
        "security_protocol": security.security_protocol,
        "ssl_context": security.ssl_context,
        "request_timeout_ms": int(PREFLIGHT_TIMEOUT * 1000),
    }
    if "client_id" in security.extra:
        kwargs["client_id"] = security.extra["client_id"]
    if security.sasl:
        kwargs.update(
            sasl_mechanism=security.sasl_mechanism,
            sasl_plain_username=security.sasl_plain_username,
            sasl_plain_password=security.sasl_plain_password,
        )
    connection = await create_conn(host, port, **kwargs)
    try:
        await connection.send(MetadataRequest([]))
    finally:
        connection.close()


def _reason(conn: Connection, exc: BaseException) -> str:
    security = conn.security
    protocol = security.security_protocol
    if isinstance(exc, kafka_errors.SaslAuthenticationFailed):
        return (
            f"authentication failed ({security.sasl_mechanism} as {security.sasl_plain_username!r}): "
            f"{_broker_message(exc)}. Check the user name, the password and the mechanism"
        )
    if isinstance(exc, kafka_errors.UnsupportedSaslMechanismError):
        return f"the listener does not enable SASL mechanism {security.sasl_mechanism}: {_broker_message(exc)}"
    if isinstance(exc, kafka_errors.IllegalSaslStateError):
        return f"the listener refused the SASL handshake (is it a SASL listener?): {_broker_message(exc)}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"TLS certificate verification failed: {exc.verify_message}. Give the CA that signed the "
            "brokers' certificates (ssl_cafile / --kafka-ssl-cafile)"
        )
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed ({exc.reason or exc}): is it a TLS listener (security_protocol={protocol})?"
    if isinstance(exc, kafka_errors.KafkaConnectionError) and not security.tls:
        return (
            f"the broker closed the connection ({exc}): a TLS or SASL listener does not answer "
            f"{protocol} clients; check security_protocol"
        )
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is a broker listening there?)"
    if isinstance(exc, ConnectionResetError) and security.tls:
        return (
            f"the broker reset the connection during the TLS handshake: is it a TLS listener "
            f"(security_protocol={protocol})?"
        )
    if isinstance(exc, OSError):
        return f"cannot connect: {exc.strerror or exc or type(exc).__name__}"
    return f"{type(exc).__name__}: {exc}"


def _timeout_reason(conn: Connection, timeout: float) -> str:
    hint = " (a TLS client on a plaintext listener waits for a handshake that never comes)" if conn.security.tls else ""
    return f"no answer within {timeout:.0f} s{hint}"


def _broker_message(exc: BaseException) -> str:
    """aiokafka's errors render as ``[Error 58] SaslAuthenticationFailed: <the broker's text>``."""
    text = str(exc)
    return text.split(": ", 1)[1] if text.startswith("[Error") and ": " in text else text
