"""Kafka security options (kafka/client_options.py): validation at construction, faust-style
credentials, the worker command's variables, secrets kept out of reprs and messages; and that
every Kafka client the runtime constructs gets them (one factory, checked on the source)."""

from __future__ import annotations

import ast
import enum
import ssl
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from daggerflow import Dagger
from daggerflow.errors import ConfigurationError
from daggerflow.kafka.client_options import (
    ACCEPTED_OPTIONS,
    RUNTIME_OWNED,
    ClientSecurity,
    client_security,
    command_line_options,
)

SECRET = "s3cr3t-value-0x51"
SRC = Path(__file__).resolve().parents[2] / "src" / "daggerflow"
CA = Path(ssl.get_default_verify_paths().cafile or "")


def sasl(**changes: Any) -> dict[str, Any]:
    return {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": "alice", "sasl_plain_password": SECRET, **changes}  # fmt: skip


def refused(options: Any = None, credentials: Any = None) -> str:
    with pytest.raises(ConfigurationError) as info:
        client_security(options, credentials)
    assert SECRET not in str(info.value)
    return str(info.value)


def test_plaintext_by_default_gives_aiokafka_its_defaults() -> None:
    assert client_security().kwargs() == {}
    assert client_security({"client_id": "billing"}).kwargs() == {"client_id": "billing"}


def test_sasl_ssl_gives_the_sasl_settings_and_a_verifying_tls_context() -> None:
    kwargs = client_security(sasl()).kwargs()
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == ("alice", SECRET)
    context = kwargs["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_unknown_keys_are_refused_with_the_accepted_ones() -> None:
    message = refused({"sasl_plain_passwd": SECRET})
    assert "'sasl_plain_passwd'" in message
    assert all(key in message for key in ACCEPTED_OPTIONS)


@pytest.mark.parametrize("key", ["bootstrap_servers", "group_id", "transactional_id", "enable_idempotence",
                                 "isolation_level", "enable_auto_commit", "acks", "auto_offset_reset"])  # fmt: skip
def test_keys_the_runtime_owns_are_refused_with_the_reason(key: str) -> None:
    message = refused({key: "x"})
    assert key in message and RUNTIME_OWNED[key] in message


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"security_protocol": "SASL_TLS"}, "security_protocol must be one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"),
        (sasl(sasl_mechanism="GSSAPI"), "sasl_mechanism must be one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"),
        (sasl(sasl_plain_username=None), "needs sasl_plain_username"),
        ({"security_protocol": "SASL_SSL"}, "needs sasl_plain_username and sasl_plain_password"),
        ({"sasl_plain_username": "alice"}, "security_protocol is PLAINTEXT: use SASL_SSL or SASL_PLAINTEXT"),
        ({"security_protocol": "SASL_PLAINTEXT", **sasl(security_protocol="SASL_PLAINTEXT"),
          "ssl_cafile": "/ca.pem"}, "ssl_cafile given but security_protocol is SASL_PLAINTEXT"),
        ({"security_protocol": "SSL", "ssl_cafile": "/no/such/ca.pem"}, "ssl_cafile: no such file: /no/such/ca.pem"),
        ({"security_protocol": "SSL", "ssl_context": "not a context"}, "ssl_context must be an ssl.SSLContext"),
        (sasl(sasl_plain_password=""), "sasl_plain_password must be a non-empty string, not a secret"),
        ({"metadata_max_age_ms": -1}, "metadata_max_age_ms must be a positive integer"),
    ],
)
def test_wrong_values_and_combinations_are_refused(options: dict[str, Any], expected: str) -> None:
    assert expected in refused(options)


def test_lower_case_protocol_and_mechanism_are_accepted() -> None:
    security = client_security(sasl(security_protocol="sasl_ssl", sasl_mechanism="scram-sha-256"))
    assert (security.security_protocol, security.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-256")


def test_an_unreadable_ca_file_is_refused_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    assert f"ssl_cafile {bad}: not a PEM CA file" in refused({"security_protocol": "SSL", "ssl_cafile": str(bad)})


@pytest.mark.skipif(not CA.is_file(), reason="no system CA bundle file")
def test_a_ca_file_builds_the_context() -> None:
    context = client_security({"security_protocol": "SSL", "ssl_cafile": CA, "ssl_check_hostname": False}).ssl_context
    assert context is not None and not context.check_hostname and context.get_ca_certs() is not None


def test_secrets_are_in_no_repr() -> None:
    security = client_security(sasl())
    assert SECRET not in repr(security)
    engine = Dagger(broker="kafka://127.0.0.1:9092", kafka_client_options=sasl())
    assert SECRET not in repr(engine.config)
    kafka = engine.config.kafka_config()
    assert SECRET not in repr(kafka) and kafka.security == security
    assert SECRET not in repr(kafka.connection)


def test_dagger_refuses_bad_options_at_construction_and_on_reconfigure() -> None:
    with pytest.raises(ConfigurationError, match="unknown key 'sasl_password'"):
        Dagger(broker="kafka://127.0.0.1:9092", kafka_client_options={"sasl_password": SECRET})
    engine = Dagger(broker="kafka://127.0.0.1:9092")
    with pytest.raises(ConfigurationError, match="group_id is set by daggerflow"):
        engine.reconfigure(kafka_client_options={"group_id": "mine"})


def test_the_options_are_copied() -> None:
    options = sasl()
    engine = Dagger(broker="kafka://127.0.0.1:9092", kafka_client_options=options)
    options["sasl_plain_username"] = "mallory"
    assert engine.config.kafka_config().security.sasl_plain_username == "alice"


class Mechanism(enum.Enum):  # faust's SASLMechanism / AuthProtocol are enums like these
    SCRAM_SHA_256 = "SCRAM-SHA-256"


class Protocol(enum.Enum):
    SASL_SSL = "SASL_SSL"


def test_faust_style_sasl_credentials() -> None:
    context = ssl.create_default_context()
    # faust's SASLCredentials(username=, password=, ssl_context=, mechanism=): SASL_SSL with a context
    creds = SimpleNamespace(username="alice", password=SECRET, ssl_context=context, mechanism=Mechanism.SCRAM_SHA_256)
    security = client_security(None, creds)
    assert security.security_protocol == "SASL_SSL" and security.ssl_context is context
    assert security.sasl_mechanism == "SCRAM-SHA-256" and security.sasl_plain_password == SECRET
    # without a context: SASL_PLAINTEXT, PLAIN by default
    plain = client_security(None, SimpleNamespace(username="bob", password=SECRET, ssl_context=None, mechanism=None))
    assert (plain.security_protocol, plain.sasl_mechanism) == ("SASL_PLAINTEXT", "PLAIN")
    explicit = SimpleNamespace(username="a", password=SECRET, ssl_context=context, protocol=Protocol.SASL_SSL)
    assert client_security(None, explicit).security_protocol == "SASL_SSL"


def test_faust_style_ssl_credentials_an_ssl_context_and_a_mapping() -> None:
    context = ssl.create_default_context()
    assert client_security(None, SimpleNamespace(context=context)).ssl_context is context  # SSLCredentials
    assert client_security(None, context).security_protocol == "SSL"
    mapping = client_security(None, {"username": "alice", "password": SECRET, "mechanism": "SCRAM-SHA-512",
                                     "ssl_context": context})  # fmt: skip
    assert (mapping.security_protocol, mapping.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
    assert "unknown key(s) user" in refused(None, {"user": "alice"})
    assert "none of username" in refused(None, object())
    gssapi = SimpleNamespace(kerberos_service_name="kafka", ssl_context=None, mechanism="GSSAPI")
    assert "GSSAPI and OAUTHBEARER are not supported" in refused(None, gssapi)


def test_credentials_and_options_combine_but_may_not_contradict() -> None:
    creds = {"username": "alice", "password": SECRET, "mechanism": "SCRAM-SHA-512", "ssl_context": ssl.create_default_context()}
    combined = client_security({"client_id": "billing"}, creds)
    assert combined.extra == {"client_id": "billing"} and combined.sasl_plain_username == "alice"
    message = refused({"sasl_plain_username": "bob"}, creds)
    assert "both set sasl_plain_username" in message and "alice" not in message and "bob" not in message


def test_command_line_options_read_secrets_from_the_environment_or_a_file(tmp_path: Path) -> None:
    got = command_line_options(security_protocol="SASL_SSL", sasl_mechanism="PLAIN", sasl_username="alice",
                               environ={"DAGGERFLOW_KAFKA_SASL_PASSWORD": SECRET})  # fmt: skip
    assert got == {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_plain_username": "alice",
                   "sasl_plain_password": SECRET}  # fmt: skip
    secret_file = tmp_path / "password"
    secret_file.write_text(SECRET + "\n")
    assert command_line_options(sasl_password_file=str(secret_file), environ={})["sasl_plain_password"] == SECRET
    with pytest.raises(ConfigurationError, match="given twice"):
        command_line_options(sasl_password_file=str(secret_file), environ={"DAGGERFLOW_KAFKA_SASL_PASSWORD": "x"})
    with pytest.raises(ConfigurationError, match="cannot read the SASL password file"):
        command_line_options(sasl_password_file=str(tmp_path / "missing"), environ={})
    assert command_line_options(environ={}) == {}


def test_the_worker_command_refuses_incomplete_kafka_security_in_one_line(tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text("from daggerflow import Dagger\nengine = Dagger(broker='kafka://127.0.0.1:1')\n")
    result = subprocess.run(
        [sys.executable, "-m", "daggerflow", "worker", str(app), "--no-web",
         "--kafka-security-protocol", "sasl_ssl", "--kafka-sasl-username", "alice"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: ConfigurationError: kafka security_protocol SASL_SSL needs sasl_plain_password"
    )


# Every Kafka client of the runtime ---------------------------------------------------------

CLIENTS = ("AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient", "AIOKafkaClient")


def _calls(path: Path) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Call)
        and (getattr(node.func, "id", None) or getattr(node.func, "attr", None)) in CLIENTS
    ]


def test_every_kafka_client_is_made_by_the_factories_that_add_the_security_settings() -> None:
    """A client constructed anywhere else under kafka/ would connect without TLS/SASL."""
    found: dict[str, int] = {}
    for path in sorted((SRC / "kafka").rglob("*.py")):
        for call in _calls(path):
            where = f"{path.relative_to(SRC)}:{call.lineno}"
            assert path.name == "settings.py", f"{where}: construct Kafka clients with kafka/settings.py's factories"
            assert not call.args and len(call.keywords) == 1 and call.keywords[0].arg is None, where
            spread = call.keywords[0].value
            assert isinstance(spread, ast.Call) and getattr(spread.func, "id", "") == "client_kwargs", where
            name = getattr(call.func, "id", None) or getattr(call.func, "attr", "")
            found[name] = found.get(name, 0) + 1
    assert found == {name: 1 for name in CLIENTS}


def test_client_kwargs_spreads_the_security_settings_into_every_client() -> None:
    pytest.importorskip("aiokafka")
    from daggerflow.kafka.client_options import Connection
    from daggerflow.kafka.settings import client_kwargs

    conn = Connection("h:9093", client_security(sasl(client_id="billing")))
    kwargs = client_kwargs(conn, {"linger_ms": 0})
    assert kwargs["bootstrap_servers"] == "h:9093" and kwargs["linger_ms"] == 0
    assert kwargs["sasl_plain_password"] == SECRET and isinstance(kwargs["ssl_context"], ssl.SSLContext)
    assert client_kwargs(conn, {"client_id": "reaper"})["client_id"] == "reaper"
    with pytest.raises(TypeError, match="security_protocol"):
        client_kwargs(conn, {"security_protocol": "PLAINTEXT"})
    assert client_kwargs("h:9092", {}) == {"bootstrap_servers": "h:9092"}
    assert isinstance(conn.security, ClientSecurity)


def test_the_runtime_passes_its_connection_to_every_component() -> None:
    """No component is handed a bare bootstrap string (which means PLAINTEXT): ``x.bootstrap``
    is an argument only of log calls, outside the modules that make the clients."""
    makers = {"settings.py", "preflight.py", "config.py", "client_options.py"}
    offenders = []
    for path in sorted((SRC / "kafka").rglob("*.py")):
        if path.name in makers:
            continue
        for call in (n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call)):
            func = call.func
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "log":
                continue
            for arg in [*call.args, *(k.value for k in call.keywords)]:
                if isinstance(arg, ast.Attribute) and arg.attr == "bootstrap":
                    offenders.append(f"{path.relative_to(SRC)}:{call.lineno}")
    assert offenders == []
