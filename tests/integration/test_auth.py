"""API tokens and https on the REST API, over a real uvicorn server and real HTTP (httpx).

- Without tokens every route is open, as before.
- With tokens every route but the probes, the OpenAPI description and the docs page (and
  ``/metrics`` with ``metrics_public``) needs ``Authorization: Bearer``: 401 JSON without or
  with a wrong token, 403 for a read token on a mutating method.
- Tokens never reach a log line, a repr, stats or metrics.
- https with a self-signed certificate made by openssl at test time: httpx and the CLI reach it
  with the certificate as CA, and plain http does not.
- Exposed binds (not loopback) without a token, or with one but without TLS, log a WARNING.
- Forwarded reads (``kafka.remote.Forwarder``) present the token and verify https owners.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from daggerflow import ConfigurationError, DAGBuilderHelper, Dagger, ExecutorTask
from daggerflow.errors import ForwardError
from daggerflow.kafka.remote import Forwarder
from daggerflow.web.auth import ApiToken, TokenAuth, parse_tokens

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "daggerflow"]

ADMIN = "adm1n-T0ken-4f9c2e7b81d3a6"
READ = "r3ad-T0ken-9b1e6c4a2f8d07"
WRONG = "wr0ng-T0ken-000000000000000"
TOKENS = [f"admin:{ADMIN}", f"read:{READ}"]


class Quick(ExecutorTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        runtime_parameters["done"] = True


def register(engine: Dagger) -> None:
    helper = DAGBuilderHelper(engine)
    process = helper.generic_process_builder(
        process_name="Main", root_task=helper.generic_executor_task_builder(task_type=Quick, name="Main")
    )
    engine.add_template("quick", helper.generic_template(template_name="quick", root_process=process))


@pytest.fixture(autouse=True)
def no_token_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DAGGERFLOW_API_TOKEN", raising=False)


@pytest.fixture
def start_engine(make_engine: Callable[..., Dagger]) -> Callable[..., Any]:
    """``async with start_engine(**options) as engine``: a started engine serving on a free port."""
    started: list[Dagger] = []

    class Started:
        def __init__(self, **options: Any) -> None:
            options.setdefault("web_port", 0)
            self.engine = make_engine(name=f"e{len(started)}", **options)
            register(self.engine)
            started.append(self.engine)

        async def __aenter__(self) -> Dagger:
            await self.engine.start()
            return self.engine

        async def __aexit__(self, *exc: object) -> None:
            await self.engine.stop()

    return Started


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def url(engine: Dagger) -> str:
    assert engine.web_url is not None
    return engine.web_url


@dataclass
class Cert:
    cert: str
    key: str


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Cert:
    """A self-signed certificate for 127.0.0.1 and localhost, made with openssl now."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is needed to make the test certificate (apt-get install openssl)")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"), "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    return Cert(str(d / "cert.pem"), str(d / "key.pem"))


def trusting(cert: Cert) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=cert.cert)


# without tokens ---------------------------------------------------------------------------


async def test_without_tokens_everything_is_open(start_engine: Callable[..., Any]) -> None:
    async with start_engine() as engine, httpx.AsyncClient(base_url=url(engine)) as http:
        assert engine.config.api_tokens == ()
        assert (await http.get("/api/v1/instances")).status_code == 200
        created = await http.post("/api/v1/templates/quick/instances", json={"id": "a"})
        assert created.status_code == 201, created.text
        assert (await http.get("/metrics")).status_code == 200
        assert (await http.get("/internal/v1/count")).status_code == 200


# with tokens ------------------------------------------------------------------------------


@pytest.fixture
async def secured(start_engine: Callable[..., Any]) -> AsyncIterator[httpx.AsyncClient]:
    async with start_engine(api_token=TOKENS) as engine, httpx.AsyncClient(base_url=url(engine)) as http:
        yield http


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/instances"),
        ("GET", "/api/v1/instances/x"),
        ("GET", "/tasks/instances"),
        ("GET", "/api/v1/templates"),
        ("GET", "/api/v1/stats"),
        ("GET", "/topics"),
        ("GET", "/metrics"),
        ("GET", "/internal/v1/instances"),
        ("GET", "/internal/v1/count"),
        ("GET", "/no/such/route"),
        ("GET", "/docs/../api/v1/instances"),
        ("POST", "/api/v1/templates/quick/instances"),
        ("POST", "/api/v1/instances/x/stop"),
        ("DELETE", "/api/v1/instances/x"),
    ],
)
async def test_a_missing_or_wrong_token_is_a_401(secured: httpx.AsyncClient, method: str, path: str) -> None:
    for headers, says in (
        ({}, "needs an API token"),
        (bearer(WRONG), "not valid"),
        ({"Authorization": f"Basic {ADMIN}"}, "not valid"),
        ({"Authorization": "Bearer"}, "not valid"),
    ):
        r = await secured.request(method, path, headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.json() == {"error": r.json()["error"], "status": 401} and says in r.json()["error"]
        assert r.headers["content-type"] == "application/json"
        assert r.headers["www-authenticate"].startswith("Bearer")


async def test_a_read_token_reads_and_an_admin_token_also_writes(secured: httpx.AsyncClient) -> None:
    body = {"id": "o-1", "runtime_parameters": {"n": 1}}
    for token in (READ, ADMIN):
        assert (await secured.get("/api/v1/instances", headers=bearer(token))).status_code == 200
        assert (await secured.get("/internal/v1/count", headers=bearer(token))).status_code == 200

    denied = await secured.post("/api/v1/templates/quick/instances", json=body, headers=bearer(READ))
    assert denied.status_code == 403
    assert denied.json() == {"error": "POST needs an admin token; this token is read-only", "status": 403}
    assert 'error="insufficient_scope"' in denied.headers["www-authenticate"]
    assert (await secured.get("/api/v1/instances/o-1", headers=bearer(READ))).status_code == 404  # not created
    for method in ("PUT", "PATCH", "DELETE"):
        r = await secured.request(method, "/api/v1/instances/o-1", headers=bearer(READ))
        assert r.status_code == 403, method

    created = await secured.post("/api/v1/templates/quick/instances", json=body, headers=bearer(ADMIN))
    assert created.status_code == 201, created.text
    shown = await secured.get("/api/v1/instances/o-1", headers=bearer(READ))
    assert shown.status_code == 200 and shown.json()["id"] == "o-1"
    # Past the middleware the application answers as usual: its own 404 and 405.
    assert (await secured.get("/no/such/route", headers=bearer(READ))).status_code == 404
    assert (await secured.delete("/api/v1/instances/o-1", headers=bearer(ADMIN))).status_code == 405


async def test_probes_and_the_api_description_stay_open(secured: httpx.AsyncClient) -> None:
    ready = await secured.get("/service/ready")
    assert ready.status_code == 200 and ready.json() == {"is_ready": True}
    # Open does not mean they exist: the application answers for them (404 until it serves them).
    for path in ("/openapi.json", "/docs", "/docs/swagger-ui.css"):
        assert (await secured.get(path)).status_code != 401, path
    assert (await secured.get("/metrics")).status_code == 401


async def test_metrics_public_opens_metrics_only(start_engine: Callable[..., Any]) -> None:
    async with start_engine(api_token=ADMIN, metrics_public=True) as engine:
        async with httpx.AsyncClient(base_url=url(engine)) as http:
            metrics = await http.get("/metrics")
            assert metrics.status_code == 200 and "daggerflow_transitions" in metrics.text
            assert (await http.get("/api/v1/stats")).status_code == 401


async def test_tokens_never_reach_logs_reprs_stats_or_metrics(
    start_engine: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with start_engine(api_token=TOKENS, web_host="0.0.0.0") as engine:
        port = url(engine).rsplit(":", 1)[1]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            for token in (ADMIN, READ, WRONG):
                await http.get("/api/v1/instances", headers=bearer(token))
                await http.post("/api/v1/templates/quick/instances", json={}, headers=bearer(token))
            stats = (await http.get("/api/v1/stats", headers=bearer(ADMIN))).text
            metrics = (await http.get("/metrics", headers=bearer(ADMIN))).text
        async with Forwarder(token=ADMIN) as fwd:
            assert await fwd.count_instances(f"http://127.0.0.1:{port}", status=None, template=None) == 1  # the admin POST
        texts = [caplog.text, repr(engine.config), str(engine.config), repr(engine.config.api_tokens), stats, metrics]
    assert "clear text" in caplog.text  # the warnings were logged, without the tokens
    for text in texts:
        for token in (ADMIN, READ, WRONG):
            assert token not in text


def test_the_kafka_config_hides_the_forwarding_token() -> None:
    config = Dagger(broker="kafka://127.0.0.1:9092", api_token=[f"read:{READ}", ADMIN], web_port=None).config
    kafka = config.kafka_config()
    assert kafka.forward_token == ADMIN  # the admin token is the one presented
    assert ADMIN not in repr(kafka) and READ not in repr(kafka)
    only_read = Dagger(broker="kafka://127.0.0.1:9092", api_token=f"read:{READ}", web_port=None)
    assert only_read.config.kafka_config().forward_token == READ


# the accepted forms -----------------------------------------------------------------------


def test_accepted_forms() -> None:
    assert parse_tokens(ADMIN) == (ApiToken("admin", ADMIN),)
    both = (ApiToken("admin", ADMIN), ApiToken("read", READ))
    assert parse_tokens(f"admin:{ADMIN}, read:{READ}") == both
    assert parse_tokens([ADMIN, f"read:{READ}"]) == both
    assert parse_tokens(both) == both
    assert parse_tokens(f"admin:{WRONG}:with:colons") == (ApiToken("admin", f"{WRONG}:with:colons"),)
    assert parse_tokens([]) == () and parse_tokens(None) == ()
    # Validated again by reconfigure (dataclasses.replace): the parsed form is accepted.
    engine = Dagger(store="memory://", api_token=TOKENS, web_port=None)
    engine.reconfigure(web_port=0)
    assert engine.config.api_tokens == both


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "api_token: the token is empty"),
        (f"{ADMIN},", "api_token #2: the token is empty"),
        ("short", "fewer than 16 characters; a short token can be guessed"),
        ("read:", "fewer than 16 characters"),
        (f"owner:{ADMIN}", "the part before ':' is not a scope; write read:TOKEN or admin:TOKEN"),
        (f"{ADMIN[:8]}:{ADMIN}", "the part before ':' is not a scope"),
        (f"{ADMIN} x", "whitespace, ',' or a non-ASCII character"),
        (f"{ADMIN}é", "non-ASCII"),
        ([ADMIN, f"read:{ADMIN}"], "the same token is given twice"),
        (42, "got a int"),
        ([ADMIN, 42], "got a int"),
        ([ApiToken("root", ADMIN)], "the scope must be 'read' or 'admin'"),
    ],
)
def test_malformed_tokens_are_configuration_errors(value: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match="api_token") as caught:
        Dagger(store="memory://", api_token=value)
    assert message in str(caught.value)
    assert ADMIN not in str(caught.value) and ADMIN[:8] not in str(caught.value)


def test_the_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAGGERFLOW_API_TOKEN", f"admin:{ADMIN},read:{READ}")
    assert [t.scope for t in Dagger(store="memory://").config.api_tokens] == ["admin", "read"]
    # An explicit option wins, and [] turns tokens off whatever the environment says.
    assert Dagger(store="memory://", api_token=WRONG).config.api_tokens == (ApiToken("admin", WRONG),)
    assert Dagger(store="memory://", api_token=[]).config.api_tokens == ()
    monkeypatch.setenv("DAGGERFLOW_API_TOKEN", "")
    assert Dagger(store="memory://").config.api_tokens == ()
    monkeypatch.setenv("DAGGERFLOW_API_TOKEN", "tooshort")
    with pytest.raises(ConfigurationError, match="DAGGERFLOW_API_TOKEN: the token has fewer than 16"):
        Dagger(store="memory://")


def test_tls_options_are_checked_at_construction(tls: Cert, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="go together: give both or neither"):
        Dagger(store="memory://", web_tls_certfile=tls.cert)
    with pytest.raises(ConfigurationError, match=re.escape("web_tls_keyfile='/nope/key.pem': no such file")):
        Dagger(store="memory://", web_tls_certfile=tls.cert, web_tls_keyfile="/nope/key.pem")
    with pytest.raises(ConfigurationError, match="not a PEM certificate and its private key"):
        Dagger(store="memory://", web_tls_certfile=tls.key, web_tls_keyfile=tls.cert)
    encrypted = tmp_path / "enc.pem"
    subprocess.run(["openssl", "pkey", "-in", tls.key, "-aes256", "-passout", "pass:pw", "-out", str(encrypted)],
                   check=True)  # fmt: skip
    with pytest.raises(ConfigurationError, match="web_tls_keyfile is encrypted"):
        Dagger(store="memory://", web_tls_certfile=tls.cert, web_tls_keyfile=str(encrypted))
    with pytest.raises(ConfigurationError, match=re.escape("web_tls_cafile='/nope/ca.pem': no such file")):
        Dagger(store="memory://", web_tls_cafile="/nope/ca.pem")
    with pytest.raises(ConfigurationError, match=r"web_tls_cafile=.*: not a PEM certificate"):
        Dagger(store="memory://", web_tls_cafile=str(encrypted))
    ok = Dagger(store="memory://", web_tls_certfile=tls.cert, web_tls_keyfile=tls.key, web_tls_cafile=tls.cert)
    assert ok.config.web_security().tls


# https ------------------------------------------------------------------------------------


async def test_https_with_a_self_signed_certificate(start_engine: Callable[..., Any], tls: Cert) -> None:
    async with start_engine(api_token=TOKENS, web_tls_certfile=tls.cert, web_tls_keyfile=tls.key) as engine:
        base = url(engine)
        assert base.startswith("https://127.0.0.1:")
        async with httpx.AsyncClient(verify=trusting(tls)) as http:
            r = await http.get(f"{base}/api/v1/templates", headers=bearer(READ))
            assert r.status_code == 200 and r.json()[0]["name"] == "quick"
            assert (await http.get(f"{base}/api/v1/templates")).status_code == 401
        async with httpx.AsyncClient() as untrusting:  # the system's CAs did not sign it
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await untrusting.get(f"{base}/service/ready")
        plain = base.replace("https://", "http://")
        async with httpx.AsyncClient() as http:
            with pytest.raises(httpx.HTTPError):
                await http.get(f"{plain}/service/ready", headers=bearer(READ))
        # Forwarded reads verify with web_tls_cafile and present the token.
        async with Forwarder(token=READ, cafile=tls.cert) as fwd:
            assert await fwd.count_instances(base, status=None, template=None) == 0
        async with Forwarder(token=READ) as fwd:
            with pytest.raises(ForwardError, match="CERTIFICATE_VERIFY_FAILED") as caught:
                await fwd.count_instances(base, status=None, template=None)
            assert caught.value.status is None


# forwarded reads --------------------------------------------------------------------------


async def test_forwarded_reads_present_the_token(start_engine: Callable[..., Any]) -> None:
    async with start_engine(api_token=TOKENS) as owner:
        await owner.get_template("quick").create_instance("f-1", submit_task=False)
        async with Forwarder(token=READ) as fwd:
            got = await fwd.get_instance(url(owner), "f-1")
            assert got is not None and got.id == "f-1"
            assert await fwd.get_instance(url(owner), "missing") is None  # the route's own 404
        for token in (None, WRONG):
            async with Forwarder(token=token) as fwd:
                with pytest.raises(ForwardError) as caught:
                    await fwd.get_instance(url(owner), "f-1")
            assert caught.value.status == 401
            refused = "this process's API token" if token else "a read without an API token"
            assert f"the owner refused {refused} (401)" in str(caught.value)
            assert "shared api_token" in str(caught.value) and ADMIN not in str(caught.value)


# exposed binds ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "warning"),
    [
        ({}, "IS OPEN TO ANYONE WHO CAN REACH THIS ADDRESS"),
        ({"api_token": ADMIN}, "tokens travel in clear text"),
        ({"api_token": ADMIN, "tls": True}, None),
    ],
)
async def test_exposed_binds_are_logged_loudly(
    start_engine: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
    tls: Cert,
    options: dict[str, Any],
    warning: str | None,
) -> None:
    if options.pop("tls", False):
        options |= {"web_tls_certfile": tls.cert, "web_tls_keyfile": tls.key}
    caplog.set_level(logging.WARNING, logger="daggerflow.web.server")
    async with start_engine(web_host="0.0.0.0", **options) as engine:
        port = url(engine).rsplit(":", 1)[1]
    warnings = [r for r in caplog.records if r.name == "daggerflow.web.server" and r.levelno == logging.WARNING]
    if warning is None:
        assert warnings == []
        return
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert warning in message and f"0.0.0.0:{port}" in message
    if not options:
        assert "api_token" in message and "DAGGERFLOW_API_TOKEN" in message


async def test_loopback_binds_are_not_warned_about(
    start_engine: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="daggerflow.web.server")
    async with start_engine(web_host="127.0.0.1"), start_engine(web_host="localhost"):
        pass
    assert [r for r in caplog.records if r.name == "daggerflow.web.server"] == []


# the middleware alone ---------------------------------------------------------------------


def test_the_middleware_needs_a_token() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("not called")

    with pytest.raises(ValueError, match="at least one token"):
        TokenAuth(app, [])


# the CLI ----------------------------------------------------------------------------------


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("DAGGERFLOW_API_TOKEN", "DAGGERFLOW_CA_CERT")}
    return subprocess.run([*CLI, *args], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**environ, **(env or {})})  # fmt: skip


async def acli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(cli, *args, env=env)


def one_line_error(result: subprocess.CompletedProcess[str], expected: str) -> None:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"error: {expected}"], result.stderr


async def test_the_cli_sends_the_token(start_engine: Callable[..., Any]) -> None:
    async with start_engine(api_token=TOKENS) as engine:
        base = url(engine)
        missing = await acli("templates", "--url", base)
        one_line_error(missing, f"the worker at {base} needs an API token: pass --api-token or set DAGGERFLOW_API_TOKEN")
        wrong = await acli("instances", "--url", base, "--api-token", WRONG)
        one_line_error(wrong, f"the worker at {base} refused the API token: check --api-token or DAGGERFLOW_API_TOKEN")
        read_only = await acli("create", "quick", "--id", "c-1", "--url", base, env={"DAGGERFLOW_API_TOKEN": READ})
        one_line_error(read_only,
                       f"the worker at {base} refused: the API token is read-only and POST needs an admin one")  # fmt: skip
        # The worker's own list form works: the client sends its admin token.
        env = {"DAGGERFLOW_API_TOKEN": f"read:{READ},admin:{ADMIN}"}
        created = await acli("create", "quick", "--id", "c-1", "--url", base, env=env)
        assert created.returncode == 0, created.stderr
        assert "created c-1" in created.stdout
        shown = await acli("instance", "c-1", "--url", base, "--api-token", f"read:{READ}")
        assert shown.returncode == 0 and '"c-1"' in shown.stdout
        bad = await acli("templates", "--url", base, "--api-token", "short")
        assert bad.returncode == 2 and "fewer than 16 characters" in bad.stderr and "Traceback" not in bad.stderr


def test_the_worker_serves_https_with_tokens_and_the_cli_reaches_it(tls: Cert, tmp_path: Path) -> None:
    port = _free_port()
    command = [*CLI, "worker", "examples.pizza:workflow_engine", "--web-port", str(port),
               "--store", f"sqlite:///{tmp_path}/w.db", "--api-token", f"read:{READ},admin:{ADMIN}",
               "--web-tls-cert", tls.cert, "--web-tls-key", tls.key, "--web-tls-ca", tls.cert]  # fmt: skip
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PIZZA_KITCHEN_DELAY": "0"})  # fmt: skip
    base = f"https://127.0.0.1:{port}"
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "started" in line:
                break
        assert f"web {base}" in lines[-1], "".join(lines)
        ok = cli("templates", "--json", "--url", base, "--ca-cert", tls.cert, env={"DAGGERFLOW_API_TOKEN": READ})
        assert ok.returncode == 0, ok.stderr
        assert '"PizzaWorkflow"' in ok.stdout
        by_env = cli("templates", "--url", base, env={"DAGGERFLOW_API_TOKEN": READ, "DAGGERFLOW_CA_CERT": tls.cert})
        assert by_env.returncode == 0 and "PizzaWorkflow" in by_env.stdout
        untrusted = cli("templates", "--url", base, "--api-token", READ)
        one_line_error(untrusted, f"the worker at {base} has a certificate this client does not trust: for a "
                       "self-signed or private-CA certificate pass --ca-cert FILE or DAGGERFLOW_CA_CERT")  # fmt: skip
        plain = cli("templates", "--url", base.replace("https", "http"), "--api-token", READ)
        assert plain.returncode == 1 and "cannot reach a daggerflow worker" in plain.stderr
        assert "Traceback" not in plain.stderr
    finally:
        proc.terminate()
        output = proc.communicate(timeout=20)[0]
    assert proc.returncode == 0, output
    assert ADMIN not in output and READ not in output


def test_the_worker_refuses_bad_token_and_tls_flags(tls: Cert) -> None:
    # Usage errors: nothing was started, exit 2 (README, "Exit codes").
    target = "examples.pizza:workflow_engine"
    swapped = cli("worker", target, "--no-web", "--web-tls-cert", tls.key, "--web-tls-key", tls.cert)
    assert swapped.returncode == 2 and "not a PEM certificate and its private key" in swapped.stderr
    alone = cli("worker", target, "--no-web", "--web-tls-cert", tls.cert)
    assert alone.returncode == 2 and "give both or neither" in alone.stderr
    short = cli("worker", target, "--no-web", "--api-token", "read:tooshort")
    assert short.returncode == 2 and "fewer than 16 characters" in short.stderr
    for result in (swapped, alone, short):
        assert "Traceback" not in result.stderr


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
