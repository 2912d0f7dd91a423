"""Ingest: FASTA files -> validated, deduplicated, fragmented entries plus a failure ledger.

Every input record ends as exactly one of: one or more entries (F1, F2 ... for fragments of a long
sequence), or exactly one `Failure` (stage "ingest"); no record, however malformed, fails more than itself.
Checks, in this order, with their reason codes: `invalid_header` (no id/accession, or one too long for a file
name), `invalid_header_field` (a number its schema column cannot hold, e.g. SV=2147483648 or OX=²),
`empty_sequence` (nothing, or only "*"), `comment_in_sequence` (a ";" line after a sequence line),
`invalid_character` (first bad character and its 1-based position), `internal_stop` ("*" anywhere but the very
end, or "**" at the end), `nucleotide_sequence` (only A, C, G, T, U and N), then `duplicate_record` (same entry
id, accession and sequence as an earlier record) or `duplicate_id` (same entry id, different sequence or a
different accession that sanitises the same).

A whole input is refused (InputError, naming it) when it cannot be read as FASTA, when it holds no record (unless
`IngestSettings.allow_empty`), or when every one of its records looks like nucleotide sequence. The same file given
twice is read once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from structome.models.types import (
    ACCEPTED_RESIDUES,
    Entry,
    Failure,
    FailureReason,
    PredictionRequest,
    Stage,
    to_model_alphabet,
)
from structome.pipelines.checksums import crc64_many, md5_hex
from structome.pipelines.fasta import FastaRecord, InputError, iter_fasta, no_record_error, source_path
from structome.pipelines.settings import IngestSettings

logger = logging.getLogger(__name__)

_BATCH = 65536  # accepted records per crc64_many call
_BAD_CHARACTER = re.compile(f"[^{ACCEPTED_RESIDUES}*]")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
MAX_ACCESSION = 120  # characters: "<prefix>-<accession>-F<n>-predicted_aligned_error_v<k>.json" fits 255 bytes
MAX_RECORD_ID = 1000  # characters of the first header token
NUCLEOTIDE_LETTERS = "ACGTUN"
MIN_NUCLEOTIDE_LENGTH = 20  # shorter sequences of those letters may be peptides


@dataclass(frozen=True)
class InputFile:
    """One input as read: its absolute path, the SHA-256 of its bytes as stored (compressed or not), its records."""

    path: str
    sha256: str
    records: int


@dataclass(frozen=True)
class IngestResult:
    """Entries in input order, the ingest failure ledger, and how many records were read."""

    entries: tuple[Entry, ...]
    failures: tuple[Failure, ...]
    record_count: int
    inputs: tuple[InputFile, ...] = ()

    def __post_init__(self) -> None:
        if self.record_count != self.records_with_entries + len(self.failures):
            raise ValueError(
                f"{self.record_count} records but {self.records_with_entries} with entries "
                f"+ {len(self.failures)} failures"
            )

    @property
    def records_with_entries(self) -> int:
        """Records that became entries (each has exactly one F1)."""
        return sum(1 for entry in self.entries if entry.fragment == 1)

    def requests(self) -> tuple[PredictionRequest, ...]:
        """One request per distinct prediction_id, in order of first appearance among the entries."""
        unique: dict[str, PredictionRequest] = {}
        for entry in self.entries:
            if entry.prediction_id not in unique:
                unique[entry.prediction_id] = PredictionRequest(
                    entry.prediction_id, to_model_alphabet(entry.fragment_sequence)
                )
        return tuple(unique.values())


@dataclass(frozen=True)
class Rejection:
    """Why a record cannot become an entry."""

    reason: FailureReason
    message: str


def sanitize_accession(accession: str) -> str:
    """Make an accession safe inside a file name: keep [A-Za-z0-9._-], replace anything else with "_"."""
    return _UNSAFE.sub("_", accession)


def prediction_id(model_key: str, fragment_sequence: str) -> str:
    """Content address of a fragment's prediction: MD5 of the model key and the model-alphabet sequence."""
    return hashlib.md5(f"{model_key}\n{to_model_alphabet(fragment_sequence)}".encode()).hexdigest()


def fragment_windows(length: int, settings: IngestSettings) -> list[tuple[int, int]]:
    """1-based inclusive (start, end) windows; one window 1..L when L <= max_length."""
    window, step = settings.fragment_window, settings.fragment_step
    if length <= settings.max_length:
        return [(1, length)]
    windows = [(start, start + window - 1) for start in range(1, length - window + 2, step)]
    if windows[-1][1] < length:  # the last window ends exactly at the sequence end
        windows.append((length - window + 1, length))
    return windows


def header_rejection(record: FastaRecord, number: int) -> Rejection | None:
    """Why the record's header cannot be stored, or None: no id, an id too long for file names, a bad number."""
    where = f"record {number} of {record.source_file}"
    if not record.record_id or not record.accession:
        return Rejection(FailureReason.INVALID_HEADER, f"{where} has no id in its header {record.header[:200]!r}")
    if len(record.accession) > MAX_ACCESSION or len(record.record_id) > MAX_RECORD_ID:
        return Rejection(
            FailureReason.INVALID_HEADER,
            f"{where}: accession of {len(record.accession)} characters or id of {len(record.record_id)} "
            f"(at most {MAX_ACCESSION} and {MAX_RECORD_ID}: entry ids become file names)",
        )
    if record.header_problem:
        return Rejection(FailureReason.INVALID_HEADER_FIELD, f"{where}: {record.header_problem}")
    return None


def looks_like_nucleotides(sequence: str) -> bool:
    """A cleaned sequence long enough to tell, made only of A, C, G, T, U and N."""
    return len(sequence) >= MIN_NUCLEOTIDE_LENGTH and set(NUCLEOTIDE_LETTERS).issuperset(sequence)


def clean_sequence(raw: str) -> str | Rejection:
    """Uppercase, drop one trailing stop "*"; or say why the sequence is rejected."""
    sequence = raw.translate(_ASCII_UPPER)
    if sequence in ("", "*"):
        return Rejection(FailureReason.EMPTY_SEQUENCE, "the record has no residues")
    comment = sequence.find(";")
    if comment != -1:
        return Rejection(
            FailureReason.COMMENT_IN_SEQUENCE,
            f"a line starting with ';' after residue {comment}: ';' comments are read only before a record's "
            "first sequence line, and the record is not stored shorter than written",
        )
    bad = _BAD_CHARACTER.search(sequence)
    if bad:
        return Rejection(
            FailureReason.INVALID_CHARACTER, f"invalid character {bad.group()!r} at position {bad.start() + 1}"
        )
    stop = sequence.find("*")
    if stop != -1 and stop < len(sequence) - 1:
        return Rejection(FailureReason.INTERNAL_STOP, f"stop '*' at position {stop + 1} of {len(sequence)}")
    return sequence[:-1] if stop != -1 else sequence


def ingest(paths: Sequence[str | os.PathLike], settings: IngestSettings, model_key: str) -> IngestResult:
    """Read FASTA files or streams into entries and ingest failures; ids are unique across all files."""
    if not model_key:
        raise ValueError("model_key must not be empty: it is part of every prediction_id")
    builder = _Builder(settings, model_key)
    inputs = [_read_input(builder, path, settings) for path in _distinct_inputs(paths)]
    builder.flush()
    result = IngestResult(tuple(builder.entries), tuple(builder.failures), builder.record_count, tuple(inputs))
    reasons = Counter(failure.reason for failure in result.failures)
    logger.info(
        "ingest: %d records -> %d entries from %d records, %d failures %s",
        result.record_count,
        len(result.entries),
        result.records_with_entries,
        len(result.failures),
        dict(reasons),
    )
    return result


def _distinct_inputs(paths: Sequence[str | os.PathLike]) -> list[str | os.PathLike]:
    """The inputs without repeats of one file (the same path, or another path to it): each is read once."""
    distinct: list[str | os.PathLike] = []
    for path in paths:
        again = next((seen for seen in distinct if _same_file(seen, path)), None)
        if again is None:
            distinct.append(path)
        else:
            logger.warning("%s is given more than once (as %s): read once", source_path(again), os.fspath(path))
    return distinct


def _same_file(first: str | os.PathLike, second: str | os.PathLike) -> bool:
    try:
        return os.path.samefile(first, second)
    except OSError:  # one of them does not exist: reading it says so
        return False


def _read_input(builder: _Builder, path: str | os.PathLike, settings: IngestSettings) -> InputFile:
    """Add one input's records; refuse an input without records (unless allowed) or with only nucleotide ones."""
    name, digest = source_path(path), hashlib.sha256()
    records_before, failures_before = builder.record_count, len(builder.failures)
    try:
        builder.add_all(iter_fasta(path, digest))
    except FileNotFoundError as error:
        raise InputError(f"input {name} does not exist") from error
    except IsADirectoryError as error:
        raise InputError(f"input {name} is a folder, not a FASTA file") from error
    records = builder.record_count - records_before
    logger.info("%s: %d records", name, records)
    if records == 0 and not settings.allow_empty:
        raise no_record_error(name)
    nucleotide = sum(f.reason == FailureReason.NUCLEOTIDE_SEQUENCE for f in builder.failures[failures_before:])
    if records and nucleotide == records:
        raise InputError(
            f"{name}: all {records} record(s) look like nucleotide sequences (only the letters "
            f"{NUCLEOTIDE_LETTERS}): structome folds proteins; translate them first"
        )
    return InputFile(name, digest.hexdigest(), records)


@dataclass(frozen=True)
class _Accepted:
    record: FastaRecord
    sequence: str  # cleaned
    sequence_md5: str
    base_id: str  # "<prefix>-<sanitised accession>"
    number: int  # 1-based position in its file


class _Builder:
    """Accumulates entries and failures; checksums are computed in batches with crc64_many."""

    def __init__(self, settings: IngestSettings, model_key: str) -> None:
        self.settings = settings
        self.model_key = model_key
        self.entries: list[Entry] = []
        self.failures: list[Failure] = []
        self.record_count = 0
        self._seen: dict[str, tuple[str, str, str, str]] = {}  # base id -> accession, md5, record id, file
        self._pending: list[_Accepted] = []

    def add_all(self, records: Iterable[FastaRecord]) -> None:
        for number, record in enumerate(records, start=1):
            self.add(record, number)

    def add(self, record: FastaRecord, number: int) -> None:
        """Add the `number`-th (1-based) record of its file."""
        self.record_count += 1
        accepted = self._accept(record, number)
        if isinstance(accepted, Rejection):
            failure = Failure(
                record.record_id[:MAX_RECORD_ID],  # a refused id of megabytes is known by its file and number too
                record.source_file,
                accepted.reason,
                accepted.message,
                Stage.INGEST,
                record_number=number,
                accession=record.accession[:MAX_ACCESSION],
            )
            self.failures.append(failure)
            logger.debug("%s %s: %s", record.source_file, record.record_id, accepted.message)
            return
        self._pending.append(accepted)
        if len(self._pending) >= _BATCH:
            self.flush()

    def _accept(self, record: FastaRecord, number: int) -> _Accepted | Rejection:
        header = header_rejection(record, number)
        if header is not None:
            return header
        sequence = clean_sequence(record.sequence_raw)
        if isinstance(sequence, Rejection):
            return sequence
        if looks_like_nucleotides(sequence):
            return Rejection(
                FailureReason.NUCLEOTIDE_SEQUENCE,
                f"only the letters {NUCLEOTIDE_LETTERS} in {len(sequence)} residues: "
                "a DNA or RNA sequence, not a protein",
            )
        base_id = f"{self.settings.entry_prefix}-{sanitize_accession(record.accession)}"
        accepted = _Accepted(record, sequence, md5_hex(sequence), base_id, number)
        return self._check_duplicate(accepted)

    def _check_duplicate(self, accepted: _Accepted) -> _Accepted | Rejection:
        first = self._seen.get(accepted.base_id)
        if first is None:
            record = accepted.record
            first = (record.accession, accepted.sequence_md5, record.record_id, record.source_file)
            self._seen[accepted.base_id] = first
            return accepted
        accession, md5, record_id, source_file = first
        where = f"{accepted.base_id} was first used by {record_id} in {source_file}"
        if (accession, md5) == (accepted.record.accession, accepted.sequence_md5):
            return Rejection(FailureReason.DUPLICATE_RECORD, f"same accession and sequence again: {where}")
        return Rejection(FailureReason.DUPLICATE_ID, f"entry id {where} with a different sequence or accession")

    def flush(self) -> None:
        """Compute the pending records' CRC64s in one batch and turn them into entries."""
        checksums = crc64_many([accepted.sequence for accepted in self._pending])
        for accepted, checksum in zip(self._pending, checksums, strict=True):
            self.entries.extend(_make_entries(accepted, checksum, self.settings, self.model_key))
        self._pending = []


def _make_entries(accepted: _Accepted, checksum: str, settings: IngestSettings, model_key: str) -> list[Entry]:
    """One entry per fragment window of the accepted record."""
    record, sequence = accepted.record, accepted.sequence
    return [
        Entry(
            entry_id=f"{accepted.base_id}-F{number}",
            record_id=record.record_id,
            source_file=record.source_file,
            accession=record.accession,
            sequence=sequence,
            fragment=number,
            start=start,
            end=end,
            sequence_checksum=checksum,
            sequence_md5=accepted.sequence_md5,
            prediction_id=prediction_id(model_key, sequence[start - 1 : end]),
            entry_name=record.entry_name,
            database=record.database,
            description=record.description,
            organism=record.organism,
            tax_id=record.tax_id,
            gene=record.gene,
            sequence_version=record.sequence_version,
            record_number=accepted.number,
        )
        for number, (start, end) in enumerate(fragment_windows(len(sequence), settings), start=1)
    ]
