"""Where things are, for tests in any folder under tests/: the repository root and the tests folder
(which holds the shared helper modules: real_processes.py, gst_feed.py, rtsp_server.py, ...)."""

from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


def doc_pages() -> list[Path]:
    """README.md and every page of the documentation site (docs/, mkdocs.yml), README first."""
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def doc_text() -> str:
    """README.md and the site's pages as one text, for a test that reads a recipe or snippet wherever it lives."""
    return "\n\n".join(p.read_text(encoding="utf-8") for p in doc_pages())


def doc_section(heading: str) -> str:
    """The section under `heading` (a whole line, e.g. "### Result records") of the one page that has it: from
    the heading to the next heading of its level or above, or the end of the page."""
    level = heading_level(heading)
    found = []
    for page in doc_pages():
        lines = page.read_text(encoding="utf-8").splitlines(keepends=True)
        levels = heading_levels(lines)
        for i, line in enumerate(lines):
            if levels[i] and line.rstrip("\n") == heading:
                end = next((j for j in range(i + 1, len(lines)) if 0 < levels[j] <= level), len(lines))
                found.append("".join(lines[i:end]))
    assert len(found) == 1, f"{heading!r}: on {len(found)} pages of README.md and docs/, not one"
    return found[0]


def heading_level(line: str) -> int:
    """The level of a Markdown heading line (0: not a heading)."""
    stripped = line.lstrip("#")
    hashes = len(line) - len(stripped)
    return hashes if hashes and stripped.startswith(" ") else 0


def heading_levels(lines: list[str]) -> list[int]:
    """heading_level of each line, 0 inside code fences (a `# comment` in a shell block is no heading)."""
    out, fence = [], False
    for line in lines:
        if line.startswith("```"):
            fence = not fence
        out.append(0 if fence else heading_level(line))
    return out
