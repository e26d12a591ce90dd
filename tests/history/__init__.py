"""Tests of the SQL history (pilotdata.history) against real SQLite, PostgreSQL and coordination."""
