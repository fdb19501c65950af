"""`check --json FILE` writes only a file the user asked for (issue 25 item 9): a device node, a FIFO or a
folder is refused, an existing file is replaced only with --overwrite, a missing folder is not created;
each refusal is one line, exit 2, before the check runs, and leaves the path as it was. Real here: a small
ONNX bundle with a check set computed by ONNX Runtime, the CLI in-process, /dev/full, a real FIFO."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from erudite_edge.core.bundle import Bundle
from erudite_edge.core.check_set import write_check_set
from onnx_fixtures import COLORS, make_erudite_bundle, normalized_color
from trained_model import cli, one_error_line


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """A bundle with a check set: solid colours, their FP32 logits from ONNX Runtime."""
    bundle = make_erudite_bundle(tmp_path_factory.mktemp("checked"))
    session = ort.InferenceSession(str(bundle.path(bundle.entry("main", "fp32", "onnx"))),
                                   providers=["CPUExecutionProvider"])
    h, w = bundle.preprocess.input_size
    x = np.stack([np.broadcast_to(normalized_color(c, bundle.preprocess)[:, None, None], (3, h, w))
                  for c in COLORS.values()]).astype(np.float32)
    write_check_set(bundle, x, "solid colours", False, lambda role, batch: session.run(None, {"images": batch})[0])
    bundle.save()
    return bundle


def check(capsys, bundle: Bundle, *args: object) -> tuple[int, str, str]:
    return cli(capsys, "check", bundle.root, "--backend", "onnxruntime", "--precision", "fp32", *args)


def test_json_written_new_and_replaced_only_with_overwrite(checked: Bundle, tmp_path: Path, capsys) -> None:
    out = tmp_path / "check.json"
    rc, _, err = check(capsys, checked, "--json", out)
    assert rc == 0, err
    assert json.loads(out.read_text())["results"][0]["passed"] is True
    out.write_text("mine\n")
    rc, stdout, err = check(capsys, checked, "--json", out)
    assert rc == 2 and "file exists" in one_error_line(err) and "--overwrite" in err
    assert stdout == "" and out.read_text() == "mine\n"  # refused before the check ran; the file as it was
    rc, _, err = check(capsys, checked, "--json", out, "--overwrite")
    assert rc == 0, err
    assert json.loads(out.read_text())["results"][0]["passed"] is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["check.json"]  # no temporary left


def test_json_through_a_symlink_writes_the_file_it_names(checked: Bundle, tmp_path: Path, capsys) -> None:
    real = tmp_path / "real.json"
    real.write_text("old\n")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    rc, _, err = check(capsys, checked, "--json", link, "--overwrite")
    assert rc == 0, err
    assert link.is_symlink() and json.loads(real.read_text())["results"]


def test_json_to_a_device_node_is_refused_and_the_node_kept(checked: Bundle, tmp_path: Path, capsys) -> None:
    """Before the fix the rename replaced the node with a regular file (`--json /dev/full`, as root). A node
    of our own (the same device as /dev/full) where mknod is allowed, so that the old code harms nothing."""
    node = tmp_path / "full"
    try:
        os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 7))
    except PermissionError:
        node = Path("/dev/full")
    rc, _, err = check(capsys, checked, "--json", node)
    assert rc == 2 and "not a regular file" in one_error_line(err)
    assert stat.S_ISCHR(os.stat(node).st_mode)


def test_json_to_a_fifo_a_folder_or_a_missing_folder_is_one_line(checked: Bundle, tmp_path: Path, capsys) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    rc, _, err = check(capsys, checked, "--json", fifo, "--overwrite")
    assert rc == 2 and "not a regular file" in one_error_line(err)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    rc, _, err = check(capsys, checked, "--json", tmp_path, "--overwrite")
    assert rc == 2 and "is a folder" in one_error_line(err)
    rc, _, err = check(capsys, checked, "--json", tmp_path / "no" / "such" / "check.json")
    assert rc == 2 and "does not exist; create it first" in one_error_line(err)
    assert not (tmp_path / "no").exists()
    (tmp_path / "plain").write_text("x")
    rc, _, err = check(capsys, checked, "--json", tmp_path / "plain" / "check.json")
    assert rc == 2 and "is not a folder" in one_error_line(err)
