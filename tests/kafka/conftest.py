"""The Kafka tests' broker: tools/kafka/broker's, or KAFKA_BOOTSTRAP_SERVERS.

Without a broker the tests skip, unless DAGGERFLOW_REQUIRE_KAFKA=1 (set by scripts/test,
which starts one): then they fail, so CI never skips them silently.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")


def broker_up(bootstrap: str = BOOTSTRAP) -> bool:
    host, port = bootstrap.split(",")[0].rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def broker() -> str:
    if not broker_up():
        if os.environ.get("DAGGERFLOW_REQUIRE_KAFKA") == "1":
            pytest.fail(f"Kafka broker required but not reachable at {BOOTSTRAP} (tools/kafka/broker start)")
        pytest.skip(f"no Kafka broker at {BOOTSTRAP}; start one with tools/kafka/broker start")
    return BOOTSTRAP


# ---------------------------------------------------------------------------------------------
# the SASL_SSL listener (tools/kafka/broker writes its address, CA and users to sasl.env)
# ---------------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]


def sasl_env_path() -> Path:
    """$KAFKA_SASL_ENV, else sasl.env in the broker script's state dir ($KAFKA_STATE_DIR)."""
    if os.environ.get("KAFKA_SASL_ENV"):
        return Path(os.environ["KAFKA_SASL_ENV"])
    state = os.environ.get("KAFKA_STATE_DIR") or str(REPO / "tools" / "kafka" / ".cache" / "run")
    return Path(state) / "sasl.env"


@dataclass(frozen=True)
class SaslListener:
    bootstrap: str
    cafile: str
    scram_username: str
    scram_password: str = field(repr=False)
    plain_username: str
    plain_password: str = field(repr=False)

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"

    def options(self, mechanism: str = "SCRAM-SHA-512", **changes: Any) -> dict[str, Any]:
        """kafka_client_options for this listener as the user of ``mechanism``."""
        plain = mechanism == "PLAIN"
        return {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": mechanism,
            "sasl_plain_username": self.plain_username if plain else self.scram_username,
            "sasl_plain_password": self.plain_password if plain else self.scram_password,
            "ssl_cafile": self.cafile,
            **changes,
        }


@pytest.fixture(scope="session")
def sasl_listener() -> SaslListener:
    """The broker's SASL_SSL listener; missing -> skip, or fail under DAGGERFLOW_REQUIRE_KAFKA=1."""
    path = sasl_env_path()
    values: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and not key.startswith("#"):
                values[key.strip()] = value.strip()
    bootstrap = values.get("KAFKA_SASL_BOOTSTRAP_SERVERS", "")
    problem = (
        f"no {path} (tools/kafka/broker start writes it; KAFKA_SASL_ENV to point elsewhere)"
        if not bootstrap
        else None if broker_up(bootstrap) else f"nothing listens at {bootstrap} ({path})"
    )
    if problem:
        if os.environ.get("DAGGERFLOW_REQUIRE_KAFKA") == "1":
            pytest.fail(f"the SASL_SSL Kafka listener is required: {problem}")
        pytest.skip(f"no SASL_SSL Kafka listener: {problem}")
    return SaslListener(
        bootstrap,
        values["KAFKA_SASL_CAFILE"],
        values["KAFKA_SASL_SCRAM_USERNAME"],
        values["KAFKA_SASL_SCRAM_PASSWORD"],
        values["KAFKA_SASL_PLAIN_USERNAME"],
        values["KAFKA_SASL_PLAIN_PASSWORD"],
    )


# ---------------------------------------------------------------------------------------------
# worker clusters (tests/kafka/cluster.py)
# ---------------------------------------------------------------------------------------------

CLUSTERS = pytest.StashKey[list[Any]]()
FAILED = pytest.StashKey[bool]()


@pytest.fixture
def make_cluster(broker: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    """``make_cluster(target=..., env=..., broker_url=...)`` -> a Cluster of a fresh app.
    Teardown kills the workers still running and deletes the app's topics, unless the test
    failed: then they stay for a post-mortem, and the report has the workers' logs (section
    "worker logs of app ...")."""
    from .cluster import Cluster, delete_app_topics, run_in_thread

    clusters: list[Cluster] = []
    request.node.stash[CLUSTERS] = clusters

    def make(*, broker_url: str | None = None, **options: Any) -> Cluster:
        c = Cluster(tmp_path / f"cluster{len(clusters)}", broker_url or broker, **options)
        clusters.append(c)
        return c

    yield make
    for c in clusters:
        c.kill_all()
    if request.node.stash.get(FAILED, False):
        return
    for c in clusters:
        if c.bootstrap != broker:
            continue  # a private broker's data goes with it
        run_in_thread(lambda c=c: delete_app_topics(c.bootstrap, c.app))  # type: ignore[misc]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed and call.when in ("setup", "call"):
        item.stash[FAILED] = True
        for c in item.stash.get(CLUSTERS, []):
            report.sections.append((f"worker logs of app {c.app} ({c.root})", c.dump_logs()))
    return report


@pytest.fixture
def private_broker(broker: str, tmp_path: Path) -> Iterator[Any]:
    """A broker of its own (free ports, state in tmp_path) for a test that restarts it: the
    shared broker stays up for everything else. Stopped (data removed) at teardown."""
    from .cluster import PrivateBroker

    if shutil.which("java") is None:
        if os.environ.get("DAGGERFLOW_REQUIRE_KAFKA") == "1":
            pytest.fail("a private broker needs java (tools/kafka/broker)")
        pytest.skip("a private broker needs java (tools/kafka/broker)")
    b = PrivateBroker(tmp_path / "private-broker")
    b.start()
    try:
        yield b
    finally:
        b.stop()
