"""urllib3 connections whose response headers skip the email parser (PERF).

http.client parses every response's header block with `email.parser` (a feed parser, a
policy object, per-line regexes): about a fifth of the gateway's CPU on a small proxied
request. Here a header block of plain `Name: value` lines becomes the same HTTPMessage
directly; anything else (folded lines, a line without a colon, whitespace in a name)
still goes through the email parser, so odd responses are read exactly as before.
"""

from __future__ import annotations

import email.parser
import http.client
import re
from typing import Any

from urllib3.connection import HTTPConnection, HTTPSConnection

# http.client's limits, applied by the same reader it uses.
_read_headers = http.client._read_headers  # type: ignore[attr-defined]
# A name the email parser reads as a plain header: printable ASCII, no space, no colon.
_PLAIN_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+").fullmatch


def parse_headers(fp: Any) -> http.client.HTTPMessage:
    """http.client.parse_headers, without the email parser for plain header lines."""
    lines = _read_headers(fp)
    msg = http.client.HTTPMessage()
    fields = []
    for raw in lines:
        if raw in (b"\r\n", b"\n", b""):
            break
        line = raw.decode("iso-8859-1")
        name, sep, value = line.partition(":")
        if not sep or not _PLAIN_NAME(name):
            return _slow_parse(lines)
        fields.append((name, value.lstrip(" \t").rstrip("\r\n")))
    msg._headers = fields  # type: ignore[attr-defined]
    return msg


def _slow_parse(lines: list[bytes]) -> http.client.HTTPMessage:
    text = b"".join(lines).decode("iso-8859-1")
    message: http.client.HTTPMessage = email.parser.Parser(_class=http.client.HTTPMessage).parsestr(
        text
    )
    return message


class FastHeadersResponse(http.client.HTTPResponse):
    """http.client.HTTPResponse whose begin() parses headers with `parse_headers` above."""

    def begin(self) -> None:
        """As http.client's begin(); only the header parsing differs."""
        if self.headers is not None:
            return
        while True:
            version, status, reason = self._read_status()  # type: ignore[attr-defined]
            if status != http.client.CONTINUE:
                break
            _read_headers(self.fp)
        self.code = self.status = status
        self.reason = reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11
        else:
            raise http.client.UnknownProtocol(version)
        self.headers = self.msg = parse_headers(self.fp)
        tr_enc = self.headers.get("transfer-encoding")
        if tr_enc and tr_enc.lower() == "chunked":
            self.chunked = True
            self.chunk_left = None
        else:
            self.chunked = False
        self.will_close = self._check_close()  # type: ignore[attr-defined]
        self.length = None
        length = self.headers.get("content-length")
        if length and not self.chunked:
            try:
                self.length = int(length)
            except ValueError:
                self.length = None
            else:
                if self.length < 0:
                    self.length = None
        else:
            self.length = None
        if (
            status in (http.client.NO_CONTENT, http.client.NOT_MODIFIED)
            or 100 <= status < 200
            or self._method == "HEAD"  # type: ignore[attr-defined]
        ):
            self.length = 0
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True


class FastHTTPConnection(HTTPConnection):
    """urllib3's HTTPConnection reading responses with FastHeadersResponse."""

    response_class = FastHeadersResponse


class FastHTTPSConnection(HTTPSConnection):
    """urllib3's HTTPSConnection reading responses with FastHeadersResponse."""

    response_class = FastHeadersResponse
