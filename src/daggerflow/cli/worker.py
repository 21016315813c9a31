"""``daggerflow worker``: run the engine of the user's module with command-line overrides."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import click

from ..errors import DaggerError
from ..logs import LOG_FORMATS, LOG_LEVELS
from .group import UsageFailure, cli
from .target import load_engine

if TYPE_CHECKING:

    pass


PORT = click.IntRange(0, 65535)
log_level_option = click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="INFO",
    show_default=True,
    help="Least severe level logged (the lifecycle events are INFO and WARNING).",
)
log_format_option = click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS, case_sensitive=False),
    default="text",
    show_default=True,
    help="text: one readable line per record; json: one JSON object per line (stderr).",
)


@cli.command()
@click.argument("target")
@click.option(
    "--web-port", type=PORT, help="REST API port (0: any free port; overrides the engine's)."
)
@click.option("--web-host", help="REST API interface (default: the engine's, 127.0.0.1).")
@click.option("--no-web", is_flag=True, help="Do not serve the REST API.")
@click.option("--store", help="State store URL, e.g. sqlite:///path/state.db (overrides the engine's).")
@click.option(
    "--broker",
    envvar="DAGGERFLOW_BROKER",
    help="Run on Kafka: kafka://host:port[,host:port] (default: the engine's; embedded if none).",
)
@click.option("--datadir", help="Directory of local state (overrides the engine's).")
@click.option("--app", "app_name", help="Application name: Kafka group and topic prefix (overrides the engine's).")
@click.option("--partitions", type=click.IntRange(min=1), help="Kafka: partitions of the internal topics.")
@click.option(
    "--guarantee",
    type=click.Choice(["exactly_once", "at_least_once"]),
    help="Kafka: processing guarantee (default: the engine's, exactly_once).",
)
@click.option("--standbys", type=click.IntRange(min=0), help="Kafka: standby replicas per partition.")
@log_level_option
@log_format_option
@click.option(
    "--access-log/--no-access-log",
    default=False,
    show_default=True,
    help="Log every REST request (uvicorn's access log, in the --log-format).",
)
@click.option(
    "--api-token",
    metavar="[SCOPE:]TOKEN[,...]",
    help="REST API tokens (scope read or admin, default admin); prefer $DAGGERFLOW_API_TOKEN, "
    "which the engine reads itself, over a flag that `ps` shows.",
)
@click.option("--web-tls-cert", type=click.Path(exists=True, dir_okay=False), help="https: certificate file.")
@click.option("--web-tls-key", type=click.Path(exists=True, dir_okay=False), help="https: key file.")
@click.option(
    "--web-tls-ca",
    type=click.Path(exists=True, dir_okay=False),
    help="Kafka: the CA that other workers' https certificates are verified with.",
)
@click.option(
    "--kafka-security-protocol",
    envvar="DAGGERFLOW_KAFKA_SECURITY_PROTOCOL",
    type=click.Choice(["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"], case_sensitive=False),
    help="Kafka: how every client connects (default: the engine's kafka_client_options, else PLAINTEXT).",
)
@click.option(
    "--kafka-sasl-mechanism",
    envvar="DAGGERFLOW_KAFKA_SASL_MECHANISM",
    type=click.Choice(["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"], case_sensitive=False),
    help="Kafka: SASL mechanism (default PLAIN).",
)
@click.option("--kafka-sasl-username", envvar="DAGGERFLOW_KAFKA_SASL_USERNAME", help="Kafka: SASL user.")
@click.option(
    "--kafka-sasl-password-file",
    envvar="DAGGERFLOW_KAFKA_SASL_PASSWORD_FILE",
    help="Kafka: file holding the SASL password (or set $DAGGERFLOW_KAFKA_SASL_PASSWORD; never a flag).",
)
@click.option(
    "--kafka-ssl-cafile", envvar="DAGGERFLOW_KAFKA_SSL_CAFILE", help="Kafka: PEM file of the brokers' CA."
)
@click.option(
    "--kafka-ssl-certfile", envvar="DAGGERFLOW_KAFKA_SSL_CERTFILE", help="Kafka: client certificate (mutual TLS)."
)
@click.option(
    "--kafka-ssl-keyfile",
    envvar="DAGGERFLOW_KAFKA_SSL_KEYFILE",
    help="Kafka: the client certificate's key (its password: $DAGGERFLOW_KAFKA_SSL_PASSWORD).",
)
@click.option("--kafka-client-id", envvar="DAGGERFLOW_KAFKA_CLIENT_ID", help="Kafka: client id of every client.")
def worker(
    target: str,
    web_port: int | None,
    web_host: str | None,
    no_web: bool,
    store: str | None,
    broker: str | None,
    datadir: str | None,
    app_name: str | None,
    partitions: int | None,
    guarantee: str | None,
    standbys: int | None,
    log_level: str,
    api_token: str | None,
    web_tls_cert: str | None,
    web_tls_key: str | None,
    web_tls_ca: str | None,
    kafka_security_protocol: str | None,
    kafka_sasl_mechanism: str | None,
    kafka_sasl_username: str | None,
    kafka_sasl_password_file: str | None,
    kafka_ssl_cafile: str | None,
    kafka_ssl_certfile: str | None,
    kafka_ssl_keyfile: str | None,
    kafka_client_id: str | None,
    log_format: str,
    access_log: bool,
) -> None:
    """Run the worker of the engine at TARGET (MODULE[:ATTR], e.g. examples.pizza:workflow_engine)
    until SIGINT/SIGTERM; then drain running tasks and exit 0.

    Exit codes: 0 after a signal, 2 when the command line, TARGET or installation is wrong
    (nothing was started), 1 when the worker fails while starting or running."""
    from ..logs import configure_logging

    configure_logging(level=log_level, fmt=log_format, access_log=access_log)
    engine = load_engine(target)
    overrides: dict[str, Any] = {
        "datadir": datadir,
        "application_name": app_name,
        "kafka_partitions": partitions,
        "processing_guarantee": guarantee,
        "num_standby_replicas": standbys,
        "store": store,
        "web_port": web_port,
        "web_host": web_host,
        "api_token": api_token,
        "web_tls_certfile": web_tls_cert,
        "web_tls_keyfile": web_tls_key,
        "web_tls_cafile": web_tls_ca,
    }
    changes = {k: v for k, v in overrides.items() if v is not None}
    if broker:
        changes["broker"] = broker
    if no_web:
        changes["web_port"] = None
    try:
        if changes.get("broker", engine.config.broker) is not None:
            changes["role"] = "worker"  # a worker process, whatever the module's engine says
        from ..kafka.client_options import command_line_options

        security = command_line_options(
            security_protocol=kafka_security_protocol and kafka_security_protocol.upper(),
            sasl_mechanism=kafka_sasl_mechanism and kafka_sasl_mechanism.upper(),
            sasl_username=kafka_sasl_username,
            sasl_password_file=kafka_sasl_password_file,
            ssl_cafile=kafka_ssl_cafile,
            ssl_certfile=kafka_ssl_certfile,
            ssl_keyfile=kafka_ssl_keyfile,
            client_id=kafka_client_id,
        )
        if security:  # over the engine's own kafka_client_options, key by key
            changes["kafka_client_options"] = {**(engine.config.kafka_client_options or {}), **security}
        engine.reconfigure(**changes)
    except DaggerError as exc:
        raise UsageFailure(f"{type(exc).__name__}: {exc}") from exc
    if engine.config.broker is not None:
        _require_kafka_extra()
    try:
        engine.main()
    except DaggerError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc
    except Exception as exc:
        # A failure of the running worker (a broker that cannot be reached...): one line
        # here; its traceback went to the log if the worker logged it, else it is at DEBUG.
        logging.getLogger("daggerflow").debug("the worker failed", exc_info=exc)
        raise click.ClickException(
            f"the worker failed: {type(exc).__name__}: {exc} (--log-level DEBUG shows the traceback)"
        ) from exc


def _require_kafka_extra() -> None:
    """Fail now, in one line, when the Kafka runtime cannot be imported (no aiokafka)."""
    try:
        from ..kafka import runtime  # noqa: F401
    except ImportError as exc:
        raise UsageFailure(
            f"running on Kafka (--broker / broker=...) needs the kafka extra: "
            f"pip install 'daggerflow[kafka]' (cannot import {exc.name or 'aiokafka'}: {exc})"
        ) from exc


