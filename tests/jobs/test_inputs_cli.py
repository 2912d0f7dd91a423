"""What `build` and `plan` do with inputs that are no protein FASTA, and with streams: a one-line error naming the
file, in seconds (before the model, Ray or a database folder), and a pipe read from its first byte."""

from __future__ import annotations

import gzip
import json
import os
import threading
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from structome.jobs.cli.build import build_command
from structome.jobs.cli.plan import plan_command


@click.group()
def cli() -> None:
    """A throwaway group: structome.jobs.cli registers the same commands."""


cli.add_command(build_command)
cli.add_command(plan_command)


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"", "holds no FASTA record"),
        (b"a text file\nwithout any header\n", "holds no FASTA record"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64), "is a PNG image, not FASTA text"),
        (gzip.compress(b"PK\x03\x04" + bytes(64)), "is a ZIP archive, not FASTA text"),
    ],
    ids=["empty", "text", "png", "zip-in-gzip"],
)
def test_build_refuses_an_input_that_is_no_fasta_before_anything_starts(tmp_path: Path, content: bytes, said: str):
    path = tmp_path / "proteins.fasta"
    path.write_bytes(content)
    result = CliRunner().invoke(cli, ["build", str(path), "--db", str(tmp_path / "db")])
    assert result.exit_code == 1 and f"Error: {path} {said}" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "db").exists()  # refused before a database (or the model, or Ray) was made


def test_plan_refuses_an_empty_input_unless_allowed(tmp_path: Path):
    path = tmp_path / "empty.fasta"
    path.write_bytes(b"")
    refused = CliRunner().invoke(cli, ["plan", str(path)])
    assert refused.exit_code == 1 and f"{path} holds no FASTA record" in refused.output
    allowed = CliRunner().invoke(cli, ["plan", str(path), "--allow-empty", "--format", "json"])
    assert allowed.exit_code == 0 and json.loads(allowed.output)["records"] == 0


@pytest.mark.parametrize("compress", [lambda data: data, gzip.compress], ids=["plain", "gzip"])
def test_plan_reads_a_pipe_from_its_first_byte(data_dir: Path, compress):
    """`structome plan <(zcat x.gz)`: the gzip sniff opened the pipe first and lost its first 8 KiB."""
    content = compress((data_dir / "fasta" / "ecoli_k12_2020_slice.fasta").read_bytes())  # 62 records, 13 KB
    read_end, write_end = os.pipe()
    try:
        writer = threading.Thread(target=lambda: (os.write(write_end, content), os.close(write_end)))
        writer.start()
        result = CliRunner().invoke(cli, ["plan", f"/dev/fd/{read_end}", "--format", "json"])
        writer.join()
    finally:
        os.close(read_end)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["records"] == 62
