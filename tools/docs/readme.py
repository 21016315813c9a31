"""Sections of README.md, for the docs pages that show them (``tools/docs/hooks.py``).

A page says ``<!-- readme: Running on Kafka -->`` on a line of its own and gets the body of
the README's ``## Running on Kafka`` section there: the README stays the one copy. Headings
move up one level (the section's ``###`` become the page's ``##``; ``; level=3`` before the
``-->`` keeps them at ``###``, for a section shown under a heading of the page), and links are rewritten
for the site: ``docs/x.md`` to the page, ``#anchor`` to the page that shows that section,
and paths in the repository (``examples/pizza.py``) to plain code text, since the site
holds only docs/.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

MARKER = re.compile(r"^<!-- readme: (?P<title>.+?)(?:; level=(?P<level>[2-6]))? -->[ \t]*$", re.MULTILINE)
# Links and images (``![alt](docs/images/x.png)``: a picture of the site, rewritten the same way).
_LINK = re.compile(r"(?P<bang>!?)\[(?P<text>[^\]\n]+)\]\((?P<target>[^)\s]+)\)")
_HEADING = re.compile(r"^(?P<hashes>#{1,6}) (?P<title>.+?)\s*$")
_FENCE = re.compile(r"^(```|~~~)")


def slug(title: str) -> str:
    """The anchor MkDocs' toc extension (and GitHub) give a heading."""
    text = re.sub(r"[`*_]", "", title).strip().lower()
    text = re.sub(r"[^\w\s-]", "", text)
    return re.sub(r"[\s]+", "-", text)


@dataclass
class Readme:
    """The README split into its intro (before the first ``##``) and its ``##`` sections."""

    intro: str
    sections: dict[str, str]
    #: anchor of every ``##``/``###`` heading -> the ``##`` section it is in
    anchors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> Readme:
        intro: list[str] = []
        sections: dict[str, list[str]] = {}
        anchors: dict[str, str] = {}
        current: list[str] = intro
        title = ""
        in_fence = False
        for line in path.read_text().splitlines():
            if _FENCE.match(line):
                in_fence = not in_fence
            heading = None if in_fence else _HEADING.match(line)
            if heading and len(heading["hashes"]) == 2:
                title = heading["title"]
                current = sections[title] = []
                anchors[slug(title)] = title
                continue
            if heading and len(heading["hashes"]) == 1:
                continue  # the README's title: the page has its own
            if heading and title:
                anchors[slug(heading["title"])] = title
            current.append(line)
        return cls("\n".join(intro).strip() + "\n", {t: "\n".join(b).strip() + "\n" for t, b in sections.items()},
                   anchors)  # fmt: skip


class Includer:
    """Replaces the markers of the pages with README sections, links rewritten."""

    def __init__(self, readme: Readme, pages: dict[str, str]) -> None:
        self.readme = readme
        #: README section title -> the page (docs-relative path) that shows it
        self.pages = pages

    @classmethod
    def scan(cls, readme_path: Path, docs: Path) -> Includer:
        readme = Readme.read(readme_path)
        pages: dict[str, str] = {}
        for page in sorted(docs.rglob("*.md")):
            for match in MARKER.finditer(page.read_text()):
                pages.setdefault(match["title"], page.relative_to(docs).as_posix())
        return cls(readme, pages)

    def render(self, markdown: str, page: str) -> str:
        def include(match: re.Match[str]) -> str:
            title = match["title"]
            if title == "intro":
                body = self.readme.intro
            elif title in self.readme.sections:
                body = _shift_headings(self.readme.sections[title], int(match["level"] or 2))
            else:
                known = ", ".join(sorted(self.readme.sections))
                raise ValueError(f"{page}: README.md has no section {title!r} (it has: intro, {known})")
            return self._links(body, page)

        return MARKER.sub(include, markdown)

    def _links(self, body: str, page: str) -> str:
        depth = page.count("/")
        up = "../" * depth

        def rewrite(match: re.Match[str]) -> str:
            text, target = match["text"], match["target"]
            if re.match(r"^[a-z]+:", target):
                return match[0]  # http(s), mailto: as they are
            if target.startswith("#"):
                section = self.readme.anchors.get(target[1:])
                where = self.pages.get(section or "")
                if where is None:
                    raise ValueError(f"{page}: the README link {target} is to a section no page shows")
                anchor = "" if slug(section or "") == target[1:] else target
                return f"[{text}]({up}{where}{anchor})" if where != page else f"[{text}]({anchor or '#'})"
            if target.startswith("docs/"):
                return f"{match['bang']}[{text}]({up}{target[len('docs/'):]})"
            # A file of the repository, outside the site: name it.
            path = target.split("#")[0]
            return text if path in text else f"{text} (`{path}`)"

        return _LINK.sub(rewrite, body)


def _shift_headings(body: str, level: int) -> str:
    """The section's ``###`` headings become ``level`` (deeper ones follow)."""
    out = []
    in_fence = False
    for line in body.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        heading = None if in_fence else _HEADING.match(line)
        if heading and len(heading["hashes"]) > 2:
            line = "#" * min(6, len(heading["hashes"]) - 3 + level) + " " + heading["title"]
        out.append(line)
    return "\n".join(out) + "\n"
