"""On-disk layout, schema, writers, archives, catalog and readers."""
