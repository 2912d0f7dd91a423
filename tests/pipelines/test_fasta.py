"""FASTA reading (plain/gzip, awkward files) and header parsing."""

from __future__ import annotations

import bz2
import codecs
import functools
import gzip
import hashlib
import inspect
import logging
import lzma
import os
import re
import shutil
import threading
from pathlib import Path

import pyarrow as pa
import pytest

from structome.pipelines.fasta import (
    MAX_TEXT,
    FastaRecord,
    InputError,
    check_input,
    iter_fasta,
    parse_header,
)

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


# --- hostile inputs: compressions, encodings, binary data, streams, header fields ----------------------


def _zstd(data: bytes) -> bytes:
    return pa.compress(data, codec="zstd", asbytes=True)


SLICE = (DATA / "ecoli_k12_2020_slice.fasta").read_bytes()  # 62 records, 13 KB: more than one 8 KiB buffer


@pytest.mark.parametrize(
    "compress",
    [
        gzip.compress,
        bz2.compress,
        lzma.compress,
        _zstd,
        lambda data: gzip.compress(gzip.compress(data)),  # gzip inside gzip
        lambda data: bz2.compress(_zstd(data)),  # zstd inside bzip2
    ],
    ids=["gzip", "bzip2", "xz", "zstd", "gzip-in-gzip", "zstd-in-bzip2"],
)
def test_compressions_are_sniffed_by_magic_bytes(tmp_path: Path, compress) -> None:
    path = write(tmp_path, "proteins.fasta", compress(SLICE))  # the name says nothing
    assert [r.sequence_raw for r in iter_fasta(path)] == [r.sequence_raw for r in records("ecoli_k12_2020_slice.fasta")]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32", "utf-16-be", "utf-32-le", "utf-16-le-nobom"])
def test_utf16_and_utf32_are_decoded_by_byte_order_mark(tmp_path: Path, encoding: str) -> None:
    text = ">sp|P1|A_B caf\u00e9 OX=9606 SV=1\nMKV\nLA\n>bare\nMKT\n"
    if encoding == "utf-16-le-nobom":
        content = text.encode("utf-16-le")
    else:
        bom = {"utf-16-be": codecs.BOM_UTF16_BE, "utf-32-le": codecs.BOM_UTF32_LE}.get(encoding, b"")
        content = bom + text.encode(encoding)
    first, second = iter_fasta(write(tmp_path, "wide.fasta", content))
    assert (first.accession, first.description, first.tax_id, first.sequence_raw) == ("P1", "caf\u00e9", 9606, "MKVLA")
    assert (second.record_id, second.sequence_raw) == ("bare", "MKT")


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), "is a PNG image"),
        (b"PK\x03\x04\x14\x00" + bytes(40), "is a ZIP archive"),
        (gzip.compress(b"PK\x03\x04" + bytes(40)), "is a ZIP archive"),  # a zip inside gzip
        (b">a\nMKV\x00\x01\x02" + bytes(100), "is binary data"),
        (b"\x7fELF\x02\x01\x01" + bytes(100), "is binary data"),
        # five layers: it said "is gzip, not FASTA text", as if gzip were not read
        (
            functools.reduce(lambda data, _: gzip.compress(data), range(5), b">a\nMKV\n"),
            "is compressed more than 4 times",
        ),
    ],
)
def test_binary_and_archive_inputs_are_refused_naming_the_file(tmp_path: Path, content: bytes, said: str) -> None:
    path = write(tmp_path, "proteins.fasta", content)
    with pytest.raises(InputError, match=f"{re.escape(str(path))} {said}"):
        list(iter_fasta(path))
    with pytest.raises(InputError, match=said):
        check_input(path)  # what `build` runs before anything else, reading only the first bytes


@pytest.mark.parametrize(
    ("content", "what"),
    [
        (gzip.compress(SLICE)[:3000], "gzip"),  # truncated
        (gzip.compress(SLICE) + b"trailing garbage", "gzip"),
        (lzma.compress(SLICE)[:-40], "xz"),
        (_zstd(SLICE)[:2000], "zstd"),
    ],
    ids=["truncated-gzip", "gzip-trailing-garbage", "truncated-xz", "truncated-zstd"],
)
def test_damaged_compressed_input_names_file_and_byte_offset(tmp_path: Path, content: bytes, what: str) -> None:
    path = write(tmp_path, "broken.fasta.gz", content)
    with pytest.raises(InputError, match=rf"{re.escape(str(path))}: damaged or truncated {what} data near byte \d+"):
        list(iter_fasta(path))


@pytest.mark.parametrize("compress", [lambda data: data, gzip.compress], ids=["plain", "gzip"])
def test_a_pipe_is_read_once_from_its_first_byte(compress) -> None:
    """As `<(zcat x.gz)` gives it: /dev/fd/N of a pipe. Opening it again (to sniff) would lose what was read."""
    content = compress(SLICE)
    read_end, write_end = os.pipe()
    try:
        writer = threading.Thread(target=lambda: (os.write(write_end, content), os.close(write_end)))
        writer.start()
        streamed = list(iter_fasta(f"/dev/fd/{read_end}"))
        writer.join()
    finally:
        os.close(read_end)
    assert len(streamed) == 62 and streamed[0].accession == "A0A385XJ53"
    assert streamed[0].source_file == f"/dev/fd/{read_end}"


def test_a_fifo_is_read(tmp_path: Path) -> None:
    fifo = tmp_path / "proteins.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(SLICE))
    writer.start()
    streamed = list(iter_fasta(fifo))
    writer.join()
    assert len(streamed) == 62
    check_input(fifo)  # a stream is not opened before the build reads it (that would consume it)


def test_digest_sees_the_bytes_as_stored(tmp_path: Path) -> None:
    compressed = gzip.compress(SLICE)
    digest = hashlib.sha256()
    assert len(list(iter_fasta(write(tmp_path, "x.gz", compressed), digest))) == 62
    assert digest.hexdigest() == hashlib.sha256(compressed).hexdigest()


def test_semicolon_line_inside_a_sequence_is_kept_for_ingest_to_refuse(tmp_path: Path) -> None:
    """A 90-residue record with a ';' line after 60 residues was stored with 60, silently."""
    sixty, thirty = "MKVLAAGIKQ" * 6, "ACDEFGHIKL" * 3
    path = write(tmp_path, "semi.fasta", f">a\n;old comment\n{sixty}\n;inside\n{thirty}\n>b\nMK\n".encode())
    inside, after = iter_fasta(path)
    assert inside.sequence_raw == f"{sixty};inside{thirty}"  # never shorter than written
    assert after.sequence_raw == "MK"


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        ("sp|P12345|A_B d OX=9606 SV=2147483648", "SV='2147483648' is not a whole number from 1 to 2147483647"),
        ("sp|P12345|A_B d OX=1234567890123456789012345 SV=1", "OX='1234567890123456789012345' is not a whole"),
        ("sp|P12345|A_B d OX=\u00b2 SV=1", "OX='\u00b2' is not a whole number"),
        ("sp|P12345|A_B d OX=\u0663 SV=1", "OX='\u0663' is not"),  # an Arabic-Indic digit: int() would take it
        ("sp|P12345|A_B d OX=0", "OX='0' is not"),
        ("sp|P12345.99999999999|A_B d", "accession version='99999999999' is not a whole number"),
        ("sp|P12345|A_B d SV=two", "SV='two' is not"),
        # over Python's 4,300-digit limit of int(str): int() raised ValueError and the whole ingest stopped
        (f"sp|P12345|A_B d OX={'9' * 5000}", "OX='999999999999999999999999999999... (5000 characters)' is not"),
        (f"sp|P12345.{'7' * 5000}|A_B d", "accession version='777777777777777777777777777777... (5000 char"),
    ],
)
def test_header_numbers_the_schema_cannot_hold_are_named(header: str, problem: str) -> None:
    record = parse_header(header)
    assert problem in record.header_problem
    assert record.accession == "P12345"


def test_largest_header_numbers_the_schema_holds_are_kept() -> None:
    record = parse_header(f"sp|P1|A_B d OX={2**63 - 1} SV={2**31 - 1}")
    assert (record.tax_id, record.sequence_version, record.header_problem) == (2**63 - 1, 2**31 - 1, "")
    assert parse_header("sp|P1.7|A_B d OX= SV=").sequence_version is None  # empty fields: absent, as before
    assert parse_header(f"sp|P1|A_B d OX={'0' * 5000}9606").tax_id == 9606  # leading zeros are no digits too many


def test_long_header_text_is_cut_and_said(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, "long.fasta", f">sp|P1|A_B {'x' * 100_000} OS={'y' * 5000} OX=1\nMKV\n>ok\nMK\n".encode())
    with caplog.at_level(logging.WARNING, logger="structome.pipelines.fasta"):
        long, short = iter_fasta(path)
    assert len(long.description) == len(long.organism) == MAX_TEXT and long.description.endswith("...")
    assert long.truncated and not short.truncated and long.tax_id == 1
    assert f"1 header(s) had text over {MAX_TEXT} characters" in caplog.text
