"""Passwords never printed (issue 25 item 1): a URI's userinfo parsed as RFC 3986 writes it and as cameras
hand it out raw ('/', '@', ':', '#', '?', spaces, UTF-8 in the password), then, over random passwords
(hypothesis), each failure that can be provoked here: connection refused, a silent port, 401 and 404 from a
real RTSP server, a port that is not a number, `--save rtsp://` to no server. The password (raw, decoded or
percent-encoded) is in none of stdout, stderr and the output file; each failure is one line, exit 2."""

from __future__ import annotations

import contextlib
import socket
import subprocess
from pathlib import Path
from typing import Iterator
from unittest import mock
from urllib.parse import quote, unquote

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from erudite_edge.cli.app import main
from erudite_edge.core.redact import hide_userinfo, redact, remember_uri, split_uri
from erudite_edge.errors import UsageError
from erudite_edge.outputs.stream import parse_target
from erudite_edge.sources import capture, rtsp_diagnose
from erudite_edge.sources.rtsp_diagnose import diagnose
from onnx_fixtures import make_erudite_bundle
from real_processes import RTSP_SERVER_PY, CliRun, free_port, kill_left, start_rtsp_server

_ASCII = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
_UTF8 = st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp"))
# A marker around random text: the whole password showing anywhere is a leak, never a coincidence.
passwords = st.one_of(st.text(_ASCII, min_size=1, max_size=16), st.text(_UTF8, min_size=1, max_size=12)).map(
    lambda s: f"Qx{s}Zj")
ODD = ["p@ss", "a/b", "x:y", "h#sh", "q?m", "pa ss", "p@ss/w:rd#1?x y", "пароль", "ключ@/#?"]


def _forms(pw: str) -> set[str]:
    return {pw, unquote(pw), quote(pw, safe=""), quote(unquote(pw), safe="")}


def _assert_hidden(pw: str, *texts: str) -> None:
    for text in texts:
        for form in _forms(pw):
            assert form not in text, (form, text)


# ------------------------------------------------------------------------------------------------
# The parser
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pw", ODD)
def test_split_uri_takes_the_host_after_the_last_at(pw: str) -> None:
    parts = split_uri(f"RTSP://admin:{pw}@10.0.0.5:554/Streaming/Channels/101?tr=tcp")
    assert parts is not None and parts.scheme == "rtsp" and parts.user == "admin" and parts.password == pw
    assert (parts.host, parts.port, parts.rest) == ("10.0.0.5", "554", "/Streaming/Channels/101?tr=tcp")
    assert parts.shown() == "rtsp://admin:***@10.0.0.5:554/Streaming/Channels/101?tr=tcp"
    again = split_uri(parts.encoded())
    assert again is not None and (again.user, again.password, again.host, again.port, again.rest) == (
        "admin", pw, parts.host, parts.port, parts.rest)


def test_split_uri_without_userinfo_ipv6_and_percent_encoded() -> None:
    assert split_uri("rtsp://cam/x").userinfo == "" and split_uri("rtsp://cam/x").password is None  # type: ignore[union-attr]
    v6 = split_uri("rtsp://u:p%40ss@[fe80::1]:8554/x")
    assert v6 is not None and (v6.host, v6.port, v6.password) == ("fe80::1", "8554", "p@ss")
    assert split_uri("rtsp://token@cam/x").password is None  # type: ignore[union-attr]
    assert split_uri("/dev/video0") is None and split_uri("cam.jpg") is None
    with pytest.raises(ValueError, match="not a number"):
        split_uri("rtsp://u:pw@cam:notaport/x").port_number(554)  # type: ignore[union-attr]


@pytest.mark.parametrize("pw", ODD)
def test_redact_hides_odd_passwords_in_a_message(pw: str) -> None:
    """Today's pattern printed `user:***@ss@host` for p@ss and `pa ss` in full."""
    line = f"cannot open rtsp://user:{pw}@cam.local/x (via FFmpeg): no answer"
    assert hide_userinfo(line) == "cannot open rtsp://user:***@cam.local/x (via FFmpeg): no answer"
    _assert_hidden(pw, redact(line))


@settings(max_examples=300, deadline=None)
@given(pw=passwords, user=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=":@/?#"),
                                  max_size=8),
       port=st.sampled_from(["", ":554", ":8554"]), path=st.sampled_from(["", "/", "/live", "/a/b?c=1&d=2", "/x#f"]),
       scheme=st.sampled_from(["rtsp", "RTSP", "rtsps", "rtp"]), encode=st.booleans())
def test_parser_property_any_password(pw: str, user: str, port: str, path: str, scheme: str, encode: bool) -> None:
    written = quote(pw, safe="") if encode else pw
    uri = f"{scheme}://{user}:{written}@cam-1.example{port}{path}"
    parts = split_uri(uri)
    assert parts is not None and parts.scheme == scheme.lower()
    assert parts.host == "cam-1.example" and parts.port == port[1:] and parts.rest == path
    assert parts.password == unquote(written) and parts.user == unquote(user)
    expected = f"{scheme}://{user}:***@cam-1.example{port}{path}"
    assert hide_userinfo(f"error: {uri} (401)") == f"error: {expected} (401)"
    assert hide_userinfo(f"error: {uri}\nnext line") == f"error: {expected}\nnext line"
    _assert_hidden(pw, parts.shown(), parts.bare(), redact(f"a {uri} b"))


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60))
def test_parser_property_never_raises(text: str) -> None:
    for candidate in (text, "rtsp://" + text, "RTSP://u:p@" + text):
        parts = split_uri(candidate)
        redact(candidate)
        if parts is not None:
            parts.shown()
            parts.encoded()
            good = not parts.port or (parts.port.isascii() and parts.port.isdigit() and 0 < int(parts.port) < 65536)
            with contextlib.nullcontext() if good else pytest.raises(ValueError):
                parts.port_number(554)


@pytest.mark.parametrize("port", ["notaport", "99999", "0", "-1", "５５４"])
def test_diagnose_says_a_bad_port_in_one_line(port: str) -> None:
    """Today: ValueError out of urlsplit, a traceback holding the whole URI."""
    why = diagnose(f"rtsp://admin:p@ss/w#rd@127.0.0.1:{port}/live", timeout=0.5)
    assert "1 to 65535" in why and "\n" not in why
    _assert_hidden("p@ss/w#rd", why)


@pytest.mark.parametrize("pw", ["a/b", "h#sh", "q?m", "x]y", "p@ss"])
def test_diagnose_never_raises_on_odd_passwords(pw: str) -> None:
    port = free_port()  # nothing listens: refused
    why = diagnose(f"rtsp://admin:{pw}@127.0.0.1:{port}/live", timeout=0.5)
    assert why == f"connection refused by 127.0.0.1:{port} (no RTSP server listening there)"


def test_parse_target_reads_odd_passwords_and_upper_case() -> None:
    t = parse_target("RTSP://pub:a/b@c#d@127.0.0.1:8554/live")
    assert (t.scheme, t.host, t.port) == ("rtsp", "127.0.0.1", 8554) and t.shown == "rtsp://pub:***@127.0.0.1:8554/live"
    with pytest.raises(UsageError) as e:
        parse_target("rtsp://pub:a/b@c#d@127.0.0.1:notaport/live")
    assert "1 to 65535" in str(e.value) and "a/b@c#d" not in str(e.value)


# ------------------------------------------------------------------------------------------------
# Through the command line, over random passwords
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundle_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(make_erudite_bundle(tmp_path_factory.mktemp("b")).root)


@pytest.fixture(scope="module")
def rtsp_auth() -> Iterator[int]:
    if RTSP_SERVER_PY is None:
        pytest.skip("GStreamer's RTSP server is not installed")
    port = free_port()
    server = start_rtsp_server(port, "--auth", "viewer:theright1", stderr=subprocess.DEVNULL)
    yield port
    server.kill()
    server.wait(timeout=10)


@pytest.fixture(scope="module")
def rtsp_open() -> Iterator[int]:
    if RTSP_SERVER_PY is None:
        pytest.skip("GStreamer's RTSP server is not installed")
    port = free_port()
    server = start_rtsp_server(port, stderr=subprocess.DEVNULL)
    yield port
    server.kill()
    server.wait(timeout=10)


@pytest.fixture(scope="module")
def silent_port() -> Iterator[int]:
    """Accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield sock.getsockname()[1]
    sock.close()


CLI = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _run_fails_in_one_line(capfd, out: Path, pw: str, *args: str) -> str:
    out.unlink(missing_ok=True)
    with mock.patch.object(capture, "STREAM_TIMEOUT_MS", 400), mock.patch.object(rtsp_diagnose, "TIMEOUT_S", 0.4):
        rc = main(["run", *args, "-o", str(out)])
    captured = capfd.readouterr()
    written = out.read_text(errors="replace") if out.exists() else ""
    _assert_hidden(pw, captured.out, captured.err, written)
    assert rc == 2 and captured.err.count("\n") == 1 and captured.err.startswith("error:"), captured.err
    assert "Traceback" not in captured.err
    return captured.err


@CLI
@given(pw=passwords)
@example(pw="Qxp@ss/w:rd#1?x yZj")
@example(pw="Qxкл ю@ч/Zj")
def test_refused(bundle_root: str, tmp_path: Path, capfd, pw: str) -> None:
    err = _run_fails_in_one_line(capfd, tmp_path / "r.jsonl", pw, "--bundle", bundle_root,
                                 f"rtsp://admin:{pw}@127.0.0.1:{free_port()}/live")
    assert "connection refused" in err and "admin:***@127.0.0.1" in err


@pytest.mark.slow  # waits out stream timeouts on a silent port, per example
@CLI
@given(pw=passwords)
@example(pw="Qxp@ss/w:rd#1?x yZj")
@example(pw="Qxкл ю@ч/Zj")
def test_silent_port(bundle_root: str, silent_port: int, tmp_path: Path, capfd, pw: str) -> None:
    err = _run_fails_in_one_line(capfd, tmp_path / "s.jsonl", pw, "--bundle", bundle_root,
                                 f"RTSP://admin:{pw}@127.0.0.1:{silent_port}/live")
    assert "no answer" in err and "admin:***@127.0.0.1" in err


@CLI
@given(pw=passwords)
@example(pw="Qxp@ss/w:rd#1?x yZj")
@example(pw="Qxкл ю@ч/Zj")
def test_bad_port_text(bundle_root: str, tmp_path: Path, capfd, pw: str) -> None:
    err = _run_fails_in_one_line(capfd, tmp_path / "p.jsonl", pw, "--bundle", bundle_root,
                                 f"rtsp://admin:{pw}@127.0.0.1:notaport/live")
    assert "1 to 65535" in err


@pytest.mark.slow  # the real RTSP server (a GStreamer child process), the CLI per example
@CLI
@given(pw=passwords)
@example(pw="Qxp@ss/w:rd#1?x yZj")
@example(pw="Qxкл ю@ч/Zj")
def test_401(bundle_root: str, rtsp_auth: int, tmp_path: Path, capfd, pw: str) -> None:
    err = _run_fails_in_one_line(capfd, tmp_path / "a.jsonl", pw, "--bundle", bundle_root,
                                 f"rtsp://viewer:{pw}@127.0.0.1:{rtsp_auth}/live")
    assert "401" in err and "viewer:***@127.0.0.1" in err


@pytest.mark.slow  # the real RTSP server (a GStreamer child process), the CLI per example
@CLI
@given(pw=passwords)
@example(pw="Qxp@ss/w:rd#1?x yZj")
@example(pw="Qxкл ю@ч/Zj")
def test_404(bundle_root: str, rtsp_open: int, tmp_path: Path, capfd, pw: str) -> None:
    err = _run_fails_in_one_line(capfd, tmp_path / "n.jsonl", pw, "--bundle", bundle_root,
                                 f"rtsp://viewer:{pw}@127.0.0.1:{rtsp_open}/nothing-here")
    assert "404" in err and "viewer:***@127.0.0.1" in err


@CLI
@given(pw=passwords)
@example(pw="Qxp@ss/w:rd#1?x yZj")
@example(pw="Qxкл ю@ч/Zj")
def test_save_rtsp_to_no_server(bundle_root: str, tmp_path: Path, capfd, pw: str) -> None:
    err = _run_fails_in_one_line(capfd, tmp_path / "o.jsonl", pw, "--bundle", bundle_root, "testsrc://30?frames=2",
                                 "--save", f"rtsp://pub:{pw}@127.0.0.1:{free_port()}/live")
    assert "no RTSP server" in err and "pub:***@127.0.0.1" in err


def test_an_unexpected_exception_prints_its_traceback_without_the_password(bundle_root: str, capfd) -> None:
    """A bug whose message holds the URI (here: opening raises): the traceback is printed, exit 1, password hidden."""
    uri = "rtsp://admin:p@ss w/rd@127.0.0.1:554/live"
    with mock.patch("erudite_edge.sources.open.open_rtsp", side_effect=RuntimeError(f"boom opening {uri}")):
        rc = main(["run", "--bundle", bundle_root, uri])
    err = capfd.readouterr().err
    assert rc == 1 and "Traceback" in err and "RuntimeError: boom opening rtsp://admin:***@127.0.0.1:554/live" in err
    _assert_hidden("p@ss w/rd", err)


@pytest.mark.slow  # the CLI in a child process
def test_a_raw_odd_password_opens_the_stream_and_its_loss_hides_it(bundle_root: str, tmp_path: Path) -> None:
    """A password as a camera gives it ('@', '/', ':', '#', '?', a space), typed raw: the stream opens (FFmpeg
    gets it percent-encoded; today it ends the host at the '/'), frames are classified; the server killed
    mid-run: the loss and the summary are printed, the password nowhere."""
    if RTSP_SERVER_PY is None:
        pytest.skip("GStreamer's RTSP server is not installed")
    pw = "p@ss/w:rd#1?x y"
    port = free_port()
    out = tmp_path / "odd.jsonl"
    server = start_rtsp_server(port, "--auth", f"viewer:{pw}", stderr=subprocess.DEVNULL)
    run = CliRun("run", "--bundle", bundle_root, f"rtsp://viewer:{pw}@127.0.0.1:{port}/live", "-o", str(out),
                 "--reconnect", "forever", stdout=subprocess.PIPE)

    try:
        run.wait_for(lambda: out.exists() and out.read_bytes().count(b"\n") >= 3, "no results from the stream")
        server.kill()
        server.wait(timeout=10)
        run.wait_for(lambda: any("reconnecting" in s for s in run.lines), "the loss was not noticed")
        run.stop()
        stdout = run.proc.stdout.read() if run.proc.stdout else ""
    finally:
        kill_left(run.proc, server)
    err = run.stderr
    assert "viewer:***@127.0.0.1" in err and "stream losses" in err and "Traceback" not in err, err
    _assert_hidden(pw, err, stdout, out.read_text())


def test_free_text_keeps_hints_and_tool_lines_and_a_remembered_password_goes_everywhere() -> None:
    hint = "cannot open rtsp://127.0.0.1:5/live: the server wants credentials: use rtsp://USER:PASSWORD@HOST/..."
    assert redact(hint) == hint  # no userinfo in the first URI; the hint's placeholder stays
    tool = "--save rtsp://pub:s3cretpw@127.0.0.1:5/live: stream lost ([rtsp @ 0x55e8f16f2ec0] no packets)"
    assert redact(tool) == "--save rtsp://pub:***@127.0.0.1:5/live: stream lost ([rtsp @ 0x55e8f16f2ec0] no packets)"
    assert redact("rtsp://u:pa ss@cam/x -> rtsp://v:p2@cam2/y") == "rtsp://u:***@cam/x -> rtsp://v:***@cam2/y"
    odd = "rtsp://u:pa x://y@cam/x"  # a URI inside the password: free text alone cannot tell
    remember_uri(odd)
    _assert_hidden("pa x://y", redact(f"open {odd} failed"), redact("the password was pa x://y"))


def test_remembered_passwords_are_bounded() -> None:
    """A service that opens many URIs keeps the newest MAX_REMEMBERED password forms, not all of them."""
    from erudite_edge.core import redact as r

    for i in range(3 * r.MAX_REMEMBERED):
        r.remember(f"pw-{i:06d}-secret")
    assert len(r._seen) <= r.MAX_REMEMBERED
    newest = f"pw-{3 * r.MAX_REMEMBERED - 1:06d}-secret"
    assert newest in r._seen and "pw-000000-secret" not in r._seen
    assert newest not in r.redact(f"the camera said {newest} twice")
