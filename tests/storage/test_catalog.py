"""storage.catalog on object stores: what DuckDB asks the store about a file is asked once per connection for the
files that are written once, and every time for those rewritten under the same name (build rows)."""

from __future__ import annotations

import pytest
from fake_database import add_entries

from structome.storage import catalog
from structome.storage.layout import DatabaseLayout


def test_object_store_file_facts_are_kept_only_for_files_written_once(s3_database):
    add_entries(s3_database, 0, 4)
    layout = DatabaseLayout(s3_database)
    shard_file = layout.path(layout.table_files("entries")[0])
    rewritten = layout.path("builds/x.parquet")
    layout.write_bytes_atomic(b"PAR1", "builds/x.parquet")
    fs = catalog._duckdb_file_system(layout)
    assert fs.info(f"structome://{shard_file}")["type"] == "file" and fs.info(rewritten)["size"] == 4
    layout.write_bytes_atomic(b"PAR1PAR1", "builds/x.parquet")
    layout.fs.delete_file(shard_file)  # a shard's file is never rewritten: what was learnt of it still holds
    assert fs.info(shard_file)["type"] == "file" and fs.info(rewritten)["size"] == 8
    with pytest.raises(FileNotFoundError):
        catalog._duckdb_file_system(layout).info(shard_file)  # a new connection asks the store again
