"""A database on an S3-compatible object store (a local moto server): build, query, download, resume."""

from __future__ import annotations

import json

from test_end_to_end import BUILD_OPTIONS, structome

from structome.storage.layout import DatabaseLayout

SEQUENCES = {
    "sp|P0A7K6|RL19_ECOLI": "MSNIIKQLEQEQMKQDVPSFRPGDTVEVKVWVVEGSKKRLQAFEGVVIAIRNRGLHSAFTVRKISNGEGVERVFQTHSPVVDSISVKRRGAVRKAKLYYLRERTGKAARIKERLN",
    "sp|P0A7M2|RL28_ECOLI": "MSRVCQVTGKRPVTGNNRSHALNATKRRFLPNLHSHRFWVESEKRFVTLRVSAKGMRVIDKKGIDTVLAELRARGEKY",
    "sp|P0A7N4|RL32_ECOLI": "MAVQQNKPTRSKRGMRRSHDALTAVTSLSVDKTSGEKHLRHHITADGYYRGRKVIAK",
    "sp|P0AG63|RS17_ECOLI": "MTDKIRTLQGRVVSDKMEKSIVVAIERFVKHPIYGKFIKRTTKLHVHDENNECGIGDVVEIRECRPLSKTKSWTLVRVVEKAVL",
    "sp|P99999|BAD_ECOLI": "MKV*LL",  # an internal stop: a ledger row
}


def sql_rows(db: str, query: str) -> list[dict]:
    return json.loads(structome("sql", "--db", db, "--format", "json", query).stdout)


def test_build_query_download_and_resume_on_an_object_store(tmp_path, s3_database):
    fasta = tmp_path / "in.fasta"
    fasta.write_text("".join(f">{header}\n{sequence}\n" for header, sequence in SEQUENCES.items()))
    structome("build", str(fasta), "--db", s3_database, *BUILD_OPTIONS)

    layout = DatabaseLayout(s3_database)
    assert not layout.is_local and not layout.exists("catalog.duckdb")
    rows = sql_rows(s3_database, "SELECT entryId, uniprotAccession FROM entries ORDER BY entryId")
    assert [r["uniprotAccession"] for r in rows] == ["P0A7K6", "P0A7M2", "P0A7N4", "P0AG63"]
    failures = sql_rows(s3_database, "SELECT recordId, reason FROM failures")
    assert failures == [{"recordId": "sp|P99999|BAD_ECOLI", "reason": "internal_stop"}]
    cif = structome("get", "--db", s3_database, "P0A7N4").stdout
    assert "_ma_qa_metric_global" in cif and "P0A7N4" in cif
    assert "no build is running" in structome("status", "--db", s3_database).stdout
    assert layout.list_files(".staging") == [] and not layout.exists(".build.lock")
    marker = json.loads(layout.read_text("structome.json"))
    assert (marker["format"], marker["layout"]) == ("structome-database", 2)
    (report,) = [json.loads(layout.read_text(f)) for f in layout.list_files("builds") if f.endswith(".report.json")]
    assert report["format"] == "structome-report/1" and report["status"] == "completed"

    layout.fs.delete_file(layout.path("structome.json"))  # as if made before markers: the next build marks it
    again = structome("build", str(fasta), "--db", s3_database, *BUILD_OPTIONS).stderr
    assert "4 already present" in again
    assert json.loads(DatabaseLayout(s3_database).read_text("structome.json"))["layout"] == 2
    entries = sql_rows(s3_database, "SELECT count(*) AS n, count(DISTINCT entryId) AS ids FROM entries")
    assert entries == [{"n": 4, "ids": 4}]
