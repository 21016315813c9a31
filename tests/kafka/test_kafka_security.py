"""The Kafka runtime on a secured listener (issue #9 §3): tools/kafka/broker's SASL_SSL listener
(its own CA, SCRAM-SHA-256/512 and PLAIN users; ``conftest.sasl_listener``).

- the pizza workflow end to end through SASL_SSL with SCRAM-SHA-512 and exactly-once: worker
  processes configured by ``daggerflow worker``'s DAGGERFLOW_KAFKA_* variables, an in-process
  client engine by ``kafka_client_options``; the test itself reads the topics through the same
  broker's PLAINTEXT listener;
- PLAIN and SCRAM-SHA-256 authenticate too;
- a wrong password, an unknown user, a missing CA and a client without TLS fail fast, with an
  error naming the listener and what went wrong, and never showing the password.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("aiokafka")

from daggerflow import Dagger
from daggerflow.errors import ConfigurationError
from daggerflow.kafka.admin import TopicSpec, ensure_topics
from daggerflow.kafka.client_options import Connection, client_security
from daggerflow.kafka.preflight import check_connection

from .cluster import REPO, Cluster, UpdatesWatcher, exactly_once, field_counts, read_topic, unique_app
from .conftest import SaslListener

pytestmark = pytest.mark.timeout(180)

FAIL_FAST = 15.0  # seconds: a refused connection must be reported within this
WRONG = "not-the-password-7f3a9c"


def worker_env(sasl: SaslListener) -> dict[str, str]:
    """The DAGGERFLOW_KAFKA_* variables of ``daggerflow worker`` for the SCRAM-SHA-512 user."""
    return {
        "DAGGERFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "DAGGERFLOW_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "DAGGERFLOW_KAFKA_SASL_USERNAME": sasl.scram_username,
        "DAGGERFLOW_KAFKA_SASL_PASSWORD": sasl.scram_password,
        "DAGGERFLOW_KAFKA_SSL_CAFILE": sasl.cafile,
    }


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Everything at DEBUG, aiokafka's loggers included: where a secret could leak."""
    caplog.set_level(logging.DEBUG)
    for name in ("aiokafka", "daggerflow"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


async def test_pizza_runs_end_to_end_through_sasl_ssl_with_scram_sha_512_exactly_once(
    make_cluster: Callable[..., Cluster],
    broker: str,
    sasl_listener: SaslListener,
    debug_logs: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sasl = sasl_listener
    cluster = make_cluster(broker_url=sasl.url, partitions=4, env=worker_env(sasl))
    # The same broker's PLAINTEXT listener: what the test reads (and the teardown deletes) through.
    cluster.bootstrap = broker
    await cluster.start(1)
    for key, value in cluster.env(cluster.root / "client").items():
        monkeypatch.setenv(key, value)
    from daggerflow.demo import kafka_app

    client = kafka_app.build(role="client")
    client.reconfigure(broker=sasl.url, kafka_client_options=sasl.options("SCRAM-SHA-512"))
    ids = [f"o{i:03d}" for i in range(20)]
    watcher = UpdatesWatcher(cluster.bootstrap, cluster.topic("updates"))
    try:
        async with client:
            for oid in ids:
                params = {"order_id": oid, "customer_id": f"c-{oid}", "pizza_type": "margherita"}
                await client.create_instance(client.get_template("PizzaWorkflow"), oid, params, submit_task=True)
            await watcher.wait_completed(ids, timeout=120)
    finally:
        await watcher.close()
    orders = await read_topic(cluster.bootstrap, cluster.topic("pizza_order_topic"))
    exactly_once(field_counts(orders), ids, "orders on pizza_order_topic")
    deliveries = await read_topic(cluster.bootstrap, cluster.topic("deliveries"))
    exactly_once(field_counts(deliveries), ids, "deliveries")
    worker = cluster.workers[0]
    assert f"on {sasl.bootstrap}" in worker.log(), worker.tail()
    assert [r for r in debug_logs.records if r.name.startswith("aiokafka")], "aiokafka's DEBUG logs were captured"
    assert sasl.scram_password not in debug_logs.text
    assert sasl.scram_password not in worker.log(whole=True)
    assert sasl.scram_password not in repr(client.config)


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
async def test_plain_and_scram_sha_256_users_authenticate(sasl_listener: SaslListener, mechanism: str) -> None:
    conn = Connection(sasl_listener.bootstrap, client_security(sasl_listener.options(mechanism)))
    await check_connection(conn)
    name = f"{unique_app()}-{mechanism.lower()}"
    shapes = await ensure_topics(conn, [TopicSpec(name, 2)])  # the admin client, through SASL_SSL
    assert shapes[name].partitions == 2


def engine_on(sasl: SaslListener, tmp_path: Path, **options: Any) -> Dagger:
    return Dagger(broker=sasl.url, application_name=unique_app(), datadir=str(tmp_path), web_port=None,
                  kafka_client_options=sasl.options(**options))  # fmt: skip


async def start_fails(engine: Dagger) -> tuple[str, float]:
    t0 = time.monotonic()
    with pytest.raises(ConfigurationError) as info:
        await asyncio.wait_for(engine.start(), 60)
    return str(info.value), time.monotonic() - t0


async def test_a_wrong_password_fails_start_fast_naming_the_listener_and_the_mechanism(
    sasl_listener: SaslListener, tmp_path: Path, debug_logs: pytest.LogCaptureFixture
) -> None:
    engine = engine_on(sasl_listener, tmp_path, sasl_plain_password=WRONG)
    message, took = await start_fails(engine)
    assert took < FAIL_FAST, f"{took:.1f} s"
    assert sasl_listener.bootstrap in message
    assert "SCRAM-SHA-512" in message
    assert "authentication failed" in message
    assert WRONG not in message
    assert WRONG not in debug_logs.text
    assert engine.runtime is None  # nothing half-started stays behind


async def test_an_unknown_plain_user_fails_fast(sasl_listener: SaslListener, tmp_path: Path) -> None:
    engine = engine_on(sasl_listener, tmp_path, mechanism="PLAIN", sasl_plain_username="nobody")
    message, took = await start_fails(engine)
    assert took < FAIL_FAST, f"{took:.1f} s"
    assert "authentication failed" in message and "PLAIN" in message and "'nobody'" in message


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SASL_PLAINTEXT"])
async def test_a_client_without_tls_on_the_sasl_ssl_port_fails_clearly(
    sasl_listener: SaslListener, protocol: str
) -> None:
    options = sasl_listener.options()
    if protocol == "PLAINTEXT":
        options = {"security_protocol": "PLAINTEXT"}
    else:
        del options["ssl_cafile"]
        options["security_protocol"] = protocol
    t0 = time.monotonic()
    with pytest.raises(ConfigurationError) as info:
        await check_connection(Connection(sasl_listener.bootstrap, client_security(options)))
    assert time.monotonic() - t0 < FAIL_FAST
    message = str(info.value)
    assert sasl_listener.bootstrap in message and protocol in message
    assert "closed the connection" in message and "security_protocol" in message


async def test_an_unknown_ca_fails_clearly(sasl_listener: SaslListener) -> None:
    options = sasl_listener.options()
    del options["ssl_cafile"]  # the system's CAs: they did not sign the test broker's certificate
    with pytest.raises(ConfigurationError) as info:
        await check_connection(Connection(sasl_listener.bootstrap, client_security(options)))
    message = str(info.value)
    assert sasl_listener.bootstrap in message
    assert "TLS certificate verification failed" in message and "ssl_cafile" in message


def test_the_worker_command_fails_fast_with_one_line_on_a_wrong_password(
    sasl_listener: SaslListener, tmp_path: Path
) -> None:
    sasl = sasl_listener
    env = {**os.environ, **worker_env(sasl), "DAGGERFLOW_KAFKA_SASL_PASSWORD": WRONG, "DAGGERFLOW_APP": unique_app()}
    t0 = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "daggerflow", "worker", "daggerflow.demo.kafka_app:engine", "--broker", sasl.url,
         "--datadir", str(tmp_path), "--no-web", "--log-level", "DEBUG"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    took = time.monotonic() - t0
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert took < FAIL_FAST + 5, f"{took:.1f} s"  # + the interpreter's and the app's imports
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ConfigurationError:"), output
    assert sasl.bootstrap in last and "SCRAM-SHA-512" in last and "authentication failed" in last
    assert "Traceback" not in output
    assert WRONG not in output


async def test_a_tls_client_on_the_plaintext_port_fails_clearly(broker: str, sasl_listener: SaslListener) -> None:
    options = {"security_protocol": "SSL", "ssl_cafile": sasl_listener.cafile}
    t0 = time.monotonic()
    with pytest.raises(ConfigurationError) as info:
        await check_connection(Connection(broker, client_security(options)))
    assert time.monotonic() - t0 < FAIL_FAST
    assert broker in str(info.value) and "TLS" in str(info.value)
