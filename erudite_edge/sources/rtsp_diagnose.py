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

from erudite_edge.core.redact import redact, split_uri

TIMEOUT_S = 3.0  # for the connection and for each answer


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


def diagnose(uri: str, timeout: float | None = None) -> str:
    """A short reason (no password in it); "" when the server answers DESCRIBE with 200 (then the
    trouble is the codec or the transport, not the address or the credentials). Never raises on what the
    URI holds (a password with '/', '@', '#', a port that is not a number): such a URI gets its reason too."""
    timeout = TIMEOUT_S if timeout is None else timeout
    parts = split_uri(uri)
    if parts is None or not parts.host:
        return "no host in the URI (rtsp://[USER:PASSWORD@]HOST[:PORT]/PATH)"
    if parts.scheme == "rtsps":
        return ""  # TLS: not probed
    try:
        port = parts.port_number(554)
    except ValueError as e:
        return str(e)
    host = parts.host
    user, password = parts.user, parts.password or ""
    bare = parts.bare()
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
        return f"no answer from {host}:{port} within {timeout:g} s (a firewall, or not an RTSP server)"
    except ConnectionRefusedError:
        return f"connection refused by {host}:{port} (no RTSP server listening there)"
    except (socket.gaierror, UnicodeError):
        return redact(f"unknown host {host!r}")
    except OSError as e:
        return redact(f"{host}:{port} unreachable ({e.strerror or e})")
    except ValueError as e:  # what the socket layer refuses in a host name (a NUL, ...): said, never raised
        return redact(f"{host!r} is not a host name ({e})")
    if status == 200:
        return ""
    if status == 401:
        return ("the server refused the credentials (401 Unauthorized): check the user name and password in the URI"
                if user else "the server wants credentials (401 Unauthorized): use rtsp://USER:PASSWORD@HOST/...")
    if status == 404:
        return redact(f"no stream at path {parts.rest or '/'} on that server (404 Not Found)")
    return f"the server answered {status}"
