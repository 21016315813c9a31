"""The docs build's helpers (tools/docs): README sections shown on pages with their links
rewritten for the site, and the REST page written from the OpenAPI document."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "tools" / "docs"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"docs_{name}", TOOLS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (its dataclasses look their module up)
    spec.loader.exec_module(module)
    return module


readme = load("readme")
rest = load("rest")

README = """# title

Intro, see [Kafka](#running-on-kafka).

## Running on Kafka

Start a broker ([docs/kafka-broker.md](docs/kafka-broker.md)); limits in [Limits](#limits-what-is-refused).
The example is [`examples/pizza.py`](examples/pizza.py), the code [here](src/x.py).

```python
## not a heading
```

## Configuration

### Limits: what is refused

Sizes.
"""


@pytest.fixture
def includer(tmp_path: Path) -> object:
    (tmp_path / "README.md").write_text(README)
    docs = tmp_path / "docs"
    (docs / "ref").mkdir(parents=True)
    (docs / "kafka.md").write_text("# K\n\n<!-- readme: Running on Kafka -->\n")
    (docs / "ref" / "config.md").write_text("# C\n\n<!-- readme: Configuration -->\n")
    return readme.Includer.scan(tmp_path / "README.md", docs)


def test_a_section_is_shown_with_its_links_made_for_the_site(includer: object) -> None:
    page = includer.render("# K\n\n<!-- readme: Running on Kafka -->\n", "kafka.md")  # type: ignore[attr-defined]
    assert "[docs/kafka-broker.md](kafka-broker.md)" in page
    assert "[Limits](ref/config.md#limits-what-is-refused)" in page
    assert "The example is `examples/pizza.py`, the code here (`src/x.py`)." in page
    assert "## not a heading" in page  # inside a fence: neither a section nor shifted


def test_headings_move_up_and_links_are_relative_to_the_page(includer: object) -> None:
    page = includer.render("<!-- readme: Configuration -->", "ref/config.md")  # type: ignore[attr-defined]
    assert page.startswith("## Limits: what is refused")
    deeper = includer.render("<!-- readme: Configuration; level=3 -->", "ref/config.md")  # type: ignore[attr-defined]
    assert deeper.startswith("### Limits")
    intro = includer.render("<!-- readme: intro -->", "ref/config.md")  # type: ignore[attr-defined]
    assert intro == "Intro, see [Kafka](../kafka.md).\n"


def test_an_unknown_section_fails_the_build(includer: object) -> None:
    with pytest.raises(ValueError, match=r"README\.md has no section 'Nope'"):
        includer.render("<!-- readme: Nope -->", "kafka.md")  # type: ignore[attr-defined]


def test_the_rest_page_covers_every_route_and_schema() -> None:
    doc = rest.document()
    page = rest.render(doc)
    for path, item in doc["paths"].items():
        for method in item:
            assert f"### `{method.upper()} {path}`" in page
    for name in doc["components"]["schemas"]:
        assert f"### {name} {{#schema-{name.lower()}}}" in page
    assert rest.type_of({"anyOf": [{"$ref": "#/components/schemas/Status"}, {"type": "null"}]}) == (
        "[Status](#schema-status) \\| null"
    )
    assert rest.type_of({"type": "array", "items": {"type": "integer", "format": "int64"}}) == (
        "array of integer (int64)"
    )
