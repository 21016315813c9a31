"""The embedded runtime: one process, one partition; SQLite is the log and the store."""
