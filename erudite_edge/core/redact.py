"""Secrets out of what is printed: the password of a URI (rtsp://user:pw@host) is replaced by *** before a
line reaches a terminal, a log or a results file."""

from __future__ import annotations

import re

_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:@/\s]*):(?P<pw>[^@/\s]*)@")


def redact(text: str) -> str:
    """`rtsp://user:secret@host/...` -> `rtsp://user:***@host/...` anywhere in `text`."""
    return _CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)


