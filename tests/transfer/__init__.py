"""Tests of the transfer engine (fsspec copies, fast paths, the per-pilot cache)."""
