"""Tests of pilotdata.stores: the registry, safe names, and each backend against a real server."""
