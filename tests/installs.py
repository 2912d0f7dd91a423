"""structome as a user installs it: the wheel built from this checkout, and a fresh virtual environment holding it.

Nothing is downloaded: the wheel builds with the running environment's setuptools, and the fresh environment
borrows the running one's dependencies through a .pth file (a plain path line, so the running environment's own
.pth files, such as an editable install's finder, do not run there).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the checkout (pyproject.toml)
# Never copied before building: the checkout's environments, VCS data and old build outputs (a stale build/ leaks
# into wheels); caches anywhere.
NOT_SOURCE = {".venv", "venv", ".git", "build", "dist", "structome.egg-info", ".pytest_cache", "example-db"}
CACHES = shutil.ignore_patterns("__pycache__", "*.pyc")


def _not_source(folder: str, names: list[str]) -> set[str]:
    return set(CACHES(folder, names)) | (NOT_SOURCE & set(names) if Path(folder) == ROOT else set())


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, (
        f"{' '.join(map(str, command))} failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    )
    return result


def build_wheel(folder: Path) -> Path:
    """The structome wheel, built offline from a copy of the checkout (the checkout itself stays untouched)."""
    source = folder / "source"
    shutil.copytree(ROOT, source, ignore=_not_source)
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--no-cache-dir",
            "--quiet",
            "-w",
            str(folder / "dist"),
            str(source),
        ]
    )
    (wheel,) = (folder / "dist").glob("structome-*.whl")
    return wheel


def wheel_files(wheel: Path) -> list[str]:
    """The wheel's file names, without its *.dist-info metadata."""
    with zipfile.ZipFile(wheel) as archive:
        return [name for name in archive.namelist() if not name.split("/")[0].endswith(".dist-info")]


@dataclass(frozen=True)
class Venv:
    root: Path

    @property
    def bin(self) -> Path:
        return self.root / ("Scripts" if os.name == "nt" else "bin")

    @property
    def python(self) -> Path:
        return self.bin / "python"

    def env(self, **extra: str) -> dict[str, str]:
        """The environment for its commands: no PYTHONPATH (it could serve another structome), its bin first."""
        env = {name: value for name, value in os.environ.items() if name not in ("PYTHONPATH", "VIRTUAL_ENV")}
        return {**env, "PATH": f"{self.bin}{os.pathsep}{env.get('PATH', '')}", **extra}

    def site_packages(self) -> Path:
        return Path(
            run(
                [str(self.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], env=self.env()
            ).stdout.strip()
        )


def install_wheel(wheel: Path, folder: Path) -> Venv:
    """A new virtual environment in FOLDER with WHEEL installed (no dependencies) and the running one's libraries."""
    venv = Venv(folder)
    run([sys.executable, "-m", "venv", "--without-pip", str(folder)])
    # The running environment's pip installs into the new one; no .pth yet, so it sees no other structome.
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv.python),
            "install",
            "--no-deps",
            "--no-index",
            "--no-cache-dir",
            "--quiet",
            str(wheel),
        ],
        env=venv.env(),
    )
    borrowed = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (venv.site_packages() / "borrowed-dependencies.pth").write_text("".join(f"{path}\n" for path in borrowed))
    return venv
