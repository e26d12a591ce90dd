"""transfer: the fsspec copy engine.

Owns transfer planning, parallel streaming copies with checksums computed while streaming, atomic
publish, retries with back-off, link / server-side-copy fast paths, and the per-pilot
content-addressed cache.

May import: the standard library and fsspec. Nothing from ``pilotdata``, ``placement`` or ``agent``:
it takes fsspec filesystems and plain data, and raises its own :mod:`transfer.errors`.
"""
