"""The systemd units on docs/service.md run as written: each ExecStart line is taken from the page, its
paths swapped for this test's (bundle, output, sources file) and its cameras for synthetic ones that end,
and the real CLI runs it. A flag renamed or dropped in `run` breaks the unit a user copied; this catches it."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from erudite_edge.core.bundle import Bundle
from erudite_edge.sources.sources_file import read_sources_file
from paths import REPO
from trained_model import cli

PAGE = REPO / "docs" / "service.md"


def units() -> list[tuple[str, list[str]]]:
    """(Description, the arguments after `erudite-edge`) of every ```ini unit on the page."""
    found = []
    for block in re.findall(r"```ini\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.S):
        text = block.replace("\\\n", " ")
        exec_start = re.search(r"^ExecStart=(.*)$", text, flags=re.M)
        description = re.search(r"^Description=(.*)$", text, flags=re.M)
        assert exec_start and description, block
        argv = shlex.split(exec_start.group(1))
        assert argv[0].endswith("/erudite-edge"), argv
        found.append((description.group(1), argv[1:]))
    return found


def cameras_file_block() -> str:
    blocks = re.findall(r"```text\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.S)
    [block] = [b for b in blocks if "rtsp://" in b]
    return block


def test_the_page_has_both_units() -> None:
    assert len(units()) == 2
    assert any("--camera" in argv for _, argv in units())
    assert any("--sources-file" in argv for _, argv in units())


def test_the_cameras_file_on_the_page_lists_four_sources(tmp_path: Path) -> None:
    f = tmp_path / "cameras.txt"
    f.write_text(cameras_file_block(), encoding="utf-8")
    sources = read_sources_file(f)
    assert len(sources) == 4 and sources[-1] == "/dev/video0"


@pytest.mark.parametrize("which", [0, 1])
def test_each_unit_runs_as_written(which: int, erudite: Bundle, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    description, argv = units()[which]
    swapped: list[str] = []
    args = iter(argv)
    cameras = 0
    for a in args:
        if a == "--bundle":
            swapped += [a, str(erudite.root)]
            next(args)
        elif a == "-o":
            swapped += [a, str(tmp_path / "results.jsonl")]
            next(args)
        elif a == "--camera":  # no camera here: a synthetic one that ends after 5 frames
            next(args)
            swapped.append("testsrc://30?frames=5")
            cameras += 1
        elif a == "--sources-file":
            next(args)  # the page's /etc/erudite/cameras.txt: its listing from the page, each a synthetic camera
            listed = read_sources_file(_write_cameras(tmp_path))
            f = tmp_path / "sources.txt"
            f.write_text("\n".join("testsrc://30?frames=5" for _ in listed) + "\n", encoding="utf-8")
            swapped += [a, str(f)]
            cameras += len(listed)
        else:
            swapped.append(a)
    # `forever` would wait for the ended synthetic cameras to come back: the flag is kept, its value bounded
    swapped[swapped.index("--reconnect") + 1] = "0"
    rc, out, err = cli(capsys, *swapped)
    assert rc == 0, (description, err)
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert records and {r["stream"]["index"] for r in records} == set(range(cameras)), description


def _write_cameras(tmp_path: Path) -> Path:
    f = tmp_path / "cameras.txt"
    f.write_text(cameras_file_block(), encoding="utf-8")
    return f
