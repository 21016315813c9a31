"""The vendored Swagger UI (``daggerflow/web/static/swagger-ui``, swagger-ui-dist 5.35.0 from
the npm registry): each file is pinned by its SHA-256, so a change is deliberate (see the
README beside the files), and the files ship in the wheel and load through importlib.resources.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from importlib import resources
from pathlib import Path

import pytest

VERSION = "5.35.0"
PINNED = {
    "swagger-ui-bundle.js": "e6a898692f2d768e807c3ba4626068a69a2c5dd960dd6c76f3e4d3a3de180af2",
    "swagger-ui.css": "5ed08757e53da3e026d6cbecc61fe5d43585c9560b302d534ad56692519a273d",
    "swagger-ui-bundle.js.LICENSE.txt": "37eb6e7e59aed57b2c1acf076574b818ea07b74265717e0bd67b59e0baf9abbb",
    "LICENSE": "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30",
    "NOTICE": "0d20d1adef18aee3f40dd258172155521ce702ac445cb5f7b7d60ed32dad2fb2",
}
ROOT = Path(__file__).resolve().parents[2]


def vendored() -> resources.abc.Traversable:
    return resources.files("daggerflow.web") / "static" / "swagger-ui"


@pytest.mark.parametrize("name", sorted(PINNED))
def test_vendored_file_is_the_pinned_one(name: str) -> None:
    assert hashlib.sha256((vendored() / name).read_bytes()).hexdigest() == PINNED[name]


def test_nothing_else_is_vendored_and_the_readme_names_version_and_source() -> None:
    names = {p.name for p in vendored().iterdir()}
    assert names == {*PINNED, "README.md"}
    readme = (vendored() / "README.md").read_text()
    assert f"swagger-ui-dist` version **{VERSION}**" in readme
    assert "npm pack swagger-ui-dist@5.35.0" in readme and "Apache License 2.0" in readme


def test_the_wheel_carries_the_static_files(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(tmp_path)],
        cwd=ROOT, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    [wheel] = tmp_path.glob("daggerflow-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for name, digest in PINNED.items():
            member = f"daggerflow/web/static/swagger-ui/{name}"
            assert member in names, member
            assert hashlib.sha256(archive.read(member)).hexdigest() == digest
        assert "daggerflow/web/static/docs.html" in names
        assert "daggerflow/web/static/docs.js" in names
