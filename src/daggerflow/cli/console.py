"""``daggerflow ui --url WORKER``: the web console of a remote worker, served here.

Every worker serves its console at ``/ui`` on its REST port already; this command is for a
worker whose port is not reachable from a browser (or to look at one from a laptop): the
console runs here and calls the worker's REST API at ``--url``. People log in with their own
API token in the browser, as on the worker: this command holds no token.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

import click

from ..errors import ConfigurationError
from .client import _check_url
from .group import DEFAULT_URL, UsageFailure, cli, console, err_console

DEFAULT_PORT = 6067


@cli.command("ui")
@click.option(
    "--url", envvar="DAGGERFLOW_URL", default=DEFAULT_URL, show_default=True, callback=_check_url,
    help="Base URL of the worker's REST API (env DAGGERFLOW_URL).",
)  # fmt: skip
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve the console on.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(0, 65535),
              help="Port to serve the console on (0: any free port).")  # fmt: skip
@click.option("--ca-cert", envvar="DAGGERFLOW_CA_CERT", type=click.Path(exists=True, dir_okay=False),
              help="https worker: trust this CA (or its self-signed certificate) file.")  # fmt: skip
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False),
              help="Serve the console over https with this certificate (PEM)...")  # fmt: skip
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="...and this private key.")
@click.option("--refresh", default=1.0, show_default=True, type=click.FloatRange(0.05, 3600),
              help="Seconds between two reads of a live page.")  # fmt: skip
def ui(
    url: str, host: str, port: int, ca_cert: str | None, tls_cert: str | None, tls_key: str | None, refresh: float
) -> None:
    """Serve the web console of the worker at --url (open the printed address in a browser)."""
    from ..console.app import ConsoleSettings, standalone
    from ..console.client import Target
    from ..web.auth import WebSecurity, check_server_tls, is_loopback
    from ..web.server import WebServer
    from ..worker import until_stop_signal

    try:
        check_server_tls(tls_cert, tls_key)
    except ConfigurationError as exc:
        message = str(exc).replace("web_tls_certfile", "--tls-cert").replace("web_tls_keyfile", "--tls-key")
        raise UsageFailure(message) from None
    verify: ssl.SSLContext | bool = True
    if ca_cert is not None:
        try:
            verify = ssl.create_default_context(cafile=ca_cert)
        except ssl.SSLError as exc:
            raise UsageFailure(f"--ca-cert {ca_cert}: not a PEM certificate ({exc.reason or exc})") from None
    security = WebSecurity(certfile=tls_cert, keyfile=tls_key)
    settings = ConsoleSettings(secure_cookies=security.tls, live_interval=refresh)
    app = standalone(Target(url=url, verify=verify), settings)
    if not is_loopback(host) and not security.tls:
        err_console.print(
            f"[yellow]warning:[/] the console on {host} serves plain http: the API tokens people log in "
            "with travel in clear text; use --tls-cert/--tls-key, or serve on 127.0.0.1"
        )

    async def serve() -> None:
        server = WebServer(app, host, port, security, warn_exposed=False)
        try:
            await server.start()
        except ConfigurationError as exc:
            raise UsageFailure(str(exc).replace("web_port=0", "--port 0")) from None
        console.print(f"daggerflow console of {url} at [bold]{server.url}/ui/[/] (Ctrl-C to stop)")
        try:
            await until_stop_signal()
        finally:
            await server.stop()
            await app.aclose()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
