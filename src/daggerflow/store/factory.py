"""Store URLs: which backend and where, checked at configuration time, opened at start."""

from __future__ import annotations

import os
from urllib.parse import urlparse

from ..errors import ConfigurationError
from .base import Store
from .sqlite import SQLiteStore

SUPPORTED_STORES = (
    "sqlite:///PATH (default, under the data dir), memory:// (tests), "
    "rocksdb:///PATH (a directory; needs the rocksdb extra)"
)
_ROCKSDB_EXTRA = "store 'rocksdb://' needs the rocksdb extra: pip install 'daggerflow[rocksdb]'"


def _spelling(scheme: str, url: str) -> str:
    what = "file" if scheme == "sqlite" else "dir"
    default = ", or sqlite:// for the default file under the data dir" if scheme == "sqlite" else ""
    return (
        f"store {url!r} is misspelled: write {scheme}:///relative/{what} (three slashes) or "
        f"{scheme}:////absolute/{what} (four){default}; supported stores: {SUPPORTED_STORES}"
    )


def _parse_store_url(url: str | None, datadir: str, application_name: str) -> tuple[str, str]:
    """``(kind, path)`` for a store URL, or a ConfigurationError naming what is supported.

    SQLAlchemy's convention: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``;
    the same for ``rocksdb:///relative/dir`` and ``rocksdb:////absolute/dir``. Spellings that
    would name a host (``sqlite://x.db``) or have too few slashes (``sqlite:/x.db``) are
    refused rather than read as the default file: a typo must not start on an empty store."""
    if url is None or url == "sqlite://":
        return "sqlite", os.path.join(datadir, f"{application_name}.db")
    parsed = urlparse(url)
    if parsed.scheme == "memory":
        if url != "memory://":
            raise ConfigurationError(f"store {url!r}: the in-memory store is spelled memory://")
        return "sqlite", ":memory:"
    if parsed.scheme in ("sqlite", "rocksdb"):
        prefix = f"{parsed.scheme}:///"
        path = url[len(prefix) :] if url.startswith(prefix) else ""
        if not path:
            raise ConfigurationError(_spelling(parsed.scheme, url))
        if parsed.scheme == "sqlite":
            return "sqlite", path
        try:
            import rocksdict  # noqa: F401
        except ImportError:
            raise ConfigurationError(_ROCKSDB_EXTRA) from None
        return "rocksdb", path
    raise ConfigurationError(f"store {url!r} is not supported; supported stores: {SUPPORTED_STORES}")


def check_store_url(url: str | None) -> None:
    """Raise ConfigurationError now for a store URL that ``open_store`` would refuse."""
    _parse_store_url(url, ".", "dagger")


def open_store(url: str | None, *, datadir: str, application_name: str, durability: str = "normal") -> Store:
    """Open the store named by a URL: ``sqlite:///path``, ``sqlite://`` (default file under
    ``datadir``), ``memory://`` or ``rocksdb:///dir``. Anything else is a clear error."""
    kind, path = _parse_store_url(url, datadir, application_name)
    if kind == "rocksdb":
        from .rocksdb import RocksDBStore  # the rocksdb extra: imported only when asked for

        return RocksDBStore(path, durability=durability)
    if path == ":memory:":
        return SQLiteStore(path)
    return SQLiteStore(path, durability=durability)
