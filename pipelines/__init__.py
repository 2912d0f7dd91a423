"""The stages: ingest (FASTA -> entries), predict, write, and the build pipeline that chains them."""
