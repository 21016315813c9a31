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


async def test_answers_on_a_kept_alive_connection_go_out_at_once(make_engine: Callable[..., Dagger]) -> None:
    """The server's connections have Nagle off (TCP_NODELAY): with it on, an answer written as
    headers then body waited for the client's delayed ACK, ~40 ms on every kept-alive request."""
    import asyncio

    async with make_engine(web_port=0) as engine:
        assert engine.web_url is not None
        host, port = engine.web_url.removeprefix("http://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            for _ in range(2):  # the second request is the one that waited
                writer.write(b"GET /service/ready HTTP/1.1\r\nHost: x\r\n\r\n")
                assert b"200 OK" in await reader.readuntil(b'{"is_ready":true}')
            server = engine._web.server  # the uvicorn server
            sockets = [c.transport.get_extra_info("socket") for c in server.server_state.connections]
            assert sockets and all(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in sockets)
        finally:
            writer.close()
