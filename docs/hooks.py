"""mkdocs hooks (mkdocs.yml `hooks:`), run on every `make docs` / `mkdocs build --strict`:

- the CLI reference page (reference/cli.md) is generated from the Typer app (docs/gen_cli.py), never written
  by hand, so it cannot drift from the code;
- a page may link a file of the repository outside docs/ (a raw result, a figure, a Dockerfile) as
  `../PATH` (relative to docs/): the file is copied into the site under `repo/PATH` and the link rewritten to
  it. A link to a file that does not exist is left alone, and mkdocs' strict build fails on it."""

from __future__ import annotations

import posixpath
import re
import sys
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent

CLI_PAGE = "reference/cli.md"
SITE_DIR = "repo"
LINK = re.compile(r"\]\(([^)\s#]+)(#[^)\s]*)?\)")


def _outside_target(page_uri: str, target: str) -> str | None:
    """The repository path (posix) a page's relative link points to, when it leaves docs/ and the file exists."""
    if "://" in target or target.startswith(("/", "mailto:")):
        return None
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(page_uri), target))
    if not joined.startswith("../"):
        return None
    rel = joined[3:]
    path = REPO / rel
    if rel.startswith(("../", "docs/", ".")) or not path.is_file():
        return None
    return rel


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    for where in (str(REPO), str(DOCS)):  # erudite_edge and gen_cli, whatever the working directory
        if where not in sys.path:
            sys.path.insert(0, where)
    import gen_cli

    files.append(File.generated(config, CLI_PAGE, content=gen_cli.page()))
    wanted: set[str] = set()
    for f in list(files):
        if f.src_uri.endswith(".md") and f.abs_src_path:
            text = Path(f.abs_src_path).read_text(encoding="utf-8")
            for target, _ in LINK.findall(text):
                rel = _outside_target(f.src_uri, target)
                if rel is not None:
                    wanted.add(rel)
    for rel in sorted(wanted):
        files.append(File.generated(config, f"{SITE_DIR}/{rel}", abs_src_path=str(REPO / rel)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    uri = page.file.src_uri

    def rewrite(m: re.Match[str]) -> str:
        target, anchor = m.group(1), m.group(2) or ""
        rel = _outside_target(uri, target)
        if rel is None:
            return m.group(0)
        up = "../" * uri.count("/")
        return f"]({up}{SITE_DIR}/{rel}{anchor})"

    return LINK.sub(rewrite, markdown)
