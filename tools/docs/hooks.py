"""MkDocs hooks of the docs site (mkdocs.yml ``hooks:``).

- Pages that say ``<!-- readme: Section -->`` show that section of README.md
  (``readme.py``): the README stays the one copy of what it documents.
- ``rest-api.md`` and ``openapi.json`` are generated from the OpenAPI document of the
  installed daggerflow (``rest.py``), so the REST reference cannot drift from the API.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mkdocs.structure.files import File, Files
from readme import Includer
from rest import document, render

ROOT = Path(__file__).resolve().parents[2]
_includer: Includer | None = None


def on_files(files: Files, config: Any) -> Files:
    global _includer
    _includer = Includer.scan(ROOT / "README.md", Path(config["docs_dir"]))
    _includer.pages.setdefault("REST API reference", "rest-api.md")  # the generated page shows it
    doc = document()
    files.append(File.generated(config, "rest-api.md", content=render(doc)))
    files.append(File.generated(config, "openapi.json", content=json.dumps(doc, indent=2)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    assert _includer is not None
    return _includer.render(markdown, page.file.src_uri)
