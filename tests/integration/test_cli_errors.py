"""Mistakes on the command line never show a Python traceback: the real CLI runs in a
subprocess (``python -m daggerflow``) and each mistake gives one ``Error:`` line saying what
is wrong and what to do, with exit code 2 for usage errors (the command line, its TARGET,
the installation) and 1 for failures at run time (a taken port, a server at --url that is
not daggerflow or not there). Also the demo's progress bar and report: completed orders
only, failures counted beside them, no ``nan`` with ``--timeout 0`` (no timeout)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_cli import CLI, ROOT, free_port

OK_MODULE = "from daggerflow import Dagger\nengine = Dagger(store='memory://', web_port={port})\n"


def run(*args: str, cwd: Path = ROOT, prefix: list[str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*(prefix or CLI), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith(("Error:", "error:"))]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.fixture
def modules(tmp_path: Path) -> Path:
    files = {
        "broken_syntax.py": "from daggerflow import Dagger\n\ndef f(:\n    pass\n",
        "raises.py": "import daggerflow\n\n\ndef setup():\n    raise RuntimeError('no config here')\n\n\nsetup()\n",
        "bad_dep.py": "import daggerflow\nimport no_such_dependency_xyz\n",
        "no_engine.py": "x = 1\n",
        "two_engines.py": "from daggerflow import Dagger\na = Dagger(web_port=None)\nb = Dagger(web_port=None)\n",
        "bad_port.py": "from daggerflow import Dagger\nengine = Dagger(web_port=70000)\n",
        "ok.py": OK_MODULE.format(port=0),
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["broken_syntax.py"], ["cannot import 'broken_syntax.py'", "broken_syntax.py:3", "invalid syntax", "def f(:"]),
        (["broken_syntax"], ["broken_syntax.py:3: invalid syntax"]),
        (["bad_dep.py"], ["bad_dep.py:2", "No module named 'no_such_dependency_xyz'"]),
        (["missing.py"], ["no such file (missing.py)"]),
        (["missing_module_xyz"], ["no module named 'missing_module_xyz'", "give a path"]),
        (["no_engine.py"], ["holds no Dagger engine", "Dagger(...)"]),
        (["two_engines.py"], ["holds 2 Dagger engines (a, b)", "MODULE:ATTR"]),
        (["ok.py:nope"], ["has no attribute 'nope'"]),
        (["ok.py:Dagger"], ["is not a Dagger engine (it is a type)"]),
        ([":x"], ["expected MODULE[:ATTR]"]),
        (["bad_port.py"], ["web_port must be a port number 0-65535"]),
        (["ok.py", "--store", "nosuch://x"], ["ConfigurationError", "store 'nosuch://x' is not supported"]),
        (["ok.py", "--broker", "http://localhost:9092"], ["kafka://host:port"]),
    ],
)
def test_a_wrong_target_or_option_is_one_line_and_exit_2(modules: Path, args: list[str], needles: list[str]) -> None:
    assert_one_line_error(run("worker", *args, cwd=modules), 2, *needles)


def test_an_exception_in_the_users_module_shows_only_the_users_frames(modules: Path) -> None:
    result = run("worker", "raises.py", cwd=modules)
    line = assert_one_line_error(result, 2, "importing 'raises.py' raised RuntimeError: no config here")
    assert re.search(r"at .*raises\.py:5\)$", line)
    # The user's own traceback, where their code raised: both frames, nothing of daggerflow's.
    assert 'raises.py", line 8, in <module>' in result.stderr
    assert 'raises.py", line 5, in setup' in result.stderr
    assert "cli.py" not in result.stderr and "importlib" not in result.stderr


@pytest.mark.parametrize("port", ["99999", "-1", "abc"])
def test_a_port_out_of_range_or_not_a_number_is_a_usage_error(modules: Path, port: str) -> None:
    result = run("worker", "ok.py", "--web-port", port, cwd=modules)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "Invalid value for '--web-port'" in result.stderr


def test_a_port_in_use_is_a_runtime_error_exit_1(modules: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run("worker", "ok.py", "--web-port", str(port), cwd=modules)
    assert_one_line_error(result, 1, f"cannot serve the REST API on 127.0.0.1:{port}")


def test_broker_without_the_kafka_extra_says_what_to_install(modules: Path) -> None:
    # aiokafka made unimportable in the child, as when the kafka extra is not installed.
    blocked = [sys.executable, "-c", "import sys; sys.modules['aiokafka'] = None; "
               "sys.argv[0] = 'daggerflow'; from daggerflow.cli import main; main()"]  # fmt: skip
    result = run("worker", "ok.py", "--broker", "kafka://127.0.0.1:9092", cwd=modules, prefix=blocked)
    assert_one_line_error(result, 2, "needs the kafka extra", "pip install 'daggerflow[kafka]'", "aiokafka")


# --url: not daggerflow, not there -----------------------------------------------------------


@pytest.fixture
def plain_http(tmp_path: Path) -> Iterator[str]:
    """A plain file server (python -m http.server's handler) on a free port."""

    class Quiet(SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    yield from _serve(Quiet)


@pytest.fixture
def other_json_api() -> Iterator[str]:
    """An HTTP server that answers JSON of another shape to everything."""

    class OtherApi(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            body = json.dumps({"hello": "world"}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    yield from _serve(OtherApi)


def _serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


CLIENT_COMMANDS = [["instances"], ["templates"], ["instance", "x"], ["create", "T"], ["send", "t", "v"]]


@pytest.mark.parametrize("command", CLIENT_COMMANDS)
def test_a_url_that_is_a_plain_web_server_is_named_as_not_daggerflow(plain_http: str, command: list[str]) -> None:
    result = run(*command, "--url", plain_http)
    assert_one_line_error(result, 1, "not a daggerflow worker", "text/html", "check --url")


@pytest.mark.parametrize("command", CLIENT_COMMANDS)
def test_a_url_that_answers_other_json_is_named_as_not_daggerflow(other_json_api: str, command: list[str]) -> None:
    result = run(*command, "--url", other_json_api)
    assert_one_line_error(result, 1, "not a daggerflow worker", "check --url")


def test_an_unreachable_url_is_one_line_exit_1() -> None:
    result = run("templates", "--url", f"http://127.0.0.1:{free_port()}")
    assert_one_line_error(result, 1, "cannot reach a daggerflow worker", "is `daggerflow worker` running?")


@pytest.mark.parametrize("url", ["foo", "http://", "ftp://x", "http://[::1"])
def test_a_malformed_url_is_a_usage_error(url: str) -> None:
    result = run("templates", "--url", url)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "Invalid value for '--url'" in result.stderr


# The demo -------------------------------------------------------------------------------------


def bar_line(stdout: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith("completed ") and "failed" in line and "/" in line
                and "(" not in line)  # fmt: skip


def test_demo_timeout_0_means_no_timeout_and_prints_no_nan() -> None:
    result = run("demo", "pizza", "--orders", "5", "--timeout", "0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "completed 5/5 (failed 0, unfinished 0)" in result.stdout
    assert "nan" not in result.stdout
    assert "5/5" in bar_line(result.stdout)


def test_demo_bar_counts_completed_orders_and_failures_beside_them() -> None:
    result = run("demo", "pizza", "--orders", "10", "--fail-every", "5")  # orders 0 and 5 fail
    assert result.returncode == 1, result.stdout + result.stderr
    bar = bar_line(result.stdout)
    assert re.search(r"\b8/10\b", bar) and "2 failed, 0 unfinished" in bar
    assert "completed 8/10 (failed 2, unfinished 0)" in result.stdout
    assert "refused (--fail-every 5)" in result.stdout
    # A failing user task is never silent: the lifecycle log names it (stderr, WARNING).
    assert result.stderr.count("WARNING daggerflow.lifecycle: workflow ") == 2
    assert "Traceback" not in result.stderr


def test_demo_with_nothing_completed_prints_no_latency_figures() -> None:
    result = run("demo", "pizza", "--orders", "4", "--timeout", "0.001", "--kitchen-delay", "5")
    assert result.returncode == 1
    assert "completed 0/4 (failed 0, unfinished 4)" in result.stdout
    assert "0/4" in bar_line(result.stdout) and "0 failed, 4 unfinished" in bar_line(result.stdout)
    assert "nan" not in result.stdout and "no order completed" in result.stdout
