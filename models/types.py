"""Records shared by every layer: what to predict, what a predictor returns, what failed.

Only numpy and the standard library here: `storage` may import this module and nothing else of `models`. numpy
is imported where an array is checked, not with the module: `structome get` and `sql` use the enums and never
pay its ~75 ms.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

# AlphaFold2 residue order, which is also ESMFold's input vocabulary (index 20 = X, unknown).
STANDARD_RESIDUES = "ARNDCQEGHILKMFPSTWYV"
# Precision policies: the language-model stem's weights dtype, and the folding trunk's arithmetic (tf32: CUDA
# matmuls on TF32 tensor cores; bf16/fp16: autocast; a non-finite protein is folded again in fp32).
STEM_PRECISIONS = ("fp32", "fp16", "bf16")
TRUNK_PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
# Letters accepted in an input sequence: the 20 standard ones plus those fed to the model as X.
NONSTANDARD_RESIDUES = "UOBZJX"
ACCEPTED_RESIDUES = STANDARD_RESIDUES + NONSTANDARD_RESIDUES

PAE_MAX = 31.75  # Å; ESMFold's and AlphaFold's PAE head range, written into the PAE JSON


class Stage(StrEnum):
    """The pipeline stage a failure happened in (the failures table's `stage` column)."""

    INGEST = "ingest"
    PREDICT = "predict"
    WRITE = "write"


class FailureReason(StrEnum):
    """Why a record or entry did not become a stored prediction (the failures table's `reason` column)."""

    INVALID_HEADER = "invalid_header"  # ingest: no id or accession, or one too long for a file name
    INVALID_HEADER_FIELD = "invalid_header_field"  # ingest: a number (OX=, SV=, version) its column cannot hold
    COMMENT_IN_SEQUENCE = "comment_in_sequence"  # ingest: a ";" line after the record's first sequence line
    NUCLEOTIDE_SEQUENCE = "nucleotide_sequence"  # ingest: only A, C, G, T, U, N: DNA or RNA, not protein
    EMPTY_SEQUENCE = "empty_sequence"  # ingest: no residues
    INVALID_CHARACTER = "invalid_character"  # ingest: a letter outside ACCEPTED_RESIDUES
    INTERNAL_STOP = "internal_stop"  # ingest: "*" before the end
    DUPLICATE_RECORD = "duplicate_record"  # ingest: same entry id, accession and sequence as an earlier record
    DUPLICATE_ID = "duplicate_id"  # ingest: same entry id, another sequence or accession
    CONFLICTS_WITH_DATABASE = "conflicts_with_database"  # ingest: the entry is stored with another prediction
    OUT_OF_MEMORY = "out_of_memory"  # predict: even alone with the smallest chunk
    NON_FINITE_OUTPUT = "non_finite_output"  # predict: NaN or inf, also in fp32
    WORKER_FAILED = "worker_failed"  # predict: the shard's worker died on every attempt
    DEADLINE_EXCEEDED = "deadline_exceeded"  # predict: the shard's worker hung past its deadline, the last attempt
    WRITE_ERROR = "write_error"  # write: the entry's files could not be rendered


class FileKind(StrEnum):
    """The stored files of an entry (the files table's `kind` column)."""

    CIF = "cif"  # ModelCIF model
    PAE = "pae"  # AFDB PAE JSON
    CONFIDENCE = "confidence"  # AFDB per-residue confidence JSON


class NonFiniteOutputError(ValueError):
    """A predictor produced NaN or infinite values (e.g. an fp16 trunk overflowing)."""


@dataclass(frozen=True)
class NonFiniteOutput:
    """One protein's result when its output held NaN or infinite values: an error as a value, so that the other
    proteins of its batch keep their predictions and only this one is folded again."""

    prediction_id: str
    message: str


def to_model_alphabet(sequence: str) -> str:
    """The sequence as a predictor sees it: every non-standard letter becomes X."""
    return sequence.translate(_TO_X)


_TO_X = str.maketrans({letter: "X" for letter in NONSTANDARD_RESIDUES})


@dataclass(frozen=True)
class EsmFoldSettings:
    """Run-time choices that do not change the weights."""

    num_recycles: int = 4  # ESMFold v1 was trained with 4
    stem_precision: str = "fp32"  # language model: fp32, fp16 or bf16
    trunk_precision: str = "fp32"  # folding trunk: fp32, tf32 (CUDA matmuls), bf16 or fp16 (overflows: see below)
    chunk_size: int | None = None  # trunk chunk size; None = chosen by length per batch
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.stem_precision not in STEM_PRECISIONS:
            raise ValueError(f"stem precision must be one of {STEM_PRECISIONS}, got {self.stem_precision!r}")
        if self.trunk_precision not in TRUNK_PRECISIONS:
            raise ValueError(f"trunk precision must be one of {TRUNK_PRECISIONS}, got {self.trunk_precision!r}")
        if self.num_recycles < 0:
            raise ValueError("num_recycles must be >= 0")


@dataclass(frozen=True)
class Entry:
    """One structure to write: a whole protein (F1) or one window of a long one (F2, F3 ...)."""

    entry_id: str  # e.g. "SM-P12345-F1"; unique in a database
    record_id: str  # the FASTA record's id (first header token)
    source_file: str  # the FASTA file it came from: its path as given, made absolute
    accession: str  # UniProt accession, or the record id for non-UniProt headers
    sequence: str  # the whole input sequence, uppercase, stop removed; as written (U, O, B, Z, J, X kept)
    fragment: int  # 1-based fragment number
    start: int  # 1-based first residue of `sequence` covered by this entry
    end: int  # 1-based last residue, inclusive
    sequence_checksum: str  # UniProt CRC64 of `sequence`, 16 upper-case hex digits
    sequence_md5: str  # MD5 hex of `sequence`
    prediction_id: str  # content address of the fragment's prediction (fragment MD5 + model settings)
    record_number: int = 0  # 1-based position of the record in its file (record ids may repeat)
    entry_name: str = ""  # UniProt entry name (e.g. "TRAP_ECOLI"); "" when unknown
    database: str = ""  # "sp", "tr" or "" (not UniProt)
    description: str = ""
    organism: str = ""
    tax_id: int | None = None
    gene: str = ""
    sequence_version: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.start <= self.end <= len(self.sequence):
            raise ValueError(f"{self.entry_id}: window {self.start}..{self.end} outside 1..{len(self.sequence)}")
        if self.fragment < 1:
            raise ValueError(f"{self.entry_id}: fragment numbers start at 1, got {self.fragment}")
        if len(self.sequence_checksum) != 16:
            raise ValueError(f"{self.entry_id}: CRC64 must be 16 hex digits, got {self.sequence_checksum!r}")

    @property
    def fragment_sequence(self) -> str:
        """The residues this entry covers, as written in the input."""
        return self.sequence[self.start - 1 : self.end]

    @property
    def length(self) -> int:
        return self.end - self.start + 1


@dataclass(frozen=True)
class Failure:
    """A row of the failure ledger: an input record (or entry) that did not become a stored prediction."""

    record_id: str
    source_file: str
    reason: FailureReason  # its code (plain strings are converted; an unknown one raises ValueError)
    message: str  # human-readable detail
    stage: Stage
    entry_id: str = ""  # set once the record had become an entry
    record_number: int = 0  # 1-based position of the record in its file (record ids may repeat)
    accession: str = ""  # parsed from the header (UniProt accession, else the record id); "" when it has none

    def __post_init__(self) -> None:
        object.__setattr__(self, "reason", FailureReason(self.reason))
        object.__setattr__(self, "stage", Stage(self.stage))


@dataclass(frozen=True)
class PredictionRequest:
    """One unique sequence to fold."""

    prediction_id: str
    sequence: str  # model alphabet: 20 standard letters and X

    def __post_init__(self) -> None:
        bad = set(self.sequence) - set(STANDARD_RESIDUES + "X")
        if bad or not self.sequence:
            raise ValueError(f"{self.prediction_id}: not a model-alphabet sequence (bad letters {sorted(bad)})")


@dataclass(frozen=True)
class Provenance:
    """How a prediction was made; written into every mmCIF file and `builds` row."""

    model: str  # "esmfold" or "esmfold-tiny"
    model_version: str  # e.g. "v1"
    weights: str  # local folder or hub id the weights were loaded from
    weights_sha256: str  # hash over the weight files
    untrained: bool  # True for random weights: the structures are not real predictions
    precision: str  # e.g. "stem=fp32,trunk=fp32"
    num_recycles: int
    chunk_size: int | None  # trunk chunk size; None = unchunked
    device: str
    library_versions: dict[str, str] = field(default_factory=dict)

    @property
    def description(self) -> str:
        """One line for humans, also used as the mmCIF model group name."""
        text = f"structome {self.model} {self.model_version}"
        return text + " (untrained random weights)" if self.untrained else text

    def settings_key(self) -> str:
        """The parameters that change the output; part of every prediction's content address."""
        return f"{self.model}|{self.weights_sha256}|{self.precision}|r{self.num_recycles}"

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True, eq=False)
class Prediction:
    """What a predictor returns for one sequence; only what is stored, never the pair state."""

    prediction_id: str
    sequence: str  # model alphabet, length L
    coords: np.ndarray  # [L, 37, 3] float32, Å, atom37 order
    atom_mask: np.ndarray  # [L, 37] bool, True where the atom exists
    plddt: np.ndarray  # [L] float32, 0-100 (CA value)
    ptm: float  # 0-1, computed on this sequence alone (never the padded batch)
    pae: np.ndarray  # [L, L] uint8, Å rounded to integers, 0..31

    def __post_init__(self) -> None:
        import numpy as np

        n = len(self.sequence)
        expected = {"coords": (n, 37, 3), "atom_mask": (n, 37), "plddt": (n,), "pae": (n, n)}
        for name, shape in expected.items():
            actual = getattr(self, name).shape
            if actual != shape:
                raise ValueError(f"{self.prediction_id}: {name} has shape {actual}, expected {shape}")
        if not np.isfinite(self.coords).all() or not np.isfinite(self.plddt).all() or not np.isfinite(self.ptm):
            raise NonFiniteOutputError(f"{self.prediction_id}: NaN or infinite values in the prediction")

    @property
    def mean_plddt(self) -> float:
        return float(self.plddt.mean())


PredictionResult = Prediction | NonFiniteOutput  # what a predictor returns per request
