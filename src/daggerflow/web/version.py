"""The installed daggerflow version, for the OpenAPI document and ``whoami``."""

from __future__ import annotations

from functools import cache
from importlib import metadata


@cache
def package_version() -> str:
    try:
        return metadata.version("daggerflow")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "0+unknown"
