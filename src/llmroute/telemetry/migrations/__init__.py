"""Versioned SQL migrations of the decision log, one folder per backend (package data).

Files are named ``NNNN_name.sql``; the runner (`llmroute.telemetry.store.migrate`) applies
the ones a database lacks, in order, and records each in ``schema_migrations``. A
migration, once released, is never edited: a change is a new file.
"""
