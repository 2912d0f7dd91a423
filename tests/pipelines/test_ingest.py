"""Ingest: validation reasons, ids, fragments, checksums, prediction ids and the record ledger invariant."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import random
import re
from pathlib import Path

import pytest
from Bio.SeqUtils.CheckSum import crc64 as bio_crc64
from fake_database import CREATED, PROVENANCE, random_prediction

from structome.models.types import STANDARD_RESIDUES, Entry, Failure, to_model_alphabet
from structome.pipelines.build import BuildCounters, build_record, build_report, plan_build
from structome.pipelines.fasta import MAX_TEXT, InputError, iter_fasta
from structome.pipelines.ingest import (
    MAX_RECORD_ID,
    IngestResult,
    IngestSettings,
    clean_sequence,
    fragment_windows,
    ingest,
    prediction_id,
    sanitize_accession,
)
from structome.pipelines.settings import BuildSettings
from structome.storage import rows
from structome.storage.layout import DatabaseLayout

DATA = Path(__file__).resolve().parents[1] / "data" / "fasta"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
YEAST = SHARED / "uniprot" / "UP000002311_559292_yeast.fasta.gz"
MODEL = "esmfold|test-weights|stem=fp32,trunk=fp32|r4"
DEFAULTS = IngestSettings()
TEST_FILES = sorted(path.name for path in DATA.iterdir() if ".fasta" in path.name)


def run(*names: str | Path, settings: IngestSettings = DEFAULTS, model_key: str = MODEL) -> IngestResult:
    result = ingest([DATA / name for name in names], settings, model_key)
    assert_every_record_accounted_for(result, [DATA / name for name in names])
    return result


def assert_every_record_accounted_for(result: IngestResult, paths: list[Path]) -> None:
    """records == records that produced entries + failures; fragments of one record are contiguous F1..Fn."""
    read = sum(1 for path in paths for _ in iter_fasta(path))
    assert result.record_count == read
    assert read == result.records_with_entries + len(result.failures)
    assert all(failure.stage == "ingest" for failure in result.failures)
    previous: Entry | None = None
    for entry in result.entries:
        if entry.fragment > 1:
            assert previous is not None and previous.fragment == entry.fragment - 1
            assert previous.entry_id.rsplit("-F", 1)[0] == entry.entry_id.rsplit("-F", 1)[0]
        previous = entry
    assert len({entry.entry_id for entry in result.entries}) == len(result.entries)


def write_fasta(path: Path, records: list[tuple[str, str]]) -> Path:
    path.write_text("".join(f">{header}\n{sequence}\n" for header, sequence in records))
    return path


# --- settings and helpers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(fragment_window=2701),
        dict(fragment_step=0),
        dict(fragment_step=1401),
        dict(fragment_window=0),
        dict(entry_prefix=""),
        dict(entry_prefix="S M"),
    ],
)
def test_settings_validation(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        IngestSettings(**kwargs)


def test_settings_defaults_are_frozen() -> None:
    assert (DEFAULTS.max_length, DEFAULTS.fragment_window, DEFAULTS.fragment_step, DEFAULTS.entry_prefix) == (
        2700,
        1400,
        200,
        "SM",
    )
    with pytest.raises(AttributeError):
        DEFAULTS.max_length = 10  # type: ignore[misc]


def test_sanitize_accession() -> None:
    assert sanitize_accession("P12345-2") == "P12345-2"
    assert sanitize_accession("NP_001.1") == "NP_001.1"
    assert sanitize_accession("weird/acc:1 \u00e9|x") == "weird_acc_1___x"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("mkv", "MKV"),
        ("MKV*", "MKV"),
        ("ACDEFGHIKLMNPQRSTVWYUOBZJX", "ACDEFGHIKLMNPQRSTVWYUOBZJX"),
        ("", ("empty_sequence", "the record has no residues")),
        ("*", ("empty_sequence", "the record has no residues")),
        ("MK*V", ("internal_stop", "stop '*' at position 3 of 4")),
        ("MKV**", ("internal_stop", "stop '*' at position 4 of 5")),
        ("MK1V", ("invalid_character", "invalid character '1' at position 3")),
        ("MK-V", ("invalid_character", "invalid character '-' at position 3")),
        ("MKV.", ("invalid_character", "invalid character '.' at position 4")),
        ("?", ("invalid_character", "invalid character '?' at position 1")),
        ("MK\u00e9", ("invalid_character", "invalid character '\u00e9' at position 3")),
    ],
)
def test_clean_sequence(raw: str, expected: str | tuple[str, str]) -> None:
    result = clean_sequence(raw)
    if isinstance(expected, str):
        assert result == expected
    else:
        assert (result.reason, result.message) == expected


# --- fragments ---------------------------------------------------------------------------------------


def test_titin_length_gives_166_fragments() -> None:
    windows = fragment_windows(34350, DEFAULTS)
    assert len(windows) == 166
    assert windows[:2] == [(1, 1400), (201, 1600)]
    assert windows[164] == (32801, 34200)
    assert windows[-1] == (32951, 34350)


@pytest.mark.parametrize("length", [1, 2700, 2701, 2800, 2801, 3000, 4910, 34350])
def test_fragment_windows_cover_the_sequence(length: int) -> None:
    windows = fragment_windows(length, DEFAULTS)
    if length <= 2700:
        assert windows == [(1, length)]
        return
    assert windows[-1][1] == length and windows[0][0] == 1
    assert all(end - start + 1 == 1400 for start, end in windows)
    starts = [start for start, _ in windows]
    assert starts == sorted(set(starts))  # increasing, no duplicate last window
    assert all(b - a == 200 for a, b in zip(starts[:-2], starts[1:-1], strict=True))
    assert 1 <= starts[-1] - starts[-2] <= 200


def test_exact_fit_has_no_duplicate_last_window() -> None:
    windows = fragment_windows(2800, DEFAULTS)  # 1401 + 1399 = 2800: the regular windows end at L
    assert windows[-1] == (1401, 2800) and len(windows) == 8


def test_titin_through_ingest(tmp_path: Path) -> None:
    rng = random.Random(1)
    titin = "".join(rng.choice(STANDARD_RESIDUES) for _ in range(34350))
    path = write_fasta(tmp_path / "titin.fasta", [("sp|Q8WZ42|TITIN_HUMAN Titin (synthetic sequence)", titin)])
    result = ingest([path], DEFAULTS, MODEL)
    assert_every_record_accounted_for(result, [path])
    assert len(result.entries) == 166 and not result.failures
    assert [e.entry_id for e in result.entries[:2]] == ["SM-Q8WZ42-F1", "SM-Q8WZ42-F2"]
    last = result.entries[-1]
    assert (last.entry_id, last.fragment, last.start, last.end) == ("SM-Q8WZ42-F166", 166, 32951, 34350)
    assert {e.sequence_checksum for e in result.entries} == {bio_crc64(titin)[4:]}
    assert all(e.length == 1400 and e.sequence == titin for e in result.entries)
    assert len(result.requests()) == 166


# --- the awkward file: one outcome per record -----------------------------------------------------------


def test_awkward_file_outcomes() -> None:
    result = run("awkward.fasta")
    assert result.record_count == 20
    assert [e.entry_id for e in result.entries] == [
        "SM-P0A7Y4-F1",
        "SM-lower_case-F1",
        "SM-trailing_stop-F1",
        "SM-dup_id-F1",
        "SM-latin1_header-F1",
        "SM-bare_id-F1",
        "SM-Q99ZW2-F1",
        "SM-weird_acc_1-F1",
    ]
    assert [(f.record_id, f.reason) for f in result.failures] == [
        ("internal_stop", "internal_stop"),
        ("double_stop", "internal_stop"),
        ("digits", "invalid_character"),
        ("empty_record", "empty_sequence"),
        ("only_stop", "empty_sequence"),
        ("dup_id", "duplicate_id"),
        ("dup_id", "duplicate_record"),
        ("", "invalid_header"),
        ("weird_acc_1", "duplicate_id"),
        ("gap", "invalid_character"),
        ("question", "invalid_character"),
        ("dot", "invalid_character"),
    ]
    messages = {f.record_id: f.message for f in result.failures}
    assert messages["digits"] == "invalid character '1' at position 4"
    assert messages["internal_stop"] == "stop '*' at position 4 of 8"
    assert messages["gap"] == "invalid character '-' at position 3"
    assert messages["question"] == "invalid character '?' at position 3"
    assert messages["dot"] == "invalid character '.' at position 5"
    assert f"record 15 of {DATA / 'awkward.fasta'}" in messages[""]
    assert all(f.source_file == str(DATA / "awkward.fasta") and f.entry_id == "" for f in result.failures)


def test_awkward_file_entries() -> None:
    entries = {e.entry_id: e for e in run("awkward.fasta").entries}
    crlf, lower = entries["SM-P0A7Y4-F1"], entries["SM-lower_case-F1"]
    assert crlf.sequence == lower.sequence == "MKTAYIAKQRQISFVK"
    assert crlf.prediction_id == lower.prediction_id  # identical sequences are predicted once
    assert crlf.organism == "Escherichia coli (strain K12)"
    assert (crlf.tax_id, crlf.gene, crlf.sequence_version, crlf.entry_name) == (83333, "rnhA", 2, "RNH_ECOLI")
    assert entries["SM-trailing_stop-F1"].sequence == "MKVLAAGIK"
    assert entries["SM-latin1_header-F1"].description == "caf\u00e9 prot\u00e9ine"
    bare = entries["SM-bare_id-F1"]
    assert bare.sequence == "ACDEFGHIKLMNPQRSTVWYUOBZJX"  # non-standard letters stored as written
    assert (bare.record_id, bare.accession, bare.database) == ("bare_id", "bare_id", "")
    assert bare.description == "some free text here"
    assert bare.prediction_id == hashlib.md5(f"{MODEL}\nACDEFGHIKLMNPQRSTVWYXXXXXX".encode()).hexdigest()
    ncbi = entries["SM-Q99ZW2-F1"]
    assert (ncbi.record_id, ncbi.accession, ncbi.sequence_version) == ("sp|Q99ZW2.1|CAS9_STRP1", "Q99ZW2", 1)
    assert entries["SM-weird_acc_1-F1"].accession == "weird/acc:1"


def test_requests_are_unique_and_in_model_alphabet() -> None:
    result = run("awkward.fasta")
    requests = result.requests()
    assert len(requests) == len(result.entries) - 1  # the CRLF and lowercase records share one
    assert [r.prediction_id for r in requests] == list(dict.fromkeys(e.prediction_id for e in result.entries))
    assert requests == run("awkward.fasta").requests()  # deterministic
    by_id = {r.prediction_id: r.sequence for r in requests}
    assert by_id[prediction_id(MODEL, "ACDEFGHIKLMNPQRSTVWYUOBZJX")] == "ACDEFGHIKLMNPQRSTVWYXXXXXX"


# --- real files ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TEST_FILES)
def test_every_record_accounted_for_in_every_test_file(name: str) -> None:
    result = run(name)
    assert result.record_count > 0


def test_all_test_files_together() -> None:
    result = run(*TEST_FILES)
    # the gzip holds the slice's first five records again: same id and sequence -> duplicate_record
    duplicates = [f for f in result.failures if f.source_file.endswith("/ecoli_slice.fasta.gz")]
    assert [f.reason for f in duplicates] == ["duplicate_record"] * 5
    assert len(result.requests()) == len({e.prediction_id for e in result.entries})


def test_ecoli_slice_checksums_and_metadata() -> None:
    result = run("ecoli_k12_2020_slice.fasta", "afdb_P41068_TRAP_ECOLI.fasta")
    assert len(result.entries) == 63 and not result.failures
    records = {r.accession: r for r in iter_fasta(DATA / "ecoli_k12_2020_slice.fasta")}
    for entry in result.entries[:62]:
        sequence = records[entry.accession].sequence_raw
        assert entry.sequence_checksum == bio_crc64(sequence)[4:]
        assert entry.sequence_md5 == hashlib.md5(sequence.encode()).hexdigest()
        assert entry.prediction_id == hashlib.md5(f"{MODEL}\n{to_model_alphabet(sequence)}".encode()).hexdigest()
    entries = {e.accession: e for e in result.entries}
    assert entries["P41068"].sequence_checksum == "0197355516942160"
    assert entries["P41068"].entry_id == "SM-P41068-F1"
    assert entries["P41068"].source_file == str(DATA / "afdb_P41068_TRAP_ECOLI.fasta")
    fdhf = entries["P07658"]
    assert "U" in fdhf.sequence and "X" in to_model_alphabet(fdhf.sequence)
    assert (fdhf.entry_name, fdhf.database, fdhf.gene) == ("FDHF_ECOLI", "sp", "fdhF")
    assert (fdhf.tax_id, fdhf.sequence_version) == (83333, 2)
    assert (fdhf.start, fdhf.end, fdhf.fragment) == (1, len(fdhf.sequence), 1)


def test_same_sequence_across_files_shares_a_prediction(tmp_path: Path) -> None:
    insa9 = list(iter_fasta(DATA / "ecoli_k12_2020_slice.fasta"))[0]
    other = write_fasta(tmp_path / "other.fasta", [("copy_of_insA9 another id", insa9.sequence_raw.lower() + "*")])
    result = ingest([DATA / "ecoli_k12_2020_slice.fasta", other], DEFAULTS, MODEL)
    first, copy = result.entries[0], result.entries[-1]
    assert copy.entry_id == "SM-copy_of_insA9-F1" and copy.source_file == str(other)
    assert copy.prediction_id == first.prediction_id and copy.sequence_md5 == first.sequence_md5
    assert len(result.requests()) == len(result.entries) - 1


def test_model_key_and_prefix_change_the_ids() -> None:
    a = run("biotite_prot.fasta")
    b = run("biotite_prot.fasta", settings=IngestSettings(entry_prefix="AF"), model_key="esmfold-tiny|x")
    assert a.entries[0].entry_id == "SM-protein-F1" and b.entries[0].entry_id == "AF-protein-F1"
    assert a.entries[0].prediction_id != b.entries[0].prediction_id
    with pytest.raises(ValueError):
        ingest([DATA / "biotite_prot.fasta"], DEFAULTS, "")


def test_result_rejects_a_broken_ledger() -> None:
    failure = Failure("x", "f.fasta", "empty_sequence", "no residues", "ingest")
    with pytest.raises(ValueError):
        IngestResult(entries=(), failures=(failure,), record_count=2)


def test_whole_yeast_proteome() -> None:
    if not YEAST.exists():
        pytest.skip(f"{YEAST} not present")
    result = ingest([YEAST], DEFAULTS, MODEL)
    assert_every_record_accounted_for(result, [YEAST])
    assert result.record_count == 6059
    assert result.records_with_entries == 6059 and not result.failures
    mdn1 = [e for e in result.entries if e.entry_name == "MDN1_YEAST"]
    assert len(mdn1) == 19 and mdn1[-1].end == 4910  # the longest yeast protein is cut into windows
    assert {e.organism for e in result.entries} == {"Saccharomyces cerevisiae (strain ATCC 204508 / S288c)"}


# --- hostile input: one record never fails more than itself; inputs that are not protein FASTA ----------

HOSTILE_HEADERS = [
    "sp|P00001|A_B sequence version too big OX=9606 SV=2147483648",
    "sp|P00002|A_B taxon of 25 digits OX=1234567890123456789012345 SV=1",
    "sp|P00003|A_B a superscript two OX=\u00b2 SV=1",
    "sp|P00004.99999999999999|A_B huge accession version",
    f"{'L' * 500} an accession far too long for a file name",
]


def test_a_refused_id_of_megabytes_goes_to_the_ledger_cut(tmp_path: Path) -> None:
    path = write_fasta(tmp_path / "long.fasta", [("x" * 2_000_000, "MKVLA"), ("sp|P11111|G_H fine", "MKVLA")])
    result = ingest([path], DEFAULTS, MODEL)
    (failure,) = result.failures
    assert failure.reason == "invalid_header" and failure.record_number == 1
    assert failure.record_id == "x" * MAX_RECORD_ID and "id of 2000000" in failure.message
    assert [e.accession for e in result.entries] == ["P11111"]


def test_a_bad_header_field_fails_only_its_own_record(tmp_path: Path) -> None:
    good = [("sp|P11111|G_H fine OX=9606 SV=3", "MKVLAAGIK"), (f"sp|P22222|G_H d {'x' * 100_000} OX=1", "MKTAYIAK")]
    path = write_fasta(tmp_path / "hostile.fasta", [(h, "MKVLA") for h in HOSTILE_HEADERS] + good)
    result = ingest([path], DEFAULTS, MODEL)
    assert [(f.reason, f.record_number) for f in result.failures] == [
        ("invalid_header_field", 1),
        ("invalid_header_field", 2),
        ("invalid_header_field", 3),
        ("invalid_header_field", 4),
        ("invalid_header", 5),
    ]
    messages = [f.message for f in result.failures]
    assert f"record 1 of {path}: SV='2147483648' is not a whole number from 1 to 2147483647" == messages[0]
    assert "OX='\u00b2'" in messages[2] and "accession of 500 characters" in messages[4]
    assert [f.accession for f in result.failures[:4]] == ["P00001", "P00002", "P00003", "P00004"]
    assert [e.accession for e in result.entries] == ["P11111", "P22222"]
    assert len(result.entries[1].description) == MAX_TEXT
    # what crashed the shard writer (ArrowInvalid / OverflowError) now fits every column
    rows.failures_table(list(result.failures), "b")
    requests = {r.prediction_id: r for r in result.requests()}
    rows.entries_table(
        [
            rows.entry_row(
                e,
                random_prediction(requests[e.prediction_id], 1),
                PROVENANCE,
                build="b",
                shard="s",
                created=CREATED,
                version=1,
            )
            for e in result.entries
        ]
    )


def test_semicolon_line_inside_a_sequence_is_ledgered_not_truncated(tmp_path: Path) -> None:
    path = tmp_path / "semi.fasta"
    path.write_text(
        f">sp|P1|A_B before\n;old-style comment\n{'MKVLAAGIKQ' * 6}\n;inside\n{'ACDEFGHIKL' * 3}\n>ok\nMKV\n"
    )
    result = ingest([path], DEFAULTS, MODEL)
    (failure,) = result.failures
    assert (failure.record_id, failure.reason, failure.accession) == ("sp|P1|A_B", "comment_in_sequence", "P1")
    assert "after residue 60" in failure.message
    assert [e.record_id for e in result.entries] == ["ok"]


@pytest.mark.parametrize(
    "content",
    [b"", b"\n\n", b"just some notes\nno header at all\n", b"; only a comment\n"],
    ids=["empty", "blank", "text", "comment"],
)
def test_an_input_without_records_is_refused_naming_it(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    good = DATA / "biotite_prot.fasta"
    with pytest.raises(InputError, match=f"{re.escape(str(path))} holds no FASTA record"):
        ingest([good, path], DEFAULTS, MODEL)
    allowed = ingest([good, path], IngestSettings(allow_empty=True), MODEL)
    assert allowed.record_count == 1 and [i.records for i in allowed.inputs] == [1, 0]


def test_nucleotide_records_are_ledgered_and_an_all_nucleotide_file_refused(tmp_path: Path) -> None:
    dna, rna = "ATGGCGTACGTTAGCNNACGTAGCT", "AUGGCGUACGUUAGCAACGUAGCU"
    mixed = write_fasta(
        tmp_path / "mixed.fasta", [("dna", dna), ("rna", rna.lower()), ("peptide", "ACGTACGT"), ("p", "MKV")]
    )
    result = ingest([mixed], DEFAULTS, MODEL)
    assert [(f.record_id, f.reason) for f in result.failures] == [
        ("dna", "nucleotide_sequence"),
        ("rna", "nucleotide_sequence"),
    ]
    assert [e.record_id for e in result.entries] == ["peptide", "p"]  # too short to tell: kept
    genome = write_fasta(tmp_path / "genome.fna", [("chr1", dna * 4), ("chr2", dna)])
    with pytest.raises(InputError, match=f"{re.escape(str(genome))}: all 2 record.* look like nucleotide"):
        ingest([mixed, genome], DEFAULTS, MODEL)


def test_inputs_of_one_name_in_two_folders_stay_apart(tmp_path: Path) -> None:
    """Failure rows of two inputs with the same base name merged in the ledger (only the name was kept)."""
    first, second = tmp_path / "a" / "in.fasta", tmp_path / "b" / "in.fasta"
    for path, sequence in ((first, "MK1"), (second, "MK2")):
        path.parent.mkdir()
        write_fasta(path, [("bad", sequence)])
    result = ingest([first, second], DEFAULTS, MODEL)
    assert [(f.source_file, f.record_number) for f in result.failures] == [(str(first), 1), (str(second), 1)]
    assert (
        len(rows.failures_table(list(result.failures), "b").group_by(["sourceFile", "recordNumber"]).aggregate([])) == 2
    )
    assert [i.path for i in result.inputs] == [str(first), str(second)]
    assert result.inputs[0].sha256 == hashlib.sha256(first.read_bytes()).hexdigest() != result.inputs[1].sha256


def test_one_file_given_twice_is_read_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path, link = DATA / "awkward.fasta", tmp_path / "link.fasta"
    link.symlink_to(path)  # another path to the same file
    once = ingest([path], DEFAULTS, MODEL)
    with caplog.at_level(logging.WARNING, logger="structome.pipelines.ingest"):
        twice = ingest([path, link, path], DEFAULTS, MODEL)
    assert (twice.record_count, twice.failures) == (once.record_count, once.failures)
    assert "given more than once" in caplog.text and len(twice.inputs) == 1


def test_the_build_report_lists_each_input_with_its_content_hash(tmp_path: Path) -> None:
    layout = DatabaseLayout(tmp_path / "db")
    layout.create()
    path = DATA / "ecoli_slice.fasta.gz"
    plan = plan_build([path], layout, BuildSettings(), PROVENANCE)
    started = dt.datetime(2026, 12, 4, tzinfo=dt.UTC)
    record = build_record(plan, BuildCounters(), status="running", started=started, finished=None)
    report = build_report(record, plan, BuildCounters())
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()  # of the bytes as stored, here gzip
    assert report["inputFiles"] == [{"path": str(path), "sha256": sha256, "records": 5}]
    assert record["inputs"] == [str(path)]
