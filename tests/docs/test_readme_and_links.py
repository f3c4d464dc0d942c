"""The README stays short and self-contained; every relative link in it and in docs/ resolves."""

from __future__ import annotations

import re

from tests.documentation import REPO

MARKDOWN = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_readme_is_at_most_250_lines():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines: move detail into docs/"


def test_every_docs_file_is_listed_in_the_readme_index():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    missing = [path.name for path in MARKDOWN[1:] if f"(docs/{path.name})" not in readme]
    assert not missing, f"docs files the README's index does not list: {missing}"


def test_relative_links_resolve():
    broken = []
    for path in MARKDOWN:
        for target in LINK.findall(path.read_text(encoding="utf-8")):
            if "://" not in target and not (path.parent / target).exists():
                broken.append(f"{path.relative_to(REPO)} -> {target}")
    assert not broken, broken


def test_no_text_points_outside_the_repository():
    words = ("../shared", "shared/tools", "gpu-notes.md", ".carry", "previous session")
    found = [f"{path.relative_to(REPO)}: {word}" for path in MARKDOWN for word in words if word in path.read_text(encoding="utf-8")]
    assert not found, found
