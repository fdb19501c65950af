"""Secrets out of what is printed: the password of a URI (rtsp://user:pw@host) is replaced by *** before a
line reaches a terminal, a log, an exception or a results file.

One parser for a URI's authority (`split_uri`), as RFC 3986 writes it (percent-encoded userinfo) and as
cameras hand it out (raw: a password may hold '/', '@', ':', '#', '?', spaces): the userinfo runs to the
LAST '@' that is followed by a host (and an optional port) and then the end, '/', '?' or '#'; the user name
ends at the first ':' of the userinfo, the password is the rest. A path holding '@' after a ':' is therefore
read as userinfo: hidden too much, never too little. `redact` finds every `scheme://` in a text and hides the
password through this parser; every password it has seen is remembered (process-wide), and later text is
cleaned of it verbatim (raw, decoded and percent-encoded forms), so that a message built from a part of
the URI, or a tool's own line, does not show it either.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from urllib.parse import quote, unquote

MASK = "***"
PLACEHOLDER = "USER:PASSWORD"  # how messages show where credentials go: rtsp://USER:PASSWORD@HOST/...
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# host (a name, an IPv4 address or a [bracketed IPv6 literal]) and an optional port text: what may follow the
# '@' that ends the userinfo, up to the end of the URI, '/', '?' or '#'
_HOSTPORT = re.compile(r"(\[[^\]\s/?#@]*\]|[^\s:/?#@\[\]]*)(?::([^\s/?#@]*))?")
_MIN_VERBATIM = 4  # shorter passwords are hidden where they stand in a URI, not searched for in all text

# the passwords seen so far (every percent-encoded form), newest last; bounded: a service that opens many
# URIs keeps the newest MAX_REMEMBERED forms
_seen: dict[str, None] = {}
MAX_REMEMBERED = 256
_seen_lock = threading.Lock()


@dataclass(frozen=True)
class UriParts:
    """A URI split at its authority. `user` and `password` are percent-decoded; `password` is None when the
    userinfo has no ':'. `port` is the text after the host's ':' as given ('' when none; not checked: see
    `port_number`). `rest` is the path, query and fragment as given ('' or starting with '/', '?' or '#')."""

    scheme: str  # lower case
    userinfo: str  # as given, '' when none
    host: str  # as given; an IPv6 literal without its brackets
    port: str
    rest: str

    @property
    def user(self) -> str:
        return unquote(self.userinfo.partition(":")[0])

    @property
    def password(self) -> str | None:
        if ":" not in self.userinfo:
            return None
        return unquote(self.userinfo.partition(":")[2])

    def port_number(self, default: int) -> int:
        """The port, or `default` when none is given; ValueError (its message holds no secret) when the port
        text is not a number from 1 to 65535."""
        if not self.port:
            return default
        if not self.port.isascii() or not self.port.isdigit() or not 0 < int(self.port) < 65536:
            raise ValueError(f"the port {self.port!r} is not a number from 1 to 65535")
        return int(self.port)

    @property
    def hostport(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}" if self.port else host

    def bare(self) -> str:
        """The URI without its userinfo."""
        return f"{self.scheme}://{self.hostport}{self.rest}"

    def encoded(self) -> str:
        """The URI with its userinfo percent-encoded as RFC 3986 asks (what URI parsers of other programs read
        right whatever the password holds)."""
        if not self.userinfo:
            return self.bare()
        auth = quote(self.user, safe="")
        if self.password is not None:
            auth += ":" + quote(self.password, safe="")
        return f"{self.scheme}://{auth}@{self.hostport}{self.rest}"

    def shown(self) -> str:
        """The URI as it may be printed: the password replaced by ***."""
        return f"{self.scheme}://{_shown_userinfo(self.userinfo)}{self.hostport}{self.rest}"


def _shown_userinfo(userinfo: str) -> str:
    if not userinfo:
        return ""
    user, colon, _ = userinfo.partition(":")
    return f"{user}:{MASK}@" if colon else f"{user}@"


def _userinfo_end(after: str) -> int:
    """In free text after `scheme://` (up to the end of its URI's line): the index of the '@' that ends the
    userinfo, -1 for none. The last '@' followed by a host (not empty) and an optional port, then the end,
    '/', '?', '#', a space or a closing mark."""
    at = after.rfind("@")
    while at >= 0:
        m = _HOSTPORT.match(after, at + 1)
        if m and m.group(1) and (m.end() == len(after) or after[m.end()] in "/?#\"'),;>]" or after[m.end()].isspace()):
            return at
        at = after.rfind("@", 0, at)
    return -1


def split_uri(uri: str) -> UriParts | None:
    """`scheme://[userinfo@]host[:port][/path][?query][#fragment]` split (see the module's doc); None when
    `uri` does not start with `scheme://`. The scheme is lower-cased (`RTSP://` is `rtsp://`)."""
    m = _SCHEME.match(uri)
    if not m:
        return None
    after = uri[m.end():]
    at = after.rfind("@")
    while at >= 0:  # the last '@' followed by a host[:port] and then the end, '/', '?' or '#'
        hp = _HOSTPORT.match(after, at + 1)
        if hp and (hp.end() == len(after) or after[hp.end()] in "/?#"):
            break
        at = after.rfind("@", 0, at)
    start = at + 1
    hp = _HOSTPORT.match(after, start)
    assert hp is not None  # the pattern matches the empty string
    host = hp.group(1)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return UriParts(m.group(0)[:-3].lower(), after[:at] if at >= 0 else "", host, hp.group(2) or "",
                    after[hp.end():])


def remember(password: str) -> None:
    """Hide `password` (and its percent-encoded forms) wherever it appears in text redacted from now on."""
    forms = {password, unquote(password), quote(password, safe=""), quote(unquote(password), safe="")}
    with _seen_lock:
        for f in forms:
            if len(f) >= _MIN_VERBATIM:
                _seen.pop(f, None)
                _seen[f] = None
        while len(_seen) > MAX_REMEMBERED:
            del _seen[next(iter(_seen))]


def remember_uri(uri: str) -> None:
    """Remember the password of `uri`, one URI as the user gave it (read with `split_uri`), before any text
    shows it: free text then loses it even where its URI cannot be told from the words around it."""
    parts = split_uri(uri)
    if parts is not None and ":" in parts.userinfo:
        remember(parts.userinfo.partition(":")[2])


def hide_userinfo(text: str) -> str:
    """The passwords of the URIs in `text` replaced by *** (through `split_uri`'s rule); each one found is
    remembered for `redact`. A URI in free text ends at the end of its line or where another one starts
    after a space or an opening mark (its password may hold spaces)."""
    starts = [m for m in _SCHEME.finditer(text)]
    out: list[str] = []
    pos = 0
    for i, m in enumerate(starts):
        if m.start() < pos:
            continue  # inside a userinfo already hidden
        end = text.find("\n", m.end())
        end = len(text) if end < 0 else end
        for nxt in starts[i + 1:]:
            if nxt.start() >= end:
                break
            if text[nxt.start() - 1].isspace() or text[nxt.start() - 1] in "\"'(<[":
                end = nxt.start()
                break
        after = text[m.end():end]
        at = _userinfo_end(after)
        if at < 0:
            continue
        userinfo = after[:at]
        if userinfo == PLACEHOLDER:
            continue
        if ":" in userinfo:
            remember(userinfo.partition(":")[2])
        out.append(text[pos:m.end()])
        out.append(_shown_userinfo(userinfo))
        pos = m.end() + at + 1
    out.append(text[pos:])
    return "".join(out)


def redact(text: str) -> str:
    """`rtsp://user:secret@host/...` -> `rtsp://user:***@host/...` anywhere in `text` (the password raw or
    percent-encoded, with any characters); then every password seen so far, wherever it still stands."""
    text = hide_userinfo(text)
    with _seen_lock:
        secrets = sorted(_seen, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text
