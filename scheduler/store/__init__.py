"""The durable store: tables, guarded writes and queries, migrations."""
