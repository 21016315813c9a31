"""A REST port that is taken fails ``engine.start()`` with a clear ConfigurationError (uvicorn
would call sys.exit), and leaves nothing behind: the store is released for the next start."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest

from daggerflow import ConfigurationError, Dagger


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


async def test_a_taken_web_port_is_a_configuration_error(
    make_engine: Callable[..., Dagger], busy_port: int
) -> None:
    engine = make_engine(web_port=busy_port)
    with pytest.raises(ConfigurationError, match=f"cannot serve the REST API on 127.0.0.1:{busy_port}"):
        await engine.start()
    assert not engine.running
    # The failed start released the database: another engine on the same file starts.
    async with make_engine(web_port=0) as again:
        assert again.web_url is not None and again.web_url != f"http://127.0.0.1:{busy_port}"
