"""The `structome` command line: one group, thin commands."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click
import duckdb

from jobs import output
from jobs.export import export_command
from jobs.options import DB_OPTION
from jobs.plan import plan_command
from jobs.serve import serve_command
from models.registry import PRESETS
from models.types import STEM_PRECISIONS, TRUNK_PRECISIONS
from storage import catalog
from storage.layout import DatabaseLayout, DatabaseLockedError
from storage.reader import DOWNLOAD_KINDS, AmbiguousEntryError, EntryNotFoundError, read_entry_file


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """structome: build and use a private AlphaFold-DB-style structure database."""
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


main.add_command(plan_command)
main.add_command(serve_command)
main.add_command(export_command)


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@DB_OPTION
@click.option("--model", type=click.Choice(sorted(PRESETS)), default="esmfold-tiny", show_default=True)
@click.option("--weights", help="Local weights folder or Hugging Face id (default: the model's own).")
@click.option("--max-length", type=int, default=2700, show_default=True, help="Longer sequences are fragmented.")
@click.option("--fragment-window", type=int, default=1400, show_default=True)
@click.option("--fragment-step", type=int, default=200, show_default=True)
@click.option("--batch-tokens", type=int,
              help="Cap on padded residues per model call (count x longest); batches are planned by the cost "
                   "model within the device's memory either way.")
@click.option("--shard-size", type=int, default=64, show_default=True, help="Unique sequences per shard, at most.")
@click.option("--num-recycles", type=int, default=4, show_default=True)
@click.option("--stem-precision", type=click.Choice(STEM_PRECISIONS), default="fp32", show_default=True,
              help="Language-model weights dtype.")
@click.option("--trunk-precision", type=click.Choice(TRUNK_PRECISIONS), default="fp32", show_default=True,
              help="Folding-trunk arithmetic; a protein with NaN/inf output is folded again in fp32.")
@click.option("--chunk-size", type=int, help="Force the trunk chunk size (default: by length).")
@click.option("--workers", type=int, help="Predictor actors (default: one per GPU, else one per 4 CPUs).")
@click.option("--gpus-per-worker", type=float, default=1.0, show_default=True,
              help="GPUs per predictor actor; fractions share a GPU.")
@click.option("--device", type=click.Choice(["auto", "cuda", "cpu"]), default="auto", show_default=True,
              help="auto: GPU workers if the cluster has GPUs at start; cuda: always (lets an autoscaler add GPU nodes).")
@click.option("--address", help="Ray cluster address (default: start Ray in-process).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def build(inputs, db, model, weights, max_length, fragment_window, fragment_step, batch_tokens, shard_size,
          num_recycles, stem_precision, trunk_precision, chunk_size, workers, gpus_per_worker, device, address,
          no_progress) -> None:
    """Predict every protein of the FASTA INPUTS (plain or gzip) into the database; re-runs resume."""
    # Imported here: torch, transformers and Ray take seconds to import, and only `build` needs them.
    from jobs.build_job import BuildRequest, run_build
    from jobs.runner import BuildError, RunnerSettings
    from models.esmfold import EsmFoldSettings, default_device
    from pipelines.build import BuildSettings
    from pipelines.ingest import IngestSettings

    try:
        request = BuildRequest(
            inputs=tuple(inputs),
            db=db,
            model=model,
            weights=weights,
            model_settings=EsmFoldSettings(num_recycles=num_recycles, stem_precision=stem_precision,
                                           trunk_precision=trunk_precision, chunk_size=chunk_size,
                                           device=default_device()),
            build_settings=BuildSettings(
                ingest=IngestSettings(max_length=max_length, fragment_window=fragment_window,
                                      fragment_step=fragment_step),
                batch_tokens=batch_tokens,
                shard_size=shard_size,
            ),
            runner=RunnerSettings(address=address, workers=workers, gpus_per_worker=gpus_per_worker, device=device,
                                  progress=not no_progress),
        )
        report = run_build(request)
    except (ValueError, FileNotFoundError, DatabaseLockedError, BuildError) as error:
        raise click.ClickException(str(error)) from error
    click.echo(output.build_summary(report), err=True)


@main.command()
@DB_OPTION
@click.option("--format", "fmt", type=click.Choice(output.SQL_FORMATS), default="table", show_default=True)
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False, path_type=Path), help="Write to a file.")
@click.argument("query")
def sql(db, fmt, out, query) -> None:
    """Run a read-only SQL QUERY over the catalog (tables: entries, residues, files, failures, builds)."""
    try:
        table = catalog.query(DatabaseLayout(db), query)
    except (duckdb.Error, FileNotFoundError) as error:
        raise click.ClickException(str(error).strip()) from error
    output.write_table(table, fmt, out)


@main.command()
@DB_OPTION
@click.option("--format", "kind", type=click.Choice(DOWNLOAD_KINDS), default="cif", show_default=True,
              help="pdb: the model in PDB format, converted from the stored mmCIF.")
@click.option("-o", "--output", "out", type=click.Path(path_type=Path),
              help="File to write, or a folder to write the AFDB-named file into (default: stdout).")
@click.argument("identifier", metavar="ID")
def get(db, kind, out, identifier) -> None:
    """Print or save one entry's file. ID is an entryId (SM-P12345-F1) or an accession (P12345)."""
    try:
        stored = read_entry_file(DatabaseLayout(db), identifier, kind)
    except AmbiguousEntryError as error:
        click.echo(f"Error: {error}", err=True)
        sys.exit(2)
    except (EntryNotFoundError, FileNotFoundError, duckdb.Error) as error:
        raise click.ClickException(str(error)) from error
    if out is None:
        sys.stdout.buffer.write(stored.data)
        return
    target = out / stored.file_name if out.is_dir() else out
    target.write_bytes(stored.data)
    click.echo(f"wrote {target} ({len(stored.data):,} bytes)", err=True)


@main.command()
@DB_OPTION
def status(db) -> None:
    """Builds, counts, and failures by reason."""
    layout = DatabaseLayout(db)
    try:
        click.echo(output.status_text(layout))
    except (duckdb.Error, FileNotFoundError) as error:
        raise click.ClickException(str(error).strip()) from error


@main.command(context_settings={"allow_interspersed_args": False})
@click.option("--address", required=True, help="The Ray cluster's dashboard URL, e.g. http://HEAD:8265.")
@click.option("--wait", is_flag=True, help="Stream the job's logs (stderr) until it ends; exit 0 only if it succeeded.")
@click.option("--status", "status_id", metavar="JOB_ID", help="Print a job's status and message.")
@click.option("--stop", "stop_id", metavar="JOB_ID", help="Stop a job and print its final status.")
@click.option("--logs", "logs_id", metavar="JOB_ID", help="Print a job's logs.")
@click.argument("build_args", nargs=-1, type=click.UNPROCESSED, metavar="-- build INPUT... --db DIR ...")
def submit(address, wait, status_id, stop_id, logs_id, build_args) -> None:
    """Run `structome build` on a Ray cluster as a job (Ray Jobs API); print the job id.

    Inputs and --db must be on storage every node sees at the same path; relative paths are made absolute.
    """
    # Imported here: Ray's job client takes a second to import, and only `submit` needs it.
    from jobs.submit import SubmitError, connect, follow_job, job_logs, job_state, prepare_build, stop_job, submit_build

    queries = sum(1 for value in (status_id, stop_id, logs_id) if value)
    if queries > 1 or (queries and (build_args or wait)) or not (queries or build_args):
        raise click.UsageError("give one of --status, --stop, --logs JOB_ID, or `-- build ...` to submit a build")
    state = None
    try:
        job = prepare_build(build_args, build) if build_args else None
        client = connect(address)
        if status_id or stop_id:
            click.echo(job_state(client, status_id) if status_id else stop_job(client, stop_id))
        elif logs_id:
            click.echo(job_logs(client, logs_id), nl=False)
        else:
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


if __name__ == "__main__":
    main()
