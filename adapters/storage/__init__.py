"""Storage: one interface, SQLite (embedded default) and Postgres backends."""
