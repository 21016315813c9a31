"""What the REST client commands share: ``--url`` and its credentials, requests, and
answers checked for being a daggerflow worker's."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TYPE_CHECKING, Any, NoReturn

import click

from ..errors import DaggerError
from .group import DEFAULT_URL, console, err_console

if TYPE_CHECKING:
    import httpx



_STATUS_STYLE = {
    "COMPLETED": "green",
    "FAILURE": "red",
    "STOPPED": "magenta",
    "SKIPPED": "dim",
    "EXECUTING": "yellow",
    "SUBMITTED": "yellow",
    "NOT_STARTED": "dim",
}


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
    # Kept for call_worker rather than passed to every command: they only forward it.
    if param.name == "api_token" and value:
        from ..web.auth import client_token, parse_tokens

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


def call_worker(method: str, url: str, path: str, **kwargs: Any) -> Any:
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


def expect(body: Any, url: str, kind: type[dict[str, Any]] | type[list[Any]], *keys: str) -> Any:
    """``body`` if it has the shape of a daggerflow answer (``kind``, with ``keys``)."""
    if not isinstance(body, kind) or not all(k in body for k in keys):
        _not_daggerflow(url)
    return body


class ClientCommand(click.Command):
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


def print_json(data: Any) -> None:
    console.print_json(json.dumps(data))


def format_time(epoch: float | None) -> str:
    if not epoch:
        return "-"
    return time.strftime("%m-%d %H:%M:%S", time.localtime(epoch))


def styled_status(code: str) -> str:
    return f"[{_STATUS_STYLE.get(code, 'white')}]{code}[/]"

