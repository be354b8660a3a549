"""Package data: the SQL migration files of each backend (see `adapters.storage.migrations`)."""
