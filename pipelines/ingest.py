"""Ingest: FASTA files -> validated, deduplicated, fragmented entries plus a failure ledger.

Every input record ends as exactly one of: one or more entries (F1, F2 ... for fragments of a long
sequence), or exactly one `Failure` (stage "ingest"). Checks, in this order, with their reason codes:
`invalid_header` (no id/accession), `empty_sequence` (nothing, or only "*"), `invalid_character` (first
bad character and its 1-based position), `internal_stop` ("*" anywhere but the very end, or "**" at the
end), then `duplicate_record` (same entry id, accession and sequence as an earlier record) or
`duplicate_id` (same entry id, different sequence or a different accession that sanitises the same).
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
from structome.pipelines.fasta import FastaRecord, iter_fasta
from structome.pipelines.settings import IngestSettings

logger = logging.getLogger(__name__)

_BATCH = 65536  # accepted records per crc64_many call
_BAD_CHARACTER = re.compile(f"[^{ACCEPTED_RESIDUES}*]")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


@dataclass(frozen=True)
class IngestResult:
    """Entries in input order, the ingest failure ledger, and how many records were read."""

    entries: tuple[Entry, ...]
    failures: tuple[Failure, ...]
    record_count: int

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


def clean_sequence(raw: str) -> str | Rejection:
    """Uppercase, drop one trailing stop "*"; or say why the sequence is rejected."""
    sequence = raw.translate(_ASCII_UPPER)
    if sequence in ("", "*"):
        return Rejection(FailureReason.EMPTY_SEQUENCE, "the record has no residues")
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
    """Read FASTA files (plain or gzip) into entries and ingest failures; ids are unique across all files."""
    if not model_key:
        raise ValueError("model_key must not be empty: it is part of every prediction_id")
    builder = _Builder(settings, model_key)
    for path in paths:
        before = builder.record_count
        builder.add_all(iter_fasta(path))
        logger.info("%s: %d records", os.fspath(path), builder.record_count - before)
    builder.flush()
    result = IngestResult(tuple(builder.entries), tuple(builder.failures), builder.record_count)
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
                record.record_id,
                record.source_file,
                accepted.reason,
                accepted.message,
                Stage.INGEST,
                record_number=number,
            )
            self.failures.append(failure)
            logger.debug("%s %s: %s", record.source_file, record.record_id, accepted.message)
            return
        self._pending.append(accepted)
        if len(self._pending) >= _BATCH:
            self.flush()

    def _accept(self, record: FastaRecord, number: int) -> _Accepted | Rejection:
        if not record.record_id or not record.accession:
            where = f"record {number} of {record.source_file}"
            return Rejection(FailureReason.INVALID_HEADER, f"{where} has no id in its header {record.header!r}")
        sequence = clean_sequence(record.sequence_raw)
        if isinstance(sequence, Rejection):
            return sequence
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
