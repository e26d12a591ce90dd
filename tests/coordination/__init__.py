"""Conformance suite of the coordination backends (Redis and embedded SQLite)."""
