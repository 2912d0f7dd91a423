"""Atomic local writes: readers see the old file (or folder) or the whole new one, never a part.

A file is written under a temporary name beside its target, synced, renamed over the target with os.replace,
and the parent folder is synced so that the rename itself survives a crash. A staged folder is published the
same way with one rename. Object stores need none of this: a PUT is atomic (see storage.layout).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "DatabasePermissionError",
    "copy_chunks",
    "make_folders_durably",
    "make_unique_folder",
    "permission_denied",
    "publish_file",
    "publish_folder",
    "replace_atomically",
    "sync_folder",
    "write_bytes_atomic",
    "write_chunks_atomic",
    "write_parquet_atomic",
    "write_text_atomic",
]


def replace_atomically(path: str | os.PathLike, write: Callable[[Path], object], *, make_parents: bool = True) -> None:
    """Call `write(temporary)` for a temporary file beside `path`, then make it `path` durably.

    On any failure (or interrupt) the temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    if make_parents:
        make_folders_durably(path.parent)
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(3)}.tmp")
    try:
        write(temporary)
        _fsync(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync(path.parent)


def make_unique_folder(parent: str | os.PathLike, prefix: str) -> Path:
    """A new folder PARENT/PREFIX<random> with the mode the umask gives (tempfile.mkdtemp would make it 0700,
    and a shard folder keeps its mode when it is renamed into the database: unreadable to the group)."""
    while True:
        folder = Path(parent) / f"{prefix}{secrets.token_hex(6)}"
        try:
            folder.mkdir(mode=0o777)
            return folder
        except FileExistsError:
            continue


class DatabasePermissionError(PermissionError):
    """A database file or folder this account may not read or write; the message says whose and what mode."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()  # the message alone, not "[Errno 13] ...: 'path'"


def permission_denied(error: PermissionError, action: str, path: str | os.PathLike) -> DatabasePermissionError:
    """ERROR on PATH explained: its owner and mode, and how a shared database is made readable."""
    path = error.filename or path
    try:
        info = os.stat(path)
        detail = f"owner uid {info.st_uid}, group gid {info.st_gid}, mode {info.st_mode & 0o7777:04o}"
    except OSError:
        detail = "its folder may not be readable"
    return DatabasePermissionError(
        error.errno,
        f"permission denied: cannot {action} {path} ({detail}; this process runs as uid {os.getuid()}). A database "
        "shared by several accounts needs group read (and write, to build) on its folders: build with umask 002, "
        "or run `chmod -R g+rwX` on the database folder",
        path,
    )


def write_bytes_atomic(data: bytes, path: str | os.PathLike) -> None:
    replace_atomically(path, lambda temporary: temporary.write_bytes(data))


def write_text_atomic(text: str, path: str | os.PathLike) -> None:
    write_bytes_atomic(text.encode(), path)


def write_parquet_atomic(table: pa.Table, path: str | os.PathLike) -> None:
    import pyarrow.parquet as pq

    replace_atomically(path, lambda temporary: pq.write_table(table, temporary, compression="zstd"))


def write_chunks_atomic(chunks: Iterable[bytes], path: str | os.PathLike) -> int:
    """Stream the chunks into `path` (whose folder must exist) atomically; the number of bytes written."""
    written = 0

    def copy(temporary: Path) -> None:
        nonlocal written
        with open(temporary, "wb") as handle:
            written = copy_chunks(chunks, handle)

    replace_atomically(path, copy, make_parents=False)
    return written


def copy_chunks(chunks: Iterable[bytes], handle: BinaryIO) -> int:
    """Write the chunks to an open binary file; the number of bytes written."""
    written = 0
    for chunk in chunks:
        handle.write(chunk)
        written += len(chunk)
    return written


def publish_folder(staged: str | os.PathLike, target: str | os.PathLike) -> None:
    """Rename a fully written folder into place durably: its files, the folder and the rename are synced.

    Raises OSError (and leaves `staged` as it is) if `target` already exists with content.
    """
    staged, target = Path(staged), Path(target)
    for file in staged.iterdir():
        if file.is_file():
            _fsync(file)
    _fsync(staged)
    os.rename(staged, target)
    _fsync(target.parent)


def publish_file(staged: str | os.PathLike, target: str | os.PathLike) -> None:
    """Move a fully written file into place durably (same file system): the file, its new folders, and the rename
    in the target's folder (the staging side is not synced: a file left there after a power loss is scratch)."""
    staged, target = Path(staged), Path(target)
    make_folders_durably(target.parent)
    _fsync(staged)
    os.replace(staged, target)
    _fsync(target.parent)


def make_folders_durably(folder: str | os.PathLike) -> None:
    """Make FOLDER and its missing parents, each new one synced into its parent: a commit into a new folder
    survives a power loss with the folder, not only with the file."""
    missing: list[Path] = []
    folder = Path(folder)
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for new in reversed(missing):
        new.mkdir(exist_ok=True)
        _fsync(new.parent)


def sync_folder(folder: str | os.PathLike) -> None:
    """Make the entries of FOLDER (a file created or renamed there) durable."""
    _fsync(Path(folder))


def _fsync(path: Path) -> None:
    """Sync a file's data, or a folder's entries (O_RDONLY works for both on POSIX)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
