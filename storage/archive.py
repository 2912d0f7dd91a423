"""Per-shard tar archives whose members' byte offsets are recorded, so one file is one ranged read.

Members are stored gzip-compressed (`<name>.gz`, like AlphaFold DB's bulk archives); `tar -xf` works on
them as on any tar file.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from dataclasses import dataclass
from typing import BinaryIO

GZIP_LEVEL = 6


@dataclass(frozen=True)
class StoredMember:
    """Where one file's stored bytes sit inside an archive."""

    file_name: str  # logical name, e.g. SM-P12345-F1-model_v1.cif
    member: str  # name inside the tar
    offset: int  # byte offset of the stored bytes
    length: int  # stored byte count
    encoding: str  # gzip or identity
    size: int  # decoded byte count
    sha256: str  # of the stored bytes


class ArchiveWriter:
    """Appends files to a new tar archive and records each member's offset and checksum."""

    def __init__(self, stream: BinaryIO, *, mtime: float):
        """`stream`: a writable file object positioned at 0 (closed by the caller)."""
        self._mtime = int(mtime)
        self._tar = tarfile.open(fileobj=stream, mode="w", format=tarfile.PAX_FORMAT)

    def add(self, file_name: str, data: bytes, *, compress: bool = True) -> StoredMember:
        stored = gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0) if compress else data
        info = tarfile.TarInfo(file_name + ".gz" if compress else file_name)
        info.size = len(stored)
        info.mtime = self._mtime
        info.mode = 0o644
        self._tar.addfile(info, io.BytesIO(stored))
        # The data ends the member, padded to whole 512-byte blocks (whatever header size PAX needed).
        padded = -(-len(stored) // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
        return StoredMember(
            file_name=file_name,
            member=info.name,
            offset=self._tar.offset - padded,
            length=len(stored),
            encoding="gzip" if compress else "identity",
            size=len(data),
            sha256=hashlib.sha256(stored).hexdigest(),
        )

    def close(self) -> None:
        self._tar.close()

    def __enter__(self) -> ArchiveWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ArchiveChecksumError(IOError):
    """The bytes read from an archive do not match the recorded checksum."""


def verify_stored(data: bytes, where: str, offset: int, length: int, sha256: str | None = None) -> bytes:
    """A member's stored bytes as read, checked against the recorded length and checksum."""
    if len(data) != length:
        raise ArchiveChecksumError(f"{where}: short read at {offset} ({len(data)} of {length} bytes)")
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise ArchiveChecksumError(f"{where}: checksum mismatch for bytes {offset}..{offset + length}")
    return data


def decode(data: bytes, encoding: str) -> bytes:
    return gzip.decompress(data) if encoding == "gzip" else data
