"""UniProt CRC64 (single and numpy-batched) against Biopython, and MD5."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest
from Bio.SeqUtils.CheckSum import crc64 as bio_crc64

from structome.models.types import ACCEPTED_RESIDUES
from structome.pipelines.checksums import crc64_hex, crc64_many, md5_hex
from structome.pipelines.fasta import iter_fasta

DATA = Path(__file__).resolve().parents[1] / "data" / "fasta"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
ECOLI_2020 = SHARED / "uniprot" / "UP000000625_83333_ecoli_k12_2020.fasta"


def biopython(sequence: str) -> str:
    return bio_crc64(sequence).removeprefix("CRC-")


def trap_ecoli() -> str:
    (record,) = iter_fasta(DATA / "afdb_P41068_TRAP_ECOLI.fasta")
    return record.sequence_raw


def test_leading_zero_checksum_of_trap_ecoli() -> None:
    sequence = trap_ecoli()
    assert len(sequence) == 196
    assert crc64_hex(sequence) == "0197355516942160" == biopython(sequence)
    assert crc64_many([sequence]) == ["0197355516942160"]


@pytest.mark.parametrize(
    ("sequence", "expected"),
    [
        ("", "0000000000000000"),
        ("A", "6DB0000000000000"),
        ("ACGTACGTACGT", "C4FBB762C4A87EBD"),  # Biopython's docstring examples: case matters
        ("acgtACGTacgt", "DA4509DC64A87EBD"),
    ],
)
def test_known_values(sequence: str, expected: str) -> None:
    assert crc64_hex(sequence) == expected == biopython(sequence)
    assert crc64_many([sequence]) == [expected]


def test_many_matches_biopython_on_edge_lengths_and_keeps_order() -> None:
    rng = random.Random(7)
    lengths = [0, 1, 2, 7, 8, 9, 15, 16, 17, 63, 64, 65, 1400, 2701, 34350]
    lengths += [rng.randrange(0, 3000) for _ in range(300)]
    rng.shuffle(lengths)
    sequences = ["".join(rng.choice(ACCEPTED_RESIDUES) for _ in range(n)) for n in lengths]
    sequences += [trap_ecoli(), "", "M"]
    assert crc64_many(sequences) == [biopython(s) for s in sequences]
    assert crc64_many(sequences) == [crc64_hex(s) for s in sequences]


def test_many_of_nothing_and_of_identical_sequences() -> None:
    assert crc64_many([]) == []
    assert crc64_many(["MKV"] * 5) == [biopython("MKV")] * 5


def test_many_matches_biopython_on_the_ecoli_slice() -> None:
    sequences = [record.sequence_raw for record in iter_fasta(DATA / "ecoli_k12_2020_slice.fasta")]
    assert len(sequences) == 62
    assert crc64_many(sequences) == [biopython(s) for s in sequences]


def test_many_matches_biopython_on_the_whole_ecoli_2020_proteome() -> None:
    if not ECOLI_2020.exists():
        pytest.skip(f"{ECOLI_2020} not present")
    sequences = [record.sequence_raw for record in iter_fasta(ECOLI_2020)]
    assert len(sequences) == 4391
    assert crc64_many(sequences) == [biopython(s) for s in sequences]


def test_md5() -> None:
    assert md5_hex("") == "d41d8cd98f00b204e9800998ecf8427e"
    assert md5_hex("MKV") == hashlib.md5(b"MKV").hexdigest()


def test_non_ascii_is_rejected() -> None:
    with pytest.raises(ValueError):
        crc64_hex("MK\u00e9")
    with pytest.raises(ValueError):
        crc64_many(["MK\u00e9"])
    with pytest.raises(ValueError):
        md5_hex("MK\u00e9")
