"""The ``daggerflow`` command line (also ``python -m daggerflow``).

- ``daggerflow worker MODULE[:ATTR]`` runs a worker: imports the module, finds its
  ``Dagger`` engine, applies the command-line overrides and calls ``engine.main()``.
- ``daggerflow demo pizza`` runs the README's pizza workflow end to end and reports.
- ``instances``, ``instance``, ``templates``, ``create`` and ``send`` talk to a running
  worker's REST API (``--url``, default ``$DAGGERFLOW_URL`` or http://127.0.0.1:6066).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
from rich import box
from rich.console import Console
from rich.table import Table

from .errors import DaggerError
from .logs import LOG_FORMATS, LOG_LEVELS

if TYPE_CHECKING:
    import httpx

    from .engine import Dagger

DEFAULT_URL = "http://127.0.0.1:6066"

# Piped output is not cut to 80 columns: tables keep whole ids.
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, soft_wrap=True)

_STATUS_STYLE = {
    "COMPLETED": "green",
    "FAILURE": "red",
    "STOPPED": "magenta",
    "SKIPPED": "dim",
    "EXECUTING": "yellow",
    "SUBMITTED": "yellow",
    "NOT_STARTED": "dim",
}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="daggerflow", prog_name="daggerflow")
def cli() -> None:
    """daggerflow: durable, event-driven workflows with Dagger's model."""


def _add_demo() -> None:
    from .demo.command import demo

    cli.add_command(demo)


_add_demo()


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="daggerflow")


# worker ----------------------------------------------------------------------------------


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

class UsageFailure(click.ClickException):
    """A mistake in the command line, its TARGET or the installation: one line, exit 2
    (click's own code for usage errors). Failures at run time exit 1."""

    exit_code = 2


def load_engine(target: str) -> Dagger:
    """``module``, ``module:attr`` or ``path/to/file.py[:attr]`` -> the Dagger engine there.

    ``attr`` may be dotted. Without it the module must hold exactly one ``Dagger`` instance
    at top level. Every way this can fail raises ``UsageFailure`` with one line that says
    what is wrong and what to do; an exception raised by the module's own code also prints
    that code's frames (see ``_import_target``).
    """
    from .engine import Dagger

    module_name, _, attr = target.partition(":")
    if not module_name:
        raise UsageFailure(f"TARGET {target!r}: expected MODULE[:ATTR] or path/to/file.py[:ATTR]")
    module = _import_target(module_name)
    if attr:
        found: Any = module
        for part in attr.split("."):
            if not hasattr(found, part):
                raise UsageFailure(
                    f"{module_name!r} has no attribute {attr!r}; name the variable that holds the Dagger engine"
                )
            found = getattr(found, part)
        if not isinstance(found, Dagger):
            raise UsageFailure(
                f"{target!r} is not a Dagger engine (it is a {type(found).__name__}); "
                "name the variable that holds the Dagger(...) object"
            )
        return found
    engines = {name: v for name, v in vars(module).items() if isinstance(v, Dagger)}
    if len(engines) != 1:
        if not engines:
            raise UsageFailure(
                f"{module_name!r} holds no Dagger engine at top level; create one there with "
                "Dagger(...), or name where it is as MODULE:ATTR"
            )
        raise UsageFailure(
            f"{module_name!r} holds {len(engines)} Dagger engines ({', '.join(sorted(engines))}); "
            "name one as MODULE:ATTR"
        )
    return next(iter(engines.values()))


def _import_target(module_name: str) -> Any:
    # As `python -m` does: modules in the current directory are importable.
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    as_file = module_name.endswith(".py") or os.sep in module_name
    try:
        return _import_file(Path(module_name)) if as_file else importlib.import_module(module_name)
    except DaggerError as exc:
        # The module built an engine with a wrong option: a mistake in the TARGET.
        raise UsageFailure(f"{module_name!r}: {type(exc).__name__}: {exc}") from exc
    except SyntaxError as exc:
        where = f"{exc.filename}:{exc.lineno}" if exc.filename else module_name
        code = (exc.text or "").strip()
        shown = f" (in: {code})" if code else ""
        raise UsageFailure(f"cannot import {module_name!r}: {where}: {exc.msg}{shown}") from exc
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.split(".")[0] in (exc.name, exc.name.split(".")[0]):
            raise UsageFailure(
                f"cannot import {module_name!r}: no module named {exc.name!r} "
                f"(run from the directory that holds it, or give a path: path/to/file.py)"
            ) from exc
        raise UsageFailure(
            f"cannot import {module_name!r}: {_user_frame(exc)}: {exc} (install it, or fix the import)"
        ) from exc
    except FileNotFoundError as exc:
        raise UsageFailure(f"cannot import {module_name!r}: no such file ({exc.filename or module_name})") from exc
    except Exception as exc:
        # The module's own code raised: its frames are what the user needs to fix it, so
        # they are shown (without importlib's and daggerflow's), then the one-line summary.
        _print_user_traceback(exc)
        raise UsageFailure(
            f"importing {module_name!r} raised {type(exc).__name__}: {exc} (at {_user_frame(exc)})"
        ) from exc


def _import_file(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(2, "no such file", str(path))
    name = path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(2, "not a Python module", str(path))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str(path.resolve().parent))
    spec.loader.exec_module(module)
    return module


def _user_frames(exc: BaseException) -> list[traceback.FrameSummary]:
    """The frames of a traceback that are the user's: not importlib's, not this module's."""
    here = os.path.dirname(os.path.abspath(__file__))
    return [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if not f.filename.startswith("<frozen") and not os.path.abspath(f.filename).startswith(here + os.sep)
    ]


def _user_frame(exc: BaseException) -> str:
    frames = _user_frames(exc)
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"


def _print_user_traceback(exc: BaseException) -> None:
    lines = traceback.format_list(_user_frames(exc))
    if lines:
        err_console.print("".join(lines).rstrip(), highlight=False, markup=False)


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
    from .logs import configure_logging

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
        from .kafka.client_options import command_line_options

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
        from .kafka import runtime  # noqa: F401
    except ImportError as exc:
        raise UsageFailure(
            f"running on Kafka (--broker / broker=...) needs the kafka extra: "
            f"pip install 'daggerflow[kafka]' (cannot import {exc.name or 'aiokafka'}: {exc})"
        ) from exc


# REST clients ----------------------------------------------------------------------------

def _check_url(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """A malformed --url is a usage error (exit 2), before any request."""
    import httpx

    try:
        url = httpx.URL(value)
    except httpx.InvalidURL as exc:
        raise click.BadParameter(f"{value!r} is not a URL: {exc}") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise click.BadParameter(f"{value!r}: expected http://HOST:PORT or https://HOST:PORT")
    return value


_url = click.option(
    "--url",
    envvar="DAGGERFLOW_URL",
    default=DEFAULT_URL,
    show_default=True,
    callback=_check_url,
    help="Base URL of a running worker's REST API (env DAGGERFLOW_URL).",
)


def _remember(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    # Kept for _request rather than passed to every command: they only forward it.
    if param.name == "api_token" and value:
        from .web.auth import client_token, parse_tokens

        try:
            value = client_token(parse_tokens(value, "--api-token"))
        except DaggerError as exc:
            raise click.BadParameter(str(exc), ctx, param) from None
    ctx.meta[f"daggerflow.{param.name}"] = value or None


_api_token = click.option(
    "--api-token",
    envvar="DAGGERFLOW_API_TOKEN",
    expose_value=False,
    callback=_remember,
    metavar="TOKEN",
    help="API token sent as Authorization: Bearer (env DAGGERFLOW_API_TOKEN; of a list, the first admin).",
)
_ca_cert = click.option(
    "--ca-cert",
    envvar="DAGGERFLOW_CA_CERT",
    type=click.Path(exists=True, dir_okay=False),
    expose_value=False,
    callback=_remember,
    help="https: trust this CA (or the worker's self-signed certificate) file (env DAGGERFLOW_CA_CERT).",
)


def url_option(f: Any) -> Any:
    """``--url`` with what reaching it may take: ``--api-token`` and ``--ca-cert``."""
    return _url(_api_token(_ca_cert(f)))


json_option = click.option("--json", "as_json", is_flag=True, help="Print the raw JSON response.")


def _request(method: str, url: str, path: str, **kwargs: Any) -> Any:
    import ssl

    import httpx

    meta = click.get_current_context().meta
    token, ca_cert = meta.get("daggerflow.api_token"), meta.get("daggerflow.ca_cert")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        verify = ssl.create_default_context(cafile=ca_cert)
    except ssl.SSLError as exc:
        _fail(f"--ca-cert {ca_cert}: not a PEM certificate ({exc.reason or exc})")
    try:
        response = httpx.request(
            method, url.rstrip("/") + path, timeout=30.0, headers=headers, verify=verify, **kwargs
        )
    except httpx.HTTPError as exc:
        if _caused_by(exc, ssl.SSLCertVerificationError):
            hint = (
                "the CA given by --ca-cert did not sign it"
                if ca_cert
                else "for a self-signed or private-CA certificate pass --ca-cert FILE or DAGGERFLOW_CA_CERT"
            )
            _fail(f"the worker at {url} has a certificate this client does not trust: {hint}")
        _fail(f"cannot reach a daggerflow worker at {url}: {exc} (is `daggerflow worker` running?)")
    return _decode(response, url, token is not None)


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``kind`` is in the chain of causes (httpx wraps httpcore, which wraps ssl)."""
    chain: list[BaseException] = []
    link: BaseException | None = exc
    while link is not None and link not in chain:  # a context can point back
        chain.append(link)
        link = link.__cause__ or link.__context__
    return any(isinstance(e, kind) for e in chain)


def _decode(response: httpx.Response, url: str = "", sent_token: bool = False) -> Any:
    where = response.request.url
    try:
        body = response.json()
    except ValueError:
        body = None
    challenge = response.headers.get("www-authenticate", "")
    if response.status_code in (401, 403) and challenge.lower().startswith("bearer"):
        if response.status_code == 403:
            method = response.request.method
            _fail(f"the worker at {url} refused: the API token is read-only and {method} needs an admin one")
        if sent_token:
            _fail(f"the worker at {url} refused the API token: check --api-token or DAGGERFLOW_API_TOKEN")
        _fail(f"the worker at {url} needs an API token: pass --api-token or set DAGGERFLOW_API_TOKEN")
    if body is None and response.content:
        # Every daggerflow answer, errors included, is JSON: this is some other server.
        kind = response.headers.get("content-type", "no content type").split(";")[0]
        _fail(
            f"{where} answered HTTP {response.status_code} ({kind}), not JSON: it is not a daggerflow "
            "worker's REST API; check --url / $DAGGERFLOW_URL"
        )
    if response.is_error:
        if not (isinstance(body, dict) and "error" in body):
            _fail(f"{where} answered HTTP {response.status_code} without a daggerflow error: check --url")
        _fail(f"HTTP {response.status_code} from {where}: {body['error']}")
    return body


def _not_daggerflow(url: str) -> NoReturn:
    _fail(f"{url} answered JSON that is not a daggerflow worker's; check --url / $DAGGERFLOW_URL")


def _expect(body: Any, url: str, kind: type[dict[str, Any]] | type[list[Any]], *keys: str) -> Any:
    """``body`` if it has the shape of a daggerflow answer (``kind``, with ``keys``)."""
    if not isinstance(body, kind) or not all(k in body for k in keys):
        _not_daggerflow(url)
    return body


class _ClientCommand(click.Command):
    """A REST client command: a response of the wrong shape (a server that is not
    daggerflow at --url) is one line, exit 1, instead of a KeyError traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (KeyError, TypeError, AttributeError, IndexError) as exc:
            url = ctx.params.get("url", DEFAULT_URL)
            logging.getLogger("daggerflow").debug("unexpected response from %s", url, exc_info=exc)
            _not_daggerflow(url)


def _fail(message: str) -> NoReturn:
    err_console.print(f"[red]error:[/] {message}", highlight=False)
    sys.exit(1)


def _print_json(data: Any) -> None:
    console.print_json(json.dumps(data))


def _when(epoch: float | None) -> str:
    if not epoch:
        return "-"
    return time.strftime("%m-%d %H:%M:%S", time.localtime(epoch))


def _status(code: str) -> str:
    return f"[{_STATUS_STYLE.get(code, 'white')}]{code}[/]"


@cli.command(cls=_ClientCommand)
@click.option("--status", help="Only this status (COMPLETED, FAILURE, EXECUTING, ...).")
@click.option("--template", help="Only instances of this template.")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True)
@url_option
@json_option
def instances(
    status: str | None, template: str | None, limit: int, offset: int, url: str, as_json: bool
) -> None:
    """List workflow instances of a running worker (newest pages via --offset)."""
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    if status:
        params["status"] = status
    if template:
        params["template"] = template
    page = _expect(_request("GET", url, "/api/v1/instances", params=params), url, dict, "items", "total", "offset")
    if as_json:
        _print_json(page)
        return
    table = Table(title=f"workflow instances at {url}", box=box.SIMPLE_HEAD, pad_edge=False)
    # The id and the status never shrink; the other columns give way in narrow terminals.
    longest_id = max((len(item["id"]) for item in page["items"]), default=2)
    table.add_column("id", no_wrap=True, min_width=longest_id)
    table.add_column("status", no_wrap=True, min_width=len("NOT_STARTED"))
    for column in ("template", "created", "took"):
        table.add_column(column, no_wrap=True)
    for item in page["items"]:
        created, completed = item.get("time_created"), item.get("time_completed")
        took = f"{completed - created:.3f} s" if created and completed else "-"
        table.add_row(
            item["id"], _status(item["status"]["code"]), item["template_name"], _when(created), took
        )
    console.print(table)
    shown = len(page["items"])
    first = page["offset"] + 1 if shown else page["offset"]
    more = f"; next: --offset {page['next_offset']}" if page.get("next_offset") is not None else ""
    console.print(f"{first}-{page['offset'] + shown} of {page['total']}{more}")


@cli.command(cls=_ClientCommand)
@click.argument("instance_id")
@url_option
def instance(instance_id: str, url: str) -> None:
    """Print one workflow instance (all its tasks) as JSON."""
    from urllib.parse import quote

    found = _request("GET", url, f"/api/v1/instances/{quote(instance_id, safe='')}")
    _print_json(_expect(found, url, dict, "id", "status"))


@cli.command(cls=_ClientCommand)
@url_option
@json_option
def templates(url: str, as_json: bool) -> None:
    """List the workflow templates a running worker has registered."""
    found = _expect(_request("GET", url, "/api/v1/templates"), url, list)
    if as_json:
        _print_json(found)
        return
    table = Table(title=f"templates at {url}", box=box.SIMPLE_HEAD)
    table.add_column("name")
    table.add_column("version")
    for t in found:
        table.add_row(t["name"], t["version"])
    console.print(table)


@cli.command(cls=_ClientCommand)
@click.argument("topic")
@click.argument("value")
@click.option("--key", "-k", help="Message key.")
@url_option
@json_option
def send(topic: str, value: str, key: str | None, url: str, as_json: bool) -> None:
    """Append VALUE (sent as the string given, e.g. JSON text) to TOPIC of a running worker."""
    from urllib.parse import quote

    result = _request(
        "POST", url, f"/topics/{quote(topic, safe='')}/messages", json={"key": key, "value": value}
    )
    _expect(result, url, dict, "topic", "offset")
    if as_json:
        _print_json(result)
    else:
        console.print(f"sent to {result['topic']} at offset {result['offset']}")


@cli.command(cls=_ClientCommand)
@click.argument("template")
@click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE", help="A string parameter.")
@click.option("--params", "params_json", metavar="JSON", help="Runtime parameters as a JSON object.")
@click.option("--id", "instance_id", help="Instance id (default: a new UUID).")
@click.option("--no-submit", is_flag=True, help="Create NOT_STARTED instead of starting it.")
@url_option
@json_option
def create(
    template: str,
    params: tuple[str, ...],
    params_json: str | None,
    instance_id: str | None,
    no_submit: bool,
    url: str,
    as_json: bool,
) -> None:
    """Create (and start) an instance of TEMPLATE on a running worker.

    Example: daggerflow create PizzaWorkflow -p order_id=1 -p customer_id=c1 --params '{"pizza_type": 1}'
    """
    from urllib.parse import quote

    runtime: dict[str, Any] = {}
    if params_json:
        try:
            decoded = json.loads(params_json)
        except ValueError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--params") from exc
        if not isinstance(decoded, dict):
            raise click.BadParameter("must be a JSON object", param_hint="--params")
        runtime.update(decoded)
    for item in params:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE", param_hint="--param")
        runtime[name] = text
    body: dict[str, Any] = {"runtime_parameters": runtime, "submit": not no_submit}
    if instance_id is not None:
        body["id"] = instance_id
    created = _request("POST", url, f"/api/v1/templates/{quote(template, safe='')}/instances", json=body)
    _expect(created, url, dict, "id", "status")
    if as_json:
        _print_json(created)
    else:
        console.print(f"created {created['id']} ({_status(created['status']['code'])})")
