"""Streaming FASTA reader: plain or gzip files -> `FastaRecord`s with UniProt, NCBI or bare headers parsed.

Biopython 1.88's record parsers do not fit, as tested on the installed version:
- "fasta" merges `;` comment lines into the sequence and raises ValueError on text before the first `>`;
- "fasta-pearson" drops both, but builds `Seq` objects, which raise UnicodeEncodeError on any non-ASCII byte.
So `Bio.SeqIO.FastaIO.SimpleFastaParser` (plain strings; skips text before the first `>`) reads the lines,
with `;` comment lines filtered out first. Bytes are decoded as UTF-8 with `surrogateescape`, so nothing
fails while reading; each header is then decoded as UTF-8, or as Latin-1 when that fails.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from Bio.SeqIO.FastaIO import SimpleFastaParser

logger = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"

# sp|P12345|NAME_ORG or tr|A0A0...|...; NCBI-style accessions carry a version: sp|Q99ZW2.1|CAS9_STRP1
_UNIPROT_ID = re.compile(r"(?P<db>sp|tr)\|(?P<accession>[^|]*)\|(?P<name>.*)")
_VERSIONED = re.compile(r"(?P<accession>.+)\.(?P<version>\d+)")
# UniProt keys in the description: OS= (organism), OX= (taxon), GN= (gene), PE=, SV= (sequence version)
_KEY = re.compile(r"(?:^|\s)(OS|OX|GN|PE|SV)=")


@dataclass(frozen=True)
class FastaRecord:
    """One FASTA record with its header parsed; the sequence is as written (only whitespace removed)."""

    record_id: str  # first header token, e.g. "sp|P12345|NAME_ORG"; "" when the header is empty
    source_file: str  # base name of the file it came from
    header: str  # header line without ">", decoded, surrounding whitespace stripped
    sequence_raw: str  # residues as written: case, "*" and invalid characters kept, whitespace removed
    database: str = ""  # "sp", "tr" or "" (not a UniProt header)
    accession: str = ""  # UniProt accession without version; the record id for other headers
    entry_name: str = ""  # UniProt entry name, e.g. "TRAP_ECOLI"
    description: str = ""  # header text after the id, without the UniProt KEY=value fields
    organism: str = ""  # OS=
    tax_id: int | None = None  # OX=
    gene: str = ""  # GN=
    sequence_version: int | None = None  # SV=, else the ".N" of a versioned accession


def is_gzip(path: str | os.PathLike) -> bool:
    """True when the file starts with the gzip magic bytes (the extension is ignored)."""
    with open(path, "rb") as handle:
        return handle.read(2) == GZIP_MAGIC


@contextlib.contextmanager
def open_text(path: str | os.PathLike) -> Iterator[TextIO]:
    """Open a plain or gzip file as text: UTF-8 (BOM dropped), undecodable bytes kept as surrogates."""
    opener = gzip.open if is_gzip(path) else open
    with opener(path, "rb") as binary:
        text = io.TextIOWrapper(binary, encoding="utf-8-sig", errors="surrogateescape", newline=None)
        try:
            yield text
        finally:
            text.detach()  # `binary` is closed by its own context manager


def iter_fasta(path: str | os.PathLike) -> Iterator[FastaRecord]:
    """Yield the records of one FASTA file one at a time (the file is never held in memory)."""
    source_file = Path(path).name
    with open_text(path) as text:
        for title, sequence in SimpleFastaParser(_record_lines(text, source_file)):
            yield parse_header(_decode_header(title), source_file=source_file, sequence_raw="".join(sequence.split()))


def _record_lines(text: TextIO, source_file: str) -> Iterator[str]:
    """The file's lines without `;` comment lines; warns about text before the first header."""
    skipped = 0
    for line in text:
        if line.startswith(">"):
            yield line
            break
        if line.strip() and not line.startswith(";"):
            skipped += 1
    if skipped:
        logger.warning("%s: ignored %d line(s) of text before the first '>' header", source_file, skipped)
    for line in text:
        if not line.startswith(";"):
            yield line


def _decode_header(title: str) -> str:
    """Re-decode a header read with surrogateescape: UTF-8 if valid, else Latin-1."""
    if title.isascii():
        return title.strip()
    raw = title.encode("utf-8", "surrogateescape")
    try:
        return raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        logger.debug("header is not UTF-8, decoded as Latin-1: %r", raw[:80])
        return raw.decode("latin-1").strip()


def parse_header(header: str, *, source_file: str = "", sequence_raw: str = "") -> FastaRecord:
    """Parse a header line (without ">") into a FastaRecord: UniProt (sp|/tr|), NCBI-versioned or bare."""
    header = header.strip()
    record_id, rest = (header.split(None, 1) + ["", ""])[:2] if header else ("", "")
    uniprot = _UNIPROT_ID.fullmatch(record_id)
    if uniprot is None:  # bare header: the first token is both id and accession
        return FastaRecord(record_id, source_file, header, sequence_raw, accession=record_id, description=rest)
    fields = _uniprot_fields(rest)
    accession, version = _split_version(uniprot["accession"])
    return FastaRecord(
        record_id=record_id,
        source_file=source_file,
        header=header,
        sequence_raw=sequence_raw,
        database=uniprot["db"],
        accession=accession,
        entry_name=uniprot["name"],
        description=fields.get("", ""),
        organism=fields.get("OS", ""),
        tax_id=_to_int(fields.get("OX")),
        gene=fields.get("GN", ""),
        sequence_version=version if fields.get("SV") is None else _to_int(fields["SV"]),
    )


def _uniprot_fields(text: str) -> dict[str, str]:
    """Split 'Desc OS=Org name (strain X) OX=1 GN=g PE=1 SV=2' into {"": desc, "OS": ..., ...}."""
    matches = list(_KEY.finditer(text))
    fields = {"": text[: matches[0].start()].strip() if matches else text.strip()}
    for match, following in zip(matches, [*matches[1:], None], strict=False):  # no match: nothing to pair
        end = following.start() if following else len(text)
        fields.setdefault(match.group(1), text[match.end() : end].strip())
    return fields


def _split_version(accession: str) -> tuple[str, int | None]:
    """'Q99ZW2.1' -> ('Q99ZW2', 1); an unversioned accession is returned unchanged."""
    match = _VERSIONED.fullmatch(accession)
    return (match["accession"], int(match["version"])) if match else (accession, None)


def _to_int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None
