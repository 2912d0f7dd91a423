"""Find and kill exactly the processes a test started: each inherits a unique STRUCTOME_TEST_MARKER value."""

from __future__ import annotations

import os
import signal
from pathlib import Path


def processes_with_marker(marker: str) -> list[int]:
    """Every process (the driver and the Ray processes it started) that inherited our marker variable."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if f"STRUCTOME_TEST_MARKER={marker}".encode() in (proc / "environ").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def kill_all(marker: str) -> None:
    for pid in processes_with_marker(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
