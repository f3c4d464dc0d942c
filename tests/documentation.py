"""The project's published text: README.md and every docs/*.md, for tests that hold figures to result files."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def published_text() -> str:
    """README.md followed by each docs/*.md (sorted), as one string."""
    paths = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    return "\n".join(path.read_text(encoding="utf-8") for path in paths)


def readme_section(title: str) -> str:
    """The text of README.md's `## title` section, up to the next `## ` heading."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]
