"""The cache folder of this machine: files structome builds or fetches once and keeps between runs.

`$STRUCTOME_CACHE` (default `~/.cache/structome`) holds one folder per thing (the tiny model's weights, the
viewer build), each published atomically: filled in a staging folder beside it, then renamed into place, so
that a reader sees it complete or not at all.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def cache_folder(name: str) -> Path:
    """`$STRUCTOME_CACHE/<name>` (not created)."""
    return Path(os.environ.get("STRUCTOME_CACHE", Path.home() / ".cache" / "structome")) / name


def staging_folder(target: Path) -> Path:
    """A new empty hidden folder beside `target` (same file system, so publishing it is one rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))


def publish_unless_present(staging: Path, target: Path) -> bool:
    """Rename the filled `staging` folder to `target`; False (and `staging` removed) when `target` exists.

    An existing `target` is kept: another process has just published the same thing. A caller that knows its
    `target` is damaged moves it aside first. Not synced to disk: a cache lost to a power cut is built again
    (a database's folders are committed durably by storage.atomic.publish_folder).
    """
    try:
        staging.rename(target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        return False
    return True
