"""`structome submit` against a real local Ray head with its dashboard (Jobs API): submit, follow, query, stop.

The head is started by this module with a unique marker variable; teardown SIGKILLs exactly the processes that
inherited it (never `ray stop`, which would stop every Ray of the user on the machine).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from installs import build_wheel, install_wheel, run
from processes import kill_all, processes_with_marker

RAY = Path(sys.executable).with_name("ray")
TINY_OPTIONS = ["--num-recycles", "0", "--no-progress"]
SEQUENCES = ["MKTAYIAKQRQISFVKSHFSRQ", "MSDNELLKQAEELLKRIEELAKKGDEEA", "MGSSHHHHHHSSGLVPRGSHMASMTGGQQMGRGSKLE"]


def structome(
    *args: str, cwd: Path | None = None, env: dict | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "structome", *args], capture_output=True, text=True, timeout=300, cwd=cwd, env=env
    )
    if check and result.returncode != 0:
        raise AssertionError(f"structome {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


def write_fasta(path: Path, sequences: list[str]) -> Path:
    path.write_text("".join(f">seq{i} test protein {i}\n{seq}\n" for i, seq in enumerate(sequences, 1)))
    return path


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def wait_for_dashboard(url: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}/api/jobs/", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        assert time.monotonic() < deadline, f"the dashboard at {url} did not answer within {timeout_s} s"
        time.sleep(0.5)


def kill_until_gone(marker: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while processes_with_marker(marker) and time.monotonic() < deadline:
        kill_all(marker)
        time.sleep(0.2)


def head_command(temp_dir: Path, ports: list[int]) -> list[str]:
    gcs, dashboard, client, agent_listen, agent_grpc, metrics, runtime_env, node_manager, object_manager = ports
    # Every port explicit: other Ray clusters may run on this machine with the defaults.
    return [
        str(RAY),
        "start",
        "--head",
        f"--port={gcs}",
        f"--dashboard-port={dashboard}",
        "--dashboard-host=127.0.0.1",
        "--include-dashboard=true",
        f"--ray-client-server-port={client}",
        f"--dashboard-agent-listen-port={agent_listen}",
        f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--metrics-export-port={metrics}",
        f"--runtime-env-agent-port={runtime_env}",
        f"--node-manager-port={node_manager}",
        f"--object-manager-port={object_manager}",
        "--num-cpus=2",
        "--memory=4000000000",
        "--object-store-memory=500000000",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
    ]


@pytest.fixture(scope="module")
def head():
    """A one-node Ray cluster with its dashboard; the job driver finds the venv's python and the tiny model's cache."""
    marker = uuid.uuid4().hex
    temp_dir = Path(tempfile.mkdtemp(prefix="st-", dir="/tmp"))  # short: Ray's socket paths have a length limit
    ports = free_ports(9)
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "STRUCTOME_TEST_MARKER": marker,
        "PATH": f"{RAY.parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }  # STRUCTOME_CACHE from conftest
    for name in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        env.pop(name, None)
    try:
        started = subprocess.run(head_command(temp_dir, ports), env=env, capture_output=True, text=True, timeout=120)
        assert started.returncode == 0, f"ray start failed:\n{started.stdout[-2000:]}\n{started.stderr[-2000:]}"
        url = f"http://127.0.0.1:{ports[1]}"
        wait_for_dashboard(url)
        yield url
    finally:
        kill_until_gone(marker)
        shutil.rmtree(temp_dir, ignore_errors=True)


def wait_for_status(url: str, job_id: str, wanted: set[str], timeout_s: float = 90) -> str:
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(url)
    deadline = time.monotonic() + timeout_s
    while (status := str(client.get_job_status(job_id))) not in wanted:
        assert time.monotonic() < deadline, f"job {job_id} still {status} after {timeout_s} s"
        time.sleep(0.5)
    return status


@pytest.mark.slow
def test_submit_wait_builds_on_the_cluster(head, tmp_path):
    write_fasta(tmp_path / "tiny.fasta", SEQUENCES)
    # Relative paths (run from tmp_path) are sent as absolute ones, with a warning.
    result = structome(
        "submit", "--address", head, "--wait", "--", "build", "tiny.fasta", "--db", "db", *TINY_OPTIONS, cwd=tmp_path
    )
    job_id = result.stdout.splitlines()[0]
    assert job_id.startswith("raysubmit_") and result.stdout.strip() == job_id  # only the id on stdout
    assert "relative" in result.stderr and str(tmp_path / "tiny.fasta") in result.stderr
    assert f"job {job_id} SUCCEEDED" in result.stderr
    assert "3 entries written" in result.stderr  # the build's own summary, streamed from the job's logs

    rows = json.loads(
        structome("sql", "--db", str(tmp_path / "db"), "--format", "json", "SELECT count(*) AS n FROM entries").stdout
    )
    assert rows == [{"n": 3}]
    elsewhere = {**os.environ, "RAY_ADDRESS": "http://127.0.0.1:1"}  # Ray would prefer it; --address wins
    assert structome("submit", "--address", head, "--status", job_id, env=elsewhere).stdout.startswith("SUCCEEDED")
    assert "3 entries written" in structome("submit", "--address", head, "--logs", job_id).stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh virtual environment with the structome wheel installed: no source tree, no pyproject.toml."""
    folder = tmp_path_factory.mktemp("install")
    return install_wheel(build_wheel(folder), folder / "venv")


@pytest.mark.slow
def test_submit_from_a_plain_install(head, installed, tmp_path):
    from ray.job_submission import JobSubmissionClient

    where = run(
        [str(installed.python), "-c", "import structome; print(structome.__file__)"], cwd=tmp_path, env=installed.env()
    ).stdout.strip()
    assert Path(where) == installed.site_packages() / "structome" / "__init__.py"  # not this checkout's
    write_fasta(tmp_path / "tiny.fasta", SEQUENCES)
    result = run(
        [
            str(installed.bin / "structome"),
            "submit",
            "--address",
            head,
            "--wait",
            "--",
            "build",
            "tiny.fasta",
            "--db",
            "db",
            *TINY_OPTIONS,
        ],
        cwd=tmp_path,
        env=installed.env(),
    )
    job_id = result.stdout.strip()
    assert f"job {job_id} SUCCEEDED" in result.stderr and "3 entries written" in result.stderr

    rows = json.loads(
        structome("sql", "--db", str(tmp_path / "db"), "--format", "json", "SELECT count(*) AS n FROM entries").stdout
    )
    assert rows == [{"n": 3}]
    runtime_env = JobSubmissionClient(head).get_job_info(job_id).runtime_env
    assert len(runtime_env["py_modules"]) == 1 and "working_dir" not in runtime_env  # the package, nothing else


@pytest.mark.slow
def test_wait_exits_non_zero_when_the_job_fails(head, tmp_path):
    missing = tmp_path / "missing.fasta"  # exists nowhere: the remote `build` refuses it
    result = structome(
        "submit", "--address", head, "--wait", "--", "build", str(missing), "--db", str(tmp_path / "db"), check=False
    )
    assert result.returncode == 1
    job_id = result.stdout.strip()
    assert f"job {job_id} FAILED" in result.stderr
    assert "missing.fasta" in result.stderr and "does not exist" in result.stderr  # the remote error, streamed


@pytest.mark.slow
def test_unknown_job_fails_clearly(head):
    for action in ("--status", "--stop", "--logs"):
        result = structome("submit", "--address", head, action, "raysubmit_nosuchjob", check=False)
        assert result.returncode == 1, result.stderr
        assert "raysubmit_nosuchjob" in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_submit_without_wait_returns_at_once_and_stop_ends_the_job(head, tmp_path):
    # Long sequences with the default 4 recycles: minutes of folding, so the job is still running when stopped.
    fasta = write_fasta(tmp_path / "slow.fasta", [("ACDEFGHIKLMNPQRSTVWY" * 20)[i : i + 300] for i in range(20)])
    started = time.monotonic()
    result = structome(
        "submit", "--address", head, "--", "build", str(fasta), "--db", str(tmp_path / "db"), "--no-progress"
    )
    assert time.monotonic() - started < 30
    job_id = result.stdout.strip()
    assert job_id.startswith("raysubmit_") and "\n" not in job_id
    wait_for_status(head, job_id, {"RUNNING", "SUCCEEDED", "FAILED"})

    stopped = structome("submit", "--address", head, "--stop", job_id)
    assert stopped.stdout.startswith("STOPPED"), stopped.stdout
    assert structome("submit", "--address", head, "--status", job_id).stdout.startswith("STOPPED")


def test_unreachable_address_fails_clearly():
    (port,) = free_ports(1)  # nothing listens there
    result = structome("submit", "--address", f"http://127.0.0.1:{port}", "--status", "raysubmit_x", check=False)
    assert result.returncode == 1
    assert (
        result.stderr.strip() == f"Error: cannot reach the Ray dashboard at http://127.0.0.1:{port}: Connection refused"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--", "sql", "SELECT 1"], "must be `build`"),
        (["--", "build", "/x.fasta", "--db", "/db", "--address", "auto"], "leave out --address"),
        (["--", "build", "/x.fasta", "--no-such-option"], "has no option --no-such-option"),
        (["--status", "raysubmit_x", "--", "build", "/x.fasta"], "give one of"),
        ([], "give one of"),
    ],
)
def test_bad_arguments_fail_before_connecting(args, message):
    result = structome("submit", "--address", "http://127.0.0.1:1", *args, check=False)
    assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr


class FlakyJobClient:
    """A JobSubmissionClient whose head answers "No available agent" (HTTP 500) to the first `failures` submissions."""

    def __init__(self, failures: int):
        self.failures, self.attempts = failures, 0

    def submit_job(self, **job) -> str:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise RuntimeError(
                "Request failed with status code 500: No available agent to submit job, please try again later.."
            )
        return "raysubmit_ok"


@pytest.fixture()
def waits(monkeypatch) -> list[float]:
    from structome.jobs.cluster import submit

    slept: list[float] = []
    monkeypatch.setattr(submit.time, "sleep", slept.append)
    return slept


def test_submit_waits_for_the_job_agent_with_a_bounded_back_off(waits):
    from structome.jobs.cluster.submit import AGENT_WAITS_S, BuildJob, submit_build

    client = FlakyJobClient(failures=3)
    assert submit_build(client, BuildJob(("build", "/x.fasta"))) == "raysubmit_ok"
    assert client.attempts == 4 and waits == list(AGENT_WAITS_S[:3])


def test_submit_gives_up_clearly_when_the_job_agent_never_comes(waits):
    from structome.jobs.cluster.submit import AGENT_WAITS_S, BuildJob, SubmitError, submit_build

    client = FlakyJobClient(failures=10**6)
    with pytest.raises(SubmitError, match="job agent did not come up within 60 s"):
        submit_build(client, BuildJob(("build", "/x.fasta")))
    assert client.attempts == len(AGENT_WAITS_S) + 1 and sum(waits) == 60
