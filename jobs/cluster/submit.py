"""Run `structome build` on a Ray cluster as a job (Ray Jobs API), and follow, inspect or stop such jobs.

The job carries the installed structome package (runtime_env `py_modules`) and runs
`python -m structome build ... --address auto` on the cluster, so the build joins the cluster it runs on and every
node imports the client's structome (Ray puts the package first on the job's PYTHONPATH; the nodes keep their
own dependencies). A folder, not a wheel: Ray `pip install`s a wheel on every node, dependencies included (network,
minutes), while a folder is only unpacked. Ray ships a folder under its own name, and the package folder of an
editable install is the project root, so the package's files are first copied into a temporary `structome` folder
(the same upload for a plain and an editable install; nothing else of a project, no tests, caches or databases).
Paths travel as text: every node must see the inputs and the database at the same place (shared storage),
so relative paths are made absolute here, with a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

import click

logger = logging.getLogger(__name__)

PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the structome package folder (an editable install's project root)
PACKAGE_MODULES = ("__init__.py", "__main__.py")  # the root package's own modules
SUBPACKAGES = ("models", "storage", "pipelines", "jobs")  # with their data files (pyproject.toml's packages)
NOT_SHIPPED = shutil.ignore_patterns("__pycache__", "*.pyc")
PATH_OPTIONS = ("--db", "--weights")  # `build` options whose values are paths on the cluster
# Ray lets these override a client's explicit address; ours is always explicit.
ADDRESS_VARIABLES = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
CONNECT_TIMEOUT_S = 10.0
# Right after `ray start` the head answers submissions with HTTP 500 "No available agent to submit job" until its
# job agent is up. Ray raises a bare RuntimeError, so its text is all there is to tell this case apart.
AGENT_NOT_READY = "No available agent to submit job"
AGENT_WAITS_S = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)  # back-off between submission attempts (one minute in all)


class SubmitError(Exception):
    """A submission or a job query failed; the message is meant for the user."""


@dataclass(frozen=True)
class JobState:
    job_id: str
    status: str  # PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED
    message: str = ""

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def __str__(self) -> str:
        """STATUS: the message's first line (a failed job's message goes on with its last logs)."""
        headline = self.message.strip().splitlines()[0] if self.message.strip() else ""
        return f"{self.status}: {headline}" if headline else self.status


@dataclass(frozen=True)
class BuildJob:
    """The remote `structome build` command line."""

    args: tuple[str, ...]  # starts with "build"; paths absolute

    @property
    def entrypoint(self) -> str:
        return shlex.join(["python", "-m", "structome", *self.args, "--address", "auto"])


def stage_package(folder: Path) -> Path:
    """Copy the structome package's files into FOLDER/structome, the folder a job ships as `py_modules`."""
    package = folder / "structome"
    package.mkdir()
    for name in PACKAGE_MODULES:
        shutil.copy2(PACKAGE_ROOT / name, package / name)
    for name in SUBPACKAGES:
        shutil.copytree(PACKAGE_ROOT / name, package / name, ignore=NOT_SHIPPED)
    return package


def prepare_build(args: Sequence[str], command: click.Command) -> BuildJob:
    """Check ARGS against the `build` COMMAND's options and make its paths absolute for the cluster."""
    if not args or args[0] != "build":
        raise SubmitError(
            "after `--` comes the remote command, which must be `build` "
            "(e.g. `-- build /shared/proteome.fasta --db /shared/db`)"
        )
    takes_value = _option_arity(command)
    out, rest = ["build"], iter(args[1:])
    for token in rest:
        if not token.startswith("-"):
            out.append(_cluster_path(token, "input"))
            continue
        name, has_inline, inline = token.partition("=")
        if name not in takes_value:
            raise SubmitError(f"`build` has no option {name}")
        if name == "--address":
            raise SubmitError("leave out --address: the job runs `build --address auto` on the cluster it is sent to")
        if not takes_value[name]:
            out.append(token)
            continue
        value = inline if has_inline else next(rest, None)
        if value is None:
            raise SubmitError(f"{name} needs a value")
        if name in PATH_OPTIONS:
            value = _cluster_path(value, name, only_if_exists=name == "--weights")
        out += [name, value]
    return BuildJob(tuple(out))


def connect(address: str):
    """A Jobs API client for the dashboard at ADDRESS (http://HEAD:8265)."""
    from ray.job_submission import JobSubmissionClient

    url = address if "://" in address else f"http://{address}"
    _check_reachable(url)
    with _explicit_address():
        return _call(JobSubmissionClient, url)


def submit_build(client, job: BuildJob) -> str:
    """Submit JOB with the structome package (uploaded from a temporary copy); return its submission id."""
    logger.info("submitting: %s", job.entrypoint)
    with tempfile.TemporaryDirectory(prefix="structome-submit-") as scratch:
        package = _call(stage_package, Path(scratch))
        return _call(
            _submit_when_agent_ready,
            client,
            entrypoint=job.entrypoint,
            runtime_env={"py_modules": [str(package)]},
            metadata={"structome": "build"},
        )


def _submit_when_agent_ready(client, waits_s: Sequence[float] = AGENT_WAITS_S, **job) -> str:
    """client.submit_job, again after each of WAITS_S while the head's job agent is not up yet."""
    for wait in (*waits_s, None):
        try:
            return client.submit_job(**job)
        except RuntimeError as error:
            if AGENT_NOT_READY not in str(error):
                raise
            if wait is None:
                raise SubmitError(
                    f"the cluster's job agent did not come up within {sum(waits_s):.0f} s (Ray answers "
                    f'"{AGENT_NOT_READY}"): is the head node still starting? Try again, or check `ray status` there'
                ) from error
            logger.warning("the cluster's job agent is not ready yet; submitting again in %.0f s", wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


def job_state(client, job_id: str) -> JobState:
    info = _call(client.get_job_info, job_id)
    return JobState(job_id, str(info.status), info.message or "")


def job_logs(client, job_id: str) -> str:
    return _call(client.get_job_logs, job_id)


def stop_job(client, job_id: str, timeout_s: float = 60.0) -> JobState:
    """Ask the job to stop (Ray sends SIGTERM, then SIGKILL) and wait until it has ended."""
    _call(client.stop_job, job_id)
    return wait_for_job(client, job_id, timeout_s)


def wait_for_job(client, job_id: str, timeout_s: float | None = None, poll_s: float = 1.0) -> JobState:
    """Poll until the job reaches a terminal state (or TIMEOUT_S passes: then its current state)."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    state = job_state(client, job_id)
    while not state.terminal and (deadline is None or time.monotonic() < deadline):
        time.sleep(poll_s)
        state = job_state(client, job_id)
    return state


def follow_job(client, job_id: str, out: TextIO) -> JobState:
    """Stream the job's logs to OUT until it ends; return its final state."""
    import aiohttp

    try:
        asyncio.run(_tail(client, job_id, out))
    except (RuntimeError, OSError, aiohttp.ClientError) as error:  # the stream broke: the job may still run
        logger.warning("log stream of job %s ended early (%s); waiting for the job to end", job_id, error)
    return wait_for_job(client, job_id)


async def _tail(client, job_id: str, out: TextIO) -> None:
    async for chunk in client.tail_job_logs(job_id):
        out.write(chunk)
        out.flush()


def _option_arity(command: click.Command) -> dict[str, bool]:
    """Every option string of COMMAND -> whether it takes a value."""
    return {
        name: not param.is_flag
        for param in command.params
        if isinstance(param, click.Option)
        for name in (*param.opts, *param.secondary_opts)
    }


def _cluster_path(value: str, what: str, only_if_exists: bool = False) -> str:
    """VALUE as the cluster should see it: URLs and absolute paths as given, relative paths made absolute."""
    if "://" in value or Path(value).is_absolute() or (only_if_exists and not Path(value).exists()):
        return value
    absolute = str(Path(value).resolve())
    logger.warning(
        "%s %s is relative: sent as %s, which every node of the cluster must see (shared storage)",
        what,
        value,
        absolute,
    )
    return absolute


def _check_reachable(url: str) -> None:
    """Fail fast (and with a timeout) when nothing answers at URL's host and port."""
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:  # a port that is not a number
        port = None
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
        raise SubmitError(f"--address must be the Ray dashboard's URL, e.g. http://HEAD:8265 (got {url})")
    try:
        socket.create_connection((parts.hostname, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        raise SubmitError(f"cannot reach the Ray dashboard at {url}: {error.strerror or error}") from error


@contextlib.contextmanager
def _explicit_address() -> Iterator[None]:
    """Hide RAY_ADDRESS / RAY_API_SERVER_ADDRESS while the client resolves its address."""
    saved = {name: os.environ.pop(name) for name in ADDRESS_VARIABLES if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def _call(function, *args, **kwargs):
    """Call a Jobs API method; its errors become one-line SubmitErrors."""
    from ray.exceptions import RayError

    try:
        return function(*args, **kwargs)
    except (RuntimeError, OSError, ValueError, RayError) as error:
        raise SubmitError(_one_line(error)) from error


def _one_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return " ".join(lines) or type(error).__name__
