"""HTTP semantics of file downloads: content negotiation, byte ranges and validators (RFC 9110), as pure functions."""

from __future__ import annotations

import re
from dataclasses import dataclass

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


_MAX_DIGITS = 18  # a byte position past 10^18 is no file's; int() of 5,000 digits raises


class RangeNotSatisfiable(ValueError):
    """The requested range starts past the end of the representation (HTTP 416)."""


class InvalidRange(ValueError):
    """A Range header this server will not read (HTTP 400): numbers of more than _MAX_DIGITS digits."""


@dataclass(frozen=True)
class ByteRange:
    start: int
    length: int

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.start + self.length - 1}/{size}"


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """One `bytes=a-b`, `bytes=a-` or `bytes=-n` range clipped to `size`; None means "send it all" (no header,
    a syntax this server ignores, or several ranges, which RFC 9110 lets a server answer with the whole file)."""
    match = _RANGE.match((header or "").replace(" ", ""))
    if not match or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if max(len(first), len(last)) > _MAX_DIGITS:
        raise InvalidRange(f"the Range header's positions have more than {_MAX_DIGITS} digits")
    if first == "":  # suffix: the last n bytes
        length = min(int(last), size)
        if length == 0:
            raise RangeNotSatisfiable(header)
        return ByteRange(size - length, length)
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size:
        raise RangeNotSatisfiable(header)
    if end < start:
        return None  # invalid range-spec: ignore the header
    return ByteRange(start, end - start + 1)


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether `Accept-Encoding` admits gzip (explicitly, or through `*`), honouring q=0."""
    weights: dict[str, float] = {}
    for item in (accept_encoding or "").split(","):
        coding, _, params = item.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                quality = _quality(value)
        weights[coding.strip().lower()] = quality
    return weights.get("gzip", weights.get("x-gzip", weights.get("*", 0.0))) > 0


def _quality(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return 0.0


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Weak comparison of `If-None-Match` against our (strong) ETag."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in if_none_match.split(","))


def if_range_allows(if_range: str | None, etag: str) -> bool:
    """A Range applies only when `If-Range` is absent or names the current ETag (dates are not tracked)."""
    return if_range is None or if_range.strip() == etag
