"""The in-memory index the server answers from: AFDB API records, file lookups, search."""

from __future__ import annotations

import datetime as dt
import json

from structome.storage.archive import FileLocation
from structome.storage.entry_index import ENTRY_COLUMNS, EntryIndex


def record(accession: str, fragment: int = 1, **fields) -> dict:
    values = {column: None for column in ENTRY_COLUMNS}
    values.update(
        entryId=f"SM-{accession}-F{fragment}",
        uniprotAccession=accession,
        fragment=fragment,
        uniprotStart=1,
        uniprotEnd=4,
        uniprotSequence="MKVL",
        latestVersion=1,
        modelCreatedDate=dt.date(2026, 11, 25),
        globalMetricValue=71.234567,
        ptm=0.51234,
    )
    values.update(fields)
    return values


def location(entry_id: str, kind: str, suffix: str) -> FileLocation:
    return FileLocation(
        entry_id,
        kind,
        entry_id + suffix,
        "shards/a/archive.tar",
        entry_id + suffix + ".gz",
        512,
        100,
        "gzip",
        300,
        "ab" * 32,
    )


def test_search_ranks_exact_accession_gene_or_name_first_and_counts_all():
    index = EntryIndex(
        [
            record("P00001", uniprotDescription="binds abcA partners", gene="zzz"),
            record("P00002", gene="abcA", uniprotId="ABCA_ECOLI"),
            record("P00003", organismScientificName="Escherichia coli"),
        ],
        [],
    )
    results, total = index.search("ABCA")
    assert total == 2 and [r["uniprotAccession"] for r in results] == ["P00002", "P00001"]
    assert index.search("coli")[1] == 2 and index.search("  ")[1] == 0 and index.search("nothing")[1] == 0
    assert [r["uniprotAccession"] for r in index.search("p0000", limit=2)[0]] == ["P00001", "P00002"]
    assert index.search("sm-p00003-f1")[0][0]["uniprotAccession"] == "P00003"


def test_records_fragments_urls_and_derived_files():
    files = [
        location("SM-P1-F2", "cif", "-model_v1.cif"),
        location("SM-P1-F2", "pae", "-predicted_aligned_error_v1.json"),
    ]
    index = EntryIndex([record("P1", 2, uniprotStart=2, uniprotEnd=3), record("P1", 1)], files)
    first, second = json.loads(index.prediction_json("P1"))
    assert (first["entryId"], second["entryId"]) == ("SM-P1-F1", "SM-P1-F2")  # fragment order
    assert second["sequence"] == "KV" and (second["sequenceStart"], second["sequenceEnd"]) == (2, 3)
    assert second["cifUrl"] == "/files/SM-P1-F2-model_v1.cif" and second["pdbUrl"] == "/files/SM-P1-F2-model_v1.pdb"
    assert second["paeImageUrl"] == "/files/SM-P1-F2-predicted_aligned_error_v1.png" and "cifUrl" not in first
    assert first["globalMetricValue"] == 71.23 and first["ptm"] == 0.512 and first["modelCreatedDate"] == "2026-11-25"
    assert index.prediction_json("SM-P1-F2") == index.prediction_json("P1") and index.prediction_json("P9") is None
    assert index.derived["SM-P1-F2-model_v1.pdb"].source is files[0] and len(index) == 2
