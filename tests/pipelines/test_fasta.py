"""FASTA reading (plain/gzip, awkward files) and header parsing."""

from __future__ import annotations

import inspect
import logging
import shutil
from pathlib import Path

import pytest

from structome.pipelines.fasta import FastaRecord, is_gzip, iter_fasta, parse_header

DATA = Path(__file__).resolve().parents[1] / "data" / "fasta"


def records(name: str | Path) -> list[FastaRecord]:
    return list(iter_fasta(DATA / name))


def write(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def test_iter_fasta_is_a_generator() -> None:
    stream = iter_fasta(DATA / "ecoli_k12_2020_slice.fasta")
    assert inspect.isgenerator(stream)
    first = next(stream)
    stream.close()  # closes the file early
    assert first.accession == "A0A385XJ53"


def test_ecoli_slice_uniprot_headers() -> None:
    slice_ = records("ecoli_k12_2020_slice.fasta")
    assert len(slice_) == 62
    first = slice_[0]
    assert first == FastaRecord(
        record_id="sp|A0A385XJ53|INSA9_ECOLI",
        source_file=str(DATA / "ecoli_k12_2020_slice.fasta"),  # inputs are identified by full path
        header="sp|A0A385XJ53|INSA9_ECOLI Insertion element IS1 9 protein InsA OS=Escherichia coli (strain K12) "
        "OX=83333 GN=insA9 PE=3 SV=1",
        sequence_raw="MASVSISCPSCSATDGVVRNGKSTAGHQRYLCSHCRKTWQLQFTYTASQPGTHQKIIDMAMNGVGCRATARIMGVGLNTILRHLKNSGRSR",
        database="sp",
        accession="A0A385XJ53",
        entry_name="INSA9_ECOLI",
        description="Insertion element IS1 9 protein InsA",
        organism="Escherichia coli (strain K12)",
        tax_id=83333,
        gene="insA9",
        sequence_version=1,
    )
    by_accession = {record.accession: record for record in slice_}
    assert "U" in by_accession["P07658"].sequence_raw
    assert "X" in by_accession["P33369"].sequence_raw
    assert by_accession["P07658"].sequence_version == 2
    assert all(record.tax_id == 83333 and record.gene for record in slice_)


def test_gzip_is_detected_by_magic_bytes_not_extension(tmp_path: Path) -> None:
    gz_named_plain = shutil.copy(DATA / "ecoli_slice.fasta.gz", tmp_path / "looks_plain.fasta")
    plain_named_gz = shutil.copy(DATA / "biotite_prot.fasta", tmp_path / "looks_gzipped.fasta.gz")
    assert is_gzip(gz_named_plain) and not is_gzip(plain_named_gz)
    from_gz = list(iter_fasta(gz_named_plain))
    assert [r.sequence_raw for r in from_gz] == [r.sequence_raw for r in records("ecoli_k12_2020_slice.fasta")[:5]]
    assert from_gz[0].source_file == str(tmp_path / "looks_plain.fasta")
    assert [r.sequence_raw for r in iter_fasta(plain_named_gz)] == ["YAHUGFRTGS"]


def test_semicolon_comment_line_is_not_sequence() -> None:
    (query,) = records("biotite_selenocysteine.fasta")
    assert query.record_id == query.accession == "Query"
    assert query.sequence_raw.startswith("MHGEKYYSAC")
    assert len(query.sequence_raw) == 792
    assert ";" not in query.sequence_raw and "NCBI" not in query.sequence_raw
    assert query.sequence_raw.isalpha() and query.sequence_raw.isupper()


def test_trailing_space_in_header_and_blank_line() -> None:
    (protein,) = records("biotite_prot.fasta")
    assert protein.record_id == "protein"
    assert protein.header == "protein sequence, only a test"
    assert protein.description == "sequence, only a test"
    assert protein.sequence_raw == "YAHUGFRTGS"
    assert protein.database == "" and protein.tax_id is None


def test_ncbi_versioned_headers() -> None:
    cas9 = records("biotite_cas9.fasta")
    assert len(cas9) == 10
    assert [(r.accession, r.sequence_version) for r in cas9[:4]] == [
        ("Q99ZW2", 1),
        ("Q8DTE3", 1),
        ("Q03JI6", 1),
        ("G3ECR1", 2),
    ]
    first = cas9[0]
    assert first.record_id == "sp|Q99ZW2.1|CAS9_STRP1"
    assert first.entry_name == "CAS9_STRP1" and first.database == "sp"
    assert first.description.startswith("RecName: Full=CRISPR-associated endonuclease Cas9/Csn1; AltName:")
    assert first.organism == "" and first.tax_id is None
    assert len(first.sequence_raw) == 1368


def test_truncated_uniprot_headers_and_no_trailing_newline() -> None:
    esm = records("ESMFoldApp_test_proteins.fasta")
    assert [r.accession for r in esm] == ["P69905", "P00441", "P02769", "P00698", "test_short_peptide"]
    hba = esm[0]
    assert (hba.entry_name, hba.description, hba.organism, hba.tax_id) == (
        "HBA_HUMAN",
        "Hemoglobin subunit alpha",
        "",
        None,
    )
    assert len(hba.sequence_raw) == 142
    last = esm[-1]
    assert last.database == "" and last.description == "Short test peptide"
    assert last.sequence_raw.endswith("KNWFVGLKKNGSCKRGPRTHYGQKAILFLPLPV")  # the unterminated last line


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            "sp|P12345|NAME_ORG Desc text OS=Organism name (strain X / Y-1) OX=83333 GN=abc PE=1 SV=2",
            dict(
                database="sp",
                accession="P12345",
                entry_name="NAME_ORG",
                description="Desc text",
                organism="Organism name (strain X / Y-1)",
                tax_id=83333,
                gene="abc",
                sequence_version=2,
            ),
        ),
        (
            "tr|A0A1A9JD45|A0A1A9JD45_9PSED Uncharacterized protein OS=Pseudomonas koreensis OX=198620 PE=4 SV=1",
            dict(
                database="tr",
                accession="A0A1A9JD45",
                entry_name="A0A1A9JD45_9PSED",
                description="Uncharacterized protein",
                organism="Pseudomonas koreensis",
                tax_id=198620,
                gene="",
                sequence_version=1,
            ),
        ),
        (
            "sp|P69905|HBA_HUMAN Hemoglobin subunit alpha",
            dict(
                database="sp",
                accession="P69905",
                description="Hemoglobin subunit alpha",
                tax_id=None,
                sequence_version=None,
            ),
        ),
        (
            "sp|Q99ZW2.1|CAS9_STRP1 RecName: Full=CRISPR-associated endonuclease Cas9",
            dict(
                database="sp",
                accession="Q99ZW2",
                sequence_version=1,
                description="RecName: Full=CRISPR-associated endonuclease Cas9",
            ),
        ),
        ("my_id free text", dict(record_id="my_id", accession="my_id", database="", description="free text")),
        ("lonely", dict(record_id="lonely", accession="lonely", description="")),
        ("", dict(record_id="", accession="")),
        ("sp||NO_ACCESSION", dict(record_id="sp||NO_ACCESSION", database="sp", accession="")),
    ],
)
def test_parse_header(header: str, expected: dict) -> None:
    record = parse_header(header)
    for field, value in expected.items():
        assert getattr(record, field) == value, field
    if expected.get("database"):
        assert record.record_id == header.split()[0]


def test_latin1_and_utf8_headers(tmp_path: Path) -> None:
    path = write(tmp_path, "mixed.fasta", b">latin caf\xe9\nMKV\n>utf8 caf\xc3\xa9\nMKV\n")
    latin, utf8 = iter_fasta(path)
    assert latin.description == "caf\u00e9" == utf8.description


def test_crlf_blank_lines_and_whitespace_inside_lines() -> None:
    awkward = records("awkward.fasta")
    first, lower = awkward[0], awkward[1]
    assert first.header.endswith("SV=2") and "\r" not in first.header
    assert first.sequence_version == 2 and first.tax_id == 83333
    assert first.sequence_raw == "MKTAYIAKQRQISFVK"
    assert lower.sequence_raw == "mktayiakqrqisfvk"  # case kept as written; ingest uppercases
    assert awkward[-1].sequence_raw == "MKVL."  # last line without a newline


def test_text_before_first_header_is_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, "preamble.fasta", b"some notes\n\n;comment\n>a\n;comment before the sequence\nMK\nVL\n")
    with caplog.at_level(logging.WARNING, logger="structome.pipelines.fasta"):
        (record,) = iter_fasta(path)
    assert (record.record_id, record.sequence_raw) == ("a", "MKVL")
    assert "ignored 1 line" in caplog.text


def test_bom_empty_file_and_non_ascii_sequence(tmp_path: Path) -> None:
    (bom,) = iter_fasta(write(tmp_path, "bom.fasta", b"\xef\xbb\xbf>a\nMK\n"))
    assert bom.record_id == "a"
    assert list(iter_fasta(write(tmp_path, "empty.fasta", b""))) == []
    (odd,) = iter_fasta(write(tmp_path, "odd.fasta", b">odd\nMK\xe9V\n"))
    assert odd.sequence_raw.startswith("MK") and len(odd.sequence_raw) == 4  # kept for ingest to reject
