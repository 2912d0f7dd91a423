"""The style CI guards: ruff's lint rules and formatting, and mypy over the four packages (config: pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "storage", "pipelines", "jobs")


def tool(name: str) -> str:
    """The tool installed beside this Python (the test extra), so CI never picks up another version."""
    path = Path(sys.executable).with_name(name)
    found = str(path) if path.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return found


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, **kwargs)


def test_ruff_check_passes():
    result = run([tool("ruff"), "check", "--no-cache", "."])
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_ruff_format_leaves_every_file_as_it_is():
    result = run([tool("ruff"), "format", "--no-cache", "--check", "."])
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_mypy_passes_on_the_four_packages(tmp_path):
    """mypy resolves `structome` from a folder holding a link named so to the checkout (the root is the package)."""
    (tmp_path / "structome").symlink_to(ROOT, target_is_directory=True)
    packages = [arg for name in PACKAGES for arg in ("-p", f"structome.{name}")]
    command = [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"), *packages]
    result = run(command, env={"MYPYPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
