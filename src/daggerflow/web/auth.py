"""API tokens and transport security of the REST API.

Tokens are given as ``[SCOPE:]TOKEN`` (scope ``read`` or ``admin``; no scope means admin), one
string, a comma-separated list of them (the form of ``--api-token`` and
``$DAGGERFLOW_API_TOKEN``) or a list of strings. ``parse_tokens`` checks them when the engine
is configured; ``TokenAuth`` is the ASGI middleware that ``web.server`` wraps around the
application when tokens are set. ``client_token`` is the one token a client sends: the CLI and
the worker-to-worker forwarding (``kafka.remote``) use it.

A token is never part of a repr, a log line or an error message: ``ApiToken`` hides it, and
errors name a token by its position in the list.

This module imports only the standard library: the configuration validates tokens and TLS
files without starting a server.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
import ssl
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigurationError

READ = "read"
ADMIN = "admin"
SCOPES = (READ, ADMIN)
MIN_LENGTH = 16
TOKEN_ENV = "DAGGERFLOW_API_TOKEN"
#: Routes every client may call when tokens are set: probes, the API's description and its page.
OPEN_PATHS = frozenset({"/service/ready", "/openapi.json", "/docs"})
OPEN_PREFIX = "/docs/"  # the docs page's static files
METRICS_PATH = "/metrics"
#: Methods a read token may use; anything else changes state and needs an admin token.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Where ``TokenAuth`` leaves the scope of the request's token (``request.state``).
SCOPE_STATE = "token_scope"

_GENERATE = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


@dataclass(frozen=True)
class ApiToken:
    """One accepted token and its scope; the secret is left out of the repr."""

    scope: str
    secret: str = field(repr=False)

    @property
    def admin(self) -> bool:
        return self.scope == ADMIN


TokenOption = str | Iterable[str | ApiToken] | None


def parse_tokens(value: TokenOption, source: str = "api_token") -> tuple[ApiToken, ...]:
    """``value`` in any accepted form -> the tokens; ConfigurationError (naming ``source`` and
    the token's position, never the token) when one is malformed. None or [] -> no tokens."""
    if value is None:
        return ()
    items: list[str | ApiToken]
    if isinstance(value, str):
        items = list(value.split(","))
    elif isinstance(value, Iterable):
        items = []
        for item in value:
            if isinstance(item, str):
                items.extend(item.split(","))
            elif isinstance(item, ApiToken):
                items.append(item)
            else:
                raise ConfigurationError(
                    f"{source}: expected strings '[read:|admin:]TOKEN', got a {type(item).__name__}"
                )
    else:
        raise ConfigurationError(
            f"{source}: expected a string '[read:|admin:]TOKEN[,...]' or a list of them, "
            f"got a {type(value).__name__}"
        )
    tokens = []
    for n, item in enumerate(items, 1):
        where = f"{source} #{n}" if len(items) > 1 else source
        token = item if isinstance(item, ApiToken) else _parse_one(item, where)
        _check_secret(token, where)
        tokens.append(token)
    if len({t.secret for t in tokens}) != len(tokens):
        raise ConfigurationError(f"{source}: the same token is given twice")
    return tuple(tokens)


def _parse_one(text: str, where: str) -> ApiToken:
    text = text.strip()
    if not text:
        raise ConfigurationError(f"{where}: the token is empty (tokens are separated by ',')")
    prefix, sep, rest = text.partition(":")
    if not sep:
        return ApiToken(ADMIN, text)
    if prefix not in SCOPES:
        # Not echoed: what precedes ':' may be part of the secret.
        raise ConfigurationError(
            f"{where}: the part before ':' is not a scope; write read:TOKEN or admin:TOKEN "
            "(a token that contains ':' needs its scope in front)"
        )
    return ApiToken(prefix, rest)


def _check_secret(token: ApiToken, where: str) -> None:
    if token.scope not in SCOPES:
        raise ConfigurationError(f"{where}: the scope must be 'read' or 'admin'")
    secret = token.secret
    if len(secret) < MIN_LENGTH:
        raise ConfigurationError(
            f"{where}: the token has fewer than {MIN_LENGTH} characters; a short token can be "
            f"guessed by trying them all (generate one with {_GENERATE})"
        )
    if not all("!" <= c <= "~" and c != "," for c in secret):
        raise ConfigurationError(
            f"{where}: the token contains whitespace, ',' or a non-ASCII character "
            "(tokens travel in an HTTP header and are separated by ',')"
        )


def tokens_from_env() -> tuple[ApiToken, ...]:
    """``$DAGGERFLOW_API_TOKEN`` (unset or empty: no tokens)."""
    return parse_tokens(os.environ.get(TOKEN_ENV) or None, TOKEN_ENV)


def client_token(tokens: Iterable[ApiToken]) -> str | None:
    """The token a client presents: the first admin token, else the first one."""
    tokens = tuple(tokens)
    chosen = next((t for t in tokens if t.admin), tokens[0] if tokens else None)
    return None if chosen is None else chosen.secret


# TLS ------------------------------------------------------------------------------------


def _encrypted_key() -> bytes:
    # Without a password callback OpenSSL would prompt on the terminal for an encrypted key.
    raise ConfigurationError("web_tls_keyfile is encrypted: give an unencrypted key file")


def check_server_tls(certfile: str | None, keyfile: str | None) -> None:
    """Both files or neither, readable, and a matching certificate and key."""
    if (certfile is None) != (keyfile is None):
        raise ConfigurationError("web_tls_certfile and web_tls_keyfile go together: give both or neither")
    if certfile is None or keyfile is None:
        return
    for option, path in (("web_tls_certfile", certfile), ("web_tls_keyfile", keyfile)):
        if not os.path.isfile(path):
            raise ConfigurationError(f"{option}={path!r}: no such file")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            certfile, keyfile, password=_encrypted_key
        )
    except (ssl.SSLError, OSError) as exc:
        raise ConfigurationError(
            f"web_tls_certfile={certfile!r} / web_tls_keyfile={keyfile!r}: not a PEM certificate "
            f"and its private key ({exc})"
        ) from exc


def client_ssl_context(cafile: str | None, option: str = "web_tls_cafile") -> ssl.SSLContext:
    """What a client verifies https servers with: ``cafile`` (a CA, or the server's own
    self-signed certificate) if given, else the system's trusted CAs."""
    if cafile is None:
        return ssl.create_default_context()
    if not os.path.isfile(cafile):
        raise ConfigurationError(f"{option}={cafile!r}: no such file")
    try:
        return ssl.create_default_context(cafile=cafile)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigurationError(f"{option}={cafile!r}: not a PEM certificate ({exc})") from exc


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


@dataclass(frozen=True)
class WebSecurity:
    """What the REST server needs to protect itself (``EngineConfig.web_security()``)."""

    tokens: tuple[ApiToken, ...] = field(default=(), repr=False)
    metrics_public: bool = False
    certfile: str | None = None
    keyfile: str | None = None

    @property
    def tls(self) -> bool:
        return self.certfile is not None


# The middleware ---------------------------------------------------------------------------

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_CHALLENGE = b'Bearer realm="daggerflow"'


class TokenAuth:
    """Pure ASGI: the open routes pass; any other request needs ``Authorization: Bearer``
    with one of ``tokens``, and an admin token unless its method is GET, HEAD or OPTIONS.

    Only SHA-256 digests of the tokens are kept, and the presented one is compared with every
    one of them by ``hmac.compare_digest``: equal lengths, and no early exit that would tell
    which token (or how much of one) matched."""

    def __init__(self, app: ASGIApp, tokens: Iterable[ApiToken], *, metrics_public: bool = False) -> None:
        self.app = app
        self._digests = tuple((_digest(t.secret.encode()), t.admin) for t in tokens)
        if not self._digests:
            raise ValueError("TokenAuth needs at least one token")
        self._open = OPEN_PATHS | {METRICS_PATH} if metrics_public else OPEN_PATHS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or self._is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        presented = _bearer(scope["headers"])
        known = admin = False
        if presented is not None:
            digest = _digest(presented)
            for expected, is_admin in self._digests:
                hit = hmac.compare_digest(digest, expected)
                known |= hit
                admin |= hit & is_admin
        if not known:
            if kind == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            message = (
                "this worker needs an API token: send Authorization: Bearer <token>"
                if presented is None
                else "the API token is not valid for this worker"
            )
            await _json(send, 401, message, _CHALLENGE)
            return
        method = scope.get("method", "GET")
        if not admin and method not in SAFE_METHODS:
            await _json(
                send, 403, f"{method} needs an admin token; this token is read-only",
                _CHALLENGE + b', error="insufficient_scope"',
            )  # fmt: skip
            return
        # The token's scope, for the routes that tell a client what it may do (``whoami``).
        scope.setdefault("state", {})[SCOPE_STATE] = ADMIN if admin else READ
        await self.app(scope, receive, send)

    def _is_open(self, path: str) -> bool:
        if path in self._open:
            return True
        # The docs' static files, but no path that climbs out of /docs/.
        return path.startswith(OPEN_PREFIX) and ".." not in path.split("/") and "//" not in path


def _digest(secret: bytes) -> bytes:
    return hashlib.sha256(secret).digest()


def _bearer(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            if scheme.lower() != b"bearer":
                return b""  # presented, but not a bearer token: invalid, not missing
            return token.strip()
    return None


async def _json(send: Send, status: int, message: str, challenge: bytes) -> None:
    body = json.dumps({"error": message, "status": status}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", challenge),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
