"""The documentation site's generated parts: the CLI reference is every command's real --help (so it cannot
drift from the Typer app), and a page's link to a repository file outside docs/ is carried into the site when
the file exists and left for the strict build to fail on when it does not."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from types import ModuleType

from paths import REPO


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "docs" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_cli_page_has_every_command_with_the_help_it_prints() -> None:
    gen_cli = _load("gen_cli")
    page = gen_cli.page()
    for path, _, _ in gen_cli.commands():
        assert f"`{' '.join(path)}`" in page
    names = {" ".join(p[1:]) for p, _, _ in gen_cli.commands()}
    assert {"train", "run", "check", "bench", "analyze", "export int8", "export engine", "export triton"} <= names
    # the section of `export int8` is what the real command prints for --help (plain, as TYPER_USE_RICH=0 has it)
    program = ("import sys; sys.argv[0] = 'erudite-edge'; from erudite_edge.cli.app import run_as_program; "
               "run_as_program()")
    real = subprocess.run([sys.executable, "-c", program, "export", "int8", "--help"], capture_output=True,
                          text=True, timeout=60, cwd=REPO,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "TYPER_USE_RICH": "0"})
    assert real.returncode == 0, real.stderr
    section = page.split("`erudite-edge export int8`", 1)[1].split("```text\n", 1)[1].split("\n```", 1)[0]
    assert "".join(section.split()) == "".join(real.stdout.split())  # the same text, wrapped at 100 columns
    assert "--min-accuracy-ratio" in section and "--calib-count" in section


def test_links_out_of_docs_are_carried_only_when_the_file_exists() -> None:
    hooks = _load("hooks")
    assert hooks._outside_target("service.md", "../benchmarks/README.md") == "benchmarks/README.md"
    assert hooks._outside_target("reference/api.md", "../../pyproject.toml") == "pyproject.toml"
    assert hooks._outside_target("service.md", "../benchmarks/results/no_such_file.json") is None
    assert hooks._outside_target("service.md", "api.md") is None  # a page of the site: mkdocs' own check
    assert hooks._outside_target("service.md", "https://example.com/x") is None


def test_readme_is_short_and_its_links_lead_somewhere() -> None:
    """README.md stays a five-minute read (<= 200 lines) and every relative link in it names a file that exists
    (anchors into docs/ pages are checked by the strict site build)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    targets = [t for t in re.findall(r"\]\(([^)\s#]+)(?:#[^)\s]*)?\)", text) if "://" not in t]
    assert any(t.startswith("docs/") for t in targets) and any(t.startswith("benchmarks/results/") for t in targets)
    assert [t for t in targets if not (REPO / t).is_file()] == []
