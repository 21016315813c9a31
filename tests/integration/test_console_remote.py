"""The console without a browser: served by ``daggerflow ui --url`` against a remote worker
with tokens (login, CSRF, an action), switched off by ``console=False``, and the command's
usage errors (one line, exit 2, no traceback)."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from daggerflow import Dagger

from ..browser.workflows import register

ADMIN = "console-remote-admin-0123456789"


@pytest.fixture
async def secured(make_engine: Callable[..., Dagger]) -> AsyncIterator[Dagger]:
    engine = make_engine(web_port=0, api_token=f"admin:{ADMIN}")
    register(engine)
    async with engine:
        yield engine


@pytest.fixture
async def remote_console(secured: Dagger) -> AsyncIterator[str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "daggerflow", "ui", "--url", str(secured.web_url), "--port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
    found = re.search(r"(http://127\.0\.0\.1:\d+)/ui/", line)
    assert found, line
    try:
        yield found.group(1)
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 30) == 0


def hidden(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found, f"no hidden field {name}"
    return found.group(1)


async def test_the_remote_console_logs_in_with_a_token_and_acts_through_the_workers_api(
    secured: Dagger, remote_console: str
) -> None:
    api = {"authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(base_url=str(secured.web_url), headers=api) as worker:
        r = await worker.post("/api/v1/schedules", json={"name": "nightly", "template": "order_flow", "cron": "0 2 * * *"})
        assert r.status_code == 200, r.text
    async with httpx.AsyncClient(base_url=remote_console) as browser:
        r = await browser.get("/ui/schedules")
        assert r.status_code == 303 and r.headers["location"] == "/ui/login?next=%2Fschedules"
        form = await browser.get("/ui/login?next=%2Fschedules")
        assert form.status_code == 200 and "Log in to this worker" in form.text
        csrf = hidden(form.text, "csrf")

        wrong = await browser.post("/ui/login", data={"csrf": csrf, "token": "x" * 20, "next": "/schedules"})
        assert wrong.status_code == 401 and "not valid for this worker" in wrong.text
        no_csrf = await browser.post("/ui/login", data={"token": ADMIN, "next": "/schedules"})
        assert no_csrf.status_code == 403

        ok = await browser.post("/ui/login", data={"csrf": csrf, "token": ADMIN, "next": "/schedules"})
        assert ok.status_code == 303 and ok.headers["location"] == "/ui/schedules"
        cookie = ok.headers["set-cookie"]
        assert "df_token=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        page = await browser.get("/ui/schedules")
        assert page.status_code == 200 and 'data-schedule="nightly"' in page.text
        assert page.headers["content-security-policy"].startswith("default-src 'self'")

        acted = await browser.post("/ui/schedules/nightly/pause", data={"csrf": csrf})
        assert acted.status_code == 303
    async with httpx.AsyncClient(base_url=str(secured.web_url), headers=api) as worker:
        assert (await worker.get("/api/v1/schedules/nightly")).json()["paused"] is True


async def test_a_worker_with_the_console_off_serves_only_its_api(make_engine: Callable[..., Dagger]) -> None:
    engine = make_engine(web_port=0, console=False)
    async with engine, httpx.AsyncClient(base_url=str(engine.web_url)) as client:
        r = await client.get("/ui/")
        assert r.status_code == 404 and r.headers["content-type"].startswith("application/json")
        assert (await client.get("/service/ready")).json() == {"is_ready": True}


async def test_a_worker_points_its_root_to_the_console(make_engine: Callable[..., Dagger]) -> None:
    engine = make_engine(web_port=0)
    async with engine, httpx.AsyncClient(base_url=str(engine.web_url)) as client:
        r = await client.get("/")
        assert r.status_code == 307 and r.headers["location"] == "/ui/"
        assert (await client.get("/ui")).headers["location"] == "/ui/"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--url", "ftp://x"], "expected http://HOST:PORT"),
        (["--tls-cert", __file__], "go together"),
        (["--port", "70000"], "70000 is not in the range"),
    ],
)
async def test_usage_errors_of_the_ui_command_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "daggerflow", "ui", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2, (out, err)
    assert message in err.decode() and "Traceback" not in err.decode()
