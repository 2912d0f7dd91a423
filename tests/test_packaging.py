"""The distribution: the wheel holds one top-level name, `structome`, with its data files and its console script;
structome works beside a user's own `models` and `jobs` packages, from this checkout and from the installed wheel."""

from __future__ import annotations

import configparser
import json
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
from installs import ROOT, build_wheel, install_wheel, run, wheel_files

from structome.jobs.cluster.submit import stage_package


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory):
    return install_wheel(wheel, tmp_path_factory.mktemp("venv"))


def test_wheel_holds_only_the_structome_package(wheel):
    files = wheel_files(wheel)
    assert {name.split("/")[0] for name in files} == {"structome"}
    expected = [
        "structome/__init__.py",
        "structome/__main__.py",
        "structome/pipelines/calibration.json",
        *(f"structome/jobs/serve/web/{path.name}" for path in (ROOT / "jobs/serve/web").iterdir()),
    ]
    assert len(expected) > 4 and set(expected) <= set(files)
    assert not [name for name in files if "/tests/" in name or "__pycache__" in name]


def test_console_script_is_the_cli_group(wheel):
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [name for name in archive.namelist() if name.endswith(".dist-info/entry_points.txt")]
        entry_points = configparser.ConfigParser()
        entry_points.read_string(archive.read(name).decode())
    assert dict(entry_points["console_scripts"]) == {"structome": "structome.jobs.cli:main"}


def test_submit_ships_what_the_wheel_installs(wheel, tmp_path):
    package = stage_package(tmp_path)
    staged = sorted(path.relative_to(tmp_path).as_posix() for path in package.rglob("*") if path.is_file())
    assert staged == sorted(wheel_files(wheel))


USER_SCRIPT = """
    import json
    import sys

    import jobs.x
    import models.chunking
    import structome.models
    from structome.models.chunking import chunk_size_for_length
    from structome.storage.afdb_json import plddt_category

    print(json.dumps({"user": [models.chunking.OWNER, jobs.x.OWNER, models.chunking.chunk_size_for_length(300)],
                      "ours": [chunk_size_for_length(300), plddt_category([40.0, 95.0])],
                      "files": [models.__file__, structome.models.__file__]}))
"""


def user_project(folder: Path) -> Path:
    """An ML project with its own top-level `models` and `jobs` packages (first on sys.path when run there)."""
    for package, module in (("models", "chunking"), ("jobs", "x")):
        (folder / package).mkdir(parents=True)
        (folder / package / "__init__.py").write_text("")
        (folder / package / f"{module}.py").write_text(
            "OWNER = 'user'\n\n\ndef chunk_size_for_length(length):\n    return 'user'\n"
        )
    (folder / "train.py").write_text(textwrap.dedent(USER_SCRIPT))
    return folder


@pytest.fixture(params=["checkout", "wheel"])
def interpreter(request) -> tuple[str, dict | None, Path]:
    """A python, its environment, and where its structome must come from: this checkout, or the installed wheel."""
    if request.param == "checkout":
        return sys.executable, None, ROOT
    venv = request.getfixturevalue("installed")
    return str(venv.python), venv.env(), venv.site_packages() / "structome"


def test_user_packages_named_models_and_jobs_coexist(interpreter, tmp_path):
    python, env, structome_folder = interpreter
    project = user_project(tmp_path / "project")

    seen = json.loads(run([python, "train.py"], cwd=project, env=env).stdout)
    assert seen["user"] == ["user", "user", "user"]
    assert seen["ours"] == [64, ["D", "H"]]
    users, ours = (Path(name).resolve() for name in seen["files"])
    assert users == project.resolve() / "models" / "__init__.py"
    assert ours == structome_folder.resolve() / "models" / "__init__.py"

    help_text = run([python, "-m", "structome", "--help"], cwd=project, env=env).stdout
    assert "Usage: python -m structome" in help_text and "submit" in help_text
