"""Run `structome build` on a Ray cluster as a job (Ray Jobs API), and follow, inspect or stop such jobs.

The job carries the project source (runtime_env `working_dir`) and runs
`python -m structome.jobs.cli build ... --address auto` on the cluster, so the build joins the cluster it runs on.
Paths travel as text: every node must see the inputs and the database at the same place (shared storage),
so relative paths are made absolute here, with a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

import click

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the folder holding pyproject.toml
# Never uploaded with a job (gitignore syntax, relative to the project root; Ray also honours .gitignore).
EXCLUDES = (".venv/", "venv/", ".git/", "**/__pycache__/", "*.egg-info/", ".pytest_cache/", "/tests/",
            "/example-db/", "/build/", "/dist/")
PATH_OPTIONS = ("--db", "--weights")  # `build` options whose values are paths on the cluster
# Ray lets these override a client's explicit address; ours is always explicit.
ADDRESS_VARIABLES = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
CONNECT_TIMEOUT_S = 10.0


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
    """The remote `structome build` command line and the project paths not to upload with it."""

    args: tuple[str, ...]  # starts with "build"; paths absolute
    excludes: tuple[str, ...] = ()

    @property
    def entrypoint(self) -> str:
        return shlex.join(["python", "-m", "structome", *self.args, "--address", "auto"])

    def runtime_env(self) -> dict:
        if not (PROJECT_ROOT / "pyproject.toml").is_file():
            raise SubmitError(f"submit needs the structome source tree (no pyproject.toml in {PROJECT_ROOT})")
        return {"working_dir": str(PROJECT_ROOT), "excludes": [*EXCLUDES, *self.excludes]}


def prepare_build(args: Sequence[str], command: click.Command) -> BuildJob:
    """Check ARGS against the `build` COMMAND's options and make its paths absolute for the cluster."""
    if not args or args[0] != "build":
        raise SubmitError("after `--` comes the remote command, which must be `build` "
                          "(e.g. `-- build /shared/proteome.fasta --db /shared/db`)")
    takes_value = _option_arity(command)
    out, excludes, rest = ["build"], [], iter(args[1:])
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
            excludes.extend(_inside_project(value))
        out += [name, value]
    return BuildJob(tuple(out), tuple(excludes))


def connect(address: str):
    """A Jobs API client for the dashboard at ADDRESS (http://HEAD:8265)."""
    from ray.job_submission import JobSubmissionClient

    url = address if "://" in address else f"http://{address}"
    _check_reachable(url)
    with _explicit_address():
        return _call(JobSubmissionClient, url)


def submit_build(client, job: BuildJob) -> str:
    """Submit JOB; return its submission id."""
    logger.info("submitting: %s", job.entrypoint)
    return _call(client.submit_job, entrypoint=job.entrypoint, runtime_env=job.runtime_env(),
                 metadata={"structome": "build"})


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
    return {name: not param.is_flag for param in command.params if isinstance(param, click.Option)
            for name in (*param.opts, *param.secondary_opts)}


def _cluster_path(value: str, what: str, only_if_exists: bool = False) -> str:
    """VALUE as the cluster should see it: URLs and absolute paths as given, relative paths made absolute."""
    if "://" in value or Path(value).is_absolute() or (only_if_exists and not Path(value).exists()):
        return value
    absolute = str(Path(value).resolve())
    logger.warning("%s %s is relative: sent as %s, which every node of the cluster must see (shared storage)",
                   what, value, absolute)
    return absolute


def _inside_project(path: str) -> list[str]:
    """An exclude pattern for PATH when it lies inside the project (a database there must not be uploaded)."""
    if "://" in path:
        return []
    try:
        relative = Path(path).resolve().relative_to(PROJECT_ROOT)
    except ValueError:
        return []
    return [f"/{relative.as_posix()}"] if relative.parts else []


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

