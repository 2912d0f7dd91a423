"""The import rules of design.md: jobs -> pipelines -> {storage, models}; storage imports only models.types;
models knows nothing of Ray, Parquet or file-system layers; nothing imports jobs; inside jobs, the build,
serve and cluster wings do not import each other. Every module of every subfolder is checked."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "pipelines", "storage", "jobs")
WINGS = ("build", "serve", "cluster")  # jobs/ wings that stay apart (jobs/cli uses all three)
ALLOWED = {
    "models": {"models"},
    "storage": {"storage", "models.types"},
    "pipelines": {"pipelines", "storage", "models"},
    "jobs": {"jobs", "pipelines", "storage", "models"},
}


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def sources(package: str) -> list[Path]:
    """Every module of the package, subfolders included."""
    return sorted((ROOT / package).rglob("*.py"))


def project_module(module: str) -> str | None:
    """`structome.storage.layout` -> `storage.layout`; None for modules outside the project."""
    head, _, rest = module.partition(".")
    return rest if head == "structome" and rest else None


def test_sources_are_found_in_subfolders():
    assert ROOT / "jobs" / "cli" / "main.py" in sources("jobs")
    assert ROOT / "jobs" / "serve" / "app.py" in sources("jobs")


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_flow_one_way(package):
    for path in sources(package):
        for module in filter(None, map(project_module, imported_modules(path))):
            top = module.split(".")[0]
            assert top in ALLOWED[package] or module in ALLOWED[package], f"{path.relative_to(ROOT)} imports {module}"


@pytest.mark.parametrize("package", PACKAGES)
def test_project_modules_are_imported_by_their_full_name(package):
    """A bare `import models...` would find whatever `models` a user's sys.path holds first."""
    for path in sources(package):
        bare = {m for m in imported_modules(path) if m.split(".")[0] in PACKAGES}
        assert not bare, f"{path.relative_to(ROOT)} imports {sorted(bare)} without the structome prefix"


@pytest.mark.parametrize("wing", WINGS)
def test_job_wings_do_not_import_each_other(wing):
    others = {f"jobs.{other}" for other in WINGS if other != wing}
    for path in sorted((ROOT / "jobs" / wing).rglob("*.py")):
        for module in filter(None, map(project_module, imported_modules(path))):
            assert not any(module == o or module.startswith(o + ".") for o in others | {"jobs.cli"}), (
                f"{path.relative_to(ROOT)} imports {module}"
            )


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
    code = "import sys, structome.pipelines.write, structome.storage.catalog; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_no_command_module_imports_torch_ray_or_transformers():
    """No command module imports torch, Ray, transformers or pandas: the commands that fold or submit import them
    when they run (issue 11: `structome sql "SELECT 1"` and `get` in < 0.5 s; that those two, run, import not even
    pyarrow or numpy: tests/jobs/test_cli_usability.py)."""
    code = (
        "import importlib, sys; from structome.jobs.cli.main import COMMANDS;"
        "[importlib.import_module(target.partition(':')[0]) for target in COMMANDS.values()];"
        "heavy = {'torch', 'ray', 'transformers', 'pandas'} & {m.split('.')[0] for m in sys.modules};"
        "sys.exit(f'imported {sorted(heavy)}' if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
