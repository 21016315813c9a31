"""The console's vendored front-end files (``daggerflow/console/static/vendor``, from the npm
registry: see the README beside them) are the pinned ones, each with its licence, and the
wheel carries them with the console's templates and its own static files."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import zipfile
from importlib import resources
from pathlib import Path

import pytest

PINNED = {
    "htmx.min.js": "d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717",
    "LICENSE-htmx": "d3d2456f76414f2456104660ebd65aff1c04cd7966b942bdabd63f3cdb316a38",
    "htmx-ext-sse.min.js": "98a46496de0c3605fbffdce9167ba427bdd9553184f83f149c261891a92c0136",
    "LICENSE-htmx-ext-sse": "a17d224ce9afdc21ec9491b76a2f5d036d19aa641ac4f85ca29c21f9f7e54fdf",
}
VERSIONS = {"htmx.org": "2.0.11", "htmx-ext-sse": "2.2.4"}
ROOT = Path(__file__).resolve().parents[2]


def vendored() -> resources.abc.Traversable:
    return resources.files("daggerflow.console") / "static" / "vendor"


@pytest.mark.parametrize("name", sorted(PINNED))
def test_vendored_file_is_the_pinned_one(name: str) -> None:
    assert hashlib.sha256((vendored() / name).read_bytes()).hexdigest() == PINNED[name]


def test_nothing_else_is_vendored_and_each_script_has_its_licence_and_version() -> None:
    names = {p.name for p in vendored().iterdir()}
    assert names == {*PINNED, "README.md"}
    readme = (vendored() / "README.md").read_text()
    for package, version in VERSIONS.items():
        assert f"`{package}`" in readme and f"**{version}**" in readme
    assert readme.count("Zero-Clause BSD") == 2
    for licence in ("LICENSE-htmx", "LICENSE-htmx-ext-sse"):
        assert "Permission to use, copy, modify, and/or distribute this software" in (vendored() / licence).read_text()


def test_the_pages_load_no_file_from_anywhere_else() -> None:
    """No CDN: every script and stylesheet a template names is a console static file."""
    templates = resources.files("daggerflow.console") / "templates"
    for template in templates.iterdir():
        text = template.read_text()
        assert not re.findall(r'(?:src|href|action|@import)\s*=?\s*"(?:https?:)?//', text), template.name


def test_the_wheel_carries_the_console(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(tmp_path)],
        cwd=ROOT, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    [wheel] = tmp_path.glob("daggerflow-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for name, digest in PINNED.items():
            member = f"daggerflow/console/static/vendor/{name}"
            assert member in names, member
            assert hashlib.sha256(archive.read(member)).hexdigest() == digest
        source = resources.files("daggerflow.console")
        for folder in ("templates", "static"):
            for item in (source / folder).iterdir():
                if item.is_file():
                    assert f"daggerflow/console/{folder}/{item.name}" in names, item.name
