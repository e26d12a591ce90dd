"""Tests of the benchmarks/ scripts (small, fast runs with assertions on their figures)."""
