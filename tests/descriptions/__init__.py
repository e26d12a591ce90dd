"""Tests of pilotdata.descriptions: BigJob dicts in, validated objects, normalised JSON out, no secrets."""
