"""`structome submit`: run `structome build` on a Ray cluster (the client is structome.jobs.cluster)."""

from __future__ import annotations

import sys

import click

from structome.jobs.cli.build import build_command


@click.command("submit", context_settings={"allow_interspersed_args": False})
@click.option("--address", required=True, help="The Ray cluster's dashboard URL, e.g. http://HEAD:8265.")
@click.option("--wait", is_flag=True, help="Stream the job's logs (stderr) until it ends; exit 0 only if it succeeded.")
@click.option("--status", "status_id", metavar="JOB_ID", help="Print a job's status and message.")
@click.option("--stop", "stop_id", metavar="JOB_ID", help="Stop a job and print its final status.")
@click.option("--logs", "logs_id", metavar="JOB_ID", help="Print a job's logs.")
@click.argument("build_args", nargs=-1, type=click.UNPROCESSED, metavar="-- build INPUT... --db DIR ...")
def submit_command(address, wait, status_id, stop_id, logs_id, build_args) -> None:
    """Run `structome build` on a Ray cluster as a job (Ray Jobs API); print the job id.

    Inputs and --db must be on storage every node sees at the same path; relative paths are made absolute.
    """
    # Imported here: Ray's job client takes a second to import, and only `submit` needs it.
    from structome.jobs.cluster.submit import (
        SubmitError,
        connect,
        follow_job,
        job_logs,
        job_state,
        prepare_build,
        stop_job,
        submit_build,
    )

    queries = sum(1 for value in (status_id, stop_id, logs_id) if value)
    if queries > 1 or (queries and (build_args or wait)) or not (queries or build_args):
        raise click.UsageError("give one of --status, --stop, --logs JOB_ID, or `-- build ...` to submit a build")
    state = None
    try:
        job = prepare_build(build_args, build_command) if build_args else None
        client = connect(address)
        if status_id or stop_id:
            click.echo(job_state(client, status_id) if status_id else stop_job(client, stop_id))
        elif logs_id:
            click.echo(job_logs(client, logs_id), nl=False)
        elif job is not None:
            job_id = submit_build(client, job)
            click.echo(job_id)
            state = follow_job(client, job_id, sys.stderr) if wait else None
    except SubmitError as error:
        raise click.ClickException(str(error)) from error
    except KeyboardInterrupt:
        raise click.ClickException("interrupted; a submitted job runs on (`--stop JOB_ID` ends it)") from None
    if state is not None:
        click.echo(f"job {job_id} {state}", err=True)
        if state.status != "SUCCEEDED":
            sys.exit(1)
