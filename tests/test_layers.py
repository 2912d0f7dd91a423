"""The import rules of design.md: jobs -> pipelines -> {storage, models}; storage imports only models.types;
models knows nothing of Ray, Parquet or file-system layers; nothing imports jobs."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "pipelines", "storage", "jobs")


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).glob("*.py"))


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_flow_one_way(package):
    allowed = {
        "models": {"models"},
        "storage": {"storage", "models.types"},
        "pipelines": {"pipelines", "storage", "models"},
        "jobs": {"jobs", "pipelines", "storage", "models"},
    }[package]
    for path in sources(package):
        for module in imported_modules(path):
            top = module.split(".")[0]
            if top not in PACKAGES:
                continue
            assert top in allowed or module in allowed, f"{path.relative_to(ROOT)} imports {module}"
            if package == "storage" and top == "models":
                assert module == "models.types", f"{path.relative_to(ROOT)} imports {module}"


def test_models_know_nothing_of_ray_or_parquet():
    for path in sources("models"):
        tops = {m.split(".")[0] for m in imported_modules(path)}
        assert not tops & {"ray", "pyarrow", "duckdb", "fsspec"}, path.name


def test_only_jobs_uses_ray():
    for package in ("models", "pipelines", "storage"):
        for path in sources(package):
            assert "ray" not in {m.split(".")[0] for m in imported_modules(path)}, path.name


def test_writer_processes_never_import_torch():
    """Ray writer tasks import pipelines.write; pulling in torch there costs ~400 MB and seconds per process."""
    import subprocess
    import sys

    code = "import sys, pipelines.write, storage.catalog; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
