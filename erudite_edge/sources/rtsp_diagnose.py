"""Why an RTSP stream did not open, in words a user can act on (401, 404, refused, unreachable).

OpenCV's VideoCapture only says "not opened". After it fails, one RTSP DESCRIBE request (RFC 2326) is
sent to the server, with Basic or Digest credentials when the URI has them, and the status line is
translated. Hand-written: it is one request over a socket, and no maintained Python RTSP client is small
enough to pull in for a diagnostic. Messages never contain the password.
"""

from __future__ import annotations

import base64
import hashlib
import re
import socket
from urllib.parse import unquote, urlsplit

from erudite_edge.core.redact import redact


def _request(sock: socket.socket, uri: str, cseq: int, auth: str = "") -> tuple[int, dict[str, str]]:
    lines = [f"DESCRIBE {uri} RTSP/1.0", f"CSeq: {cseq}", "Accept: application/sdp", "User-Agent: erudite-edge"]
    if auth:
        lines.append(f"Authorization: {auth}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    m = re.match(r"RTSP/\d\.\d (\d{3})", head[0] if head else "")
    if not m:
        raise OSError("not an RTSP answer")
    headers: dict[str, str] = {}
    for line in head[1:]:
        k, _, v = line.partition(":")
        headers.setdefault(k.strip().lower(), v.strip())
    return int(m.group(1)), headers


def _digest(challenge: str, user: str, password: str, uri: str) -> str:
    params = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge))
    realm, nonce = params.get("realm", ""), params.get("nonce", "")
    ha1 = hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()
    ha2 = hashlib.md5(f"DESCRIBE:{uri}".encode()).hexdigest()
    response = hashlib.md5(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()
    return (f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
            f'response="{response}"')


def diagnose(uri: str, timeout: float = 3.0) -> str:
    """A short reason (no password in it); "" when the server answers DESCRIBE with 200 (then the
    trouble is the codec or the transport, not the address or the credentials)."""
    parts = urlsplit(uri)
    host, port = parts.hostname or "", parts.port or 554
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    bare = parts._replace(netloc=f"{host}:{port}" if parts.port else host).geturl()
    if parts.scheme == "rtsps":
        return ""  # TLS: not probed
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            status, headers = _request(sock, bare, 1)
            if status == 401 and user:
                challenge = headers.get("www-authenticate", "")
                if challenge.lower().startswith("digest"):
                    auth = _digest(challenge, user, password, bare)
                else:
                    auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
                status, headers = _request(sock, bare, 2, auth)
    except socket.timeout:
        return f"no answer from {host}:{port} within {timeout:.0f} s (a firewall, or not an RTSP server)"
    except ConnectionRefusedError:
        return f"connection refused by {host}:{port} (no RTSP server listening there)"
    except socket.gaierror:
        return f"unknown host {host!r}"
    except OSError as e:
        return redact(f"{host}:{port} unreachable ({e.strerror or e})")
    if status == 200:
        return ""
    if status == 401:
        return ("the server refused the credentials (401 Unauthorized): check the user name and password in the URI"
                if user else "the server wants credentials (401 Unauthorized): use rtsp://USER:PASSWORD@HOST/...")
    if status == 404:
        return f"no stream at path {parts.path or '/'} on that server (404 Not Found)"
    return f"the server answered {status}"
