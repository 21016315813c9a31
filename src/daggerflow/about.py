"""The installed daggerflow version (the OpenAPI document, ``whoami``, the Workers view)."""

from __future__ import annotations

from functools import cache
from importlib import metadata


@cache
def package_version() -> str:
    try:
        return metadata.version("daggerflow")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "0+unknown"
