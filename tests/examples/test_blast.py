"""The BLAST-like example: generator, both search engines, the task program, merging, the full run.

The engines run for real: NCBI BLAST+ (``makeblastdb``, ``blastn``; scripts/setup installs
ncbi-blast+) and the bundled k-mer search, each through ``task.py`` as a subprocess, as a ComputeUnit
runs it. The full example runs ``examples/blast/run.py`` as a subprocess on the embedded SQLite default.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from examples.blast import data, kmer, merge, report
from examples.blast.hits import Hit, read_fasta, read_hits
from pilotdata.coordination import connect
from pilotdata.history import History
from pilotdata.inspect import Inspector
from pilotdata.records import TRANSFER_EVENT, ByteCategory, transfer_record
from pilotdata.runs import start_run
from pilotdata.session import Session
from pilotdata.states import Kind
from tests.servers import require_binary

REPO = Path(__file__).resolve().parents[2]
BLAST_DIR = REPO / "examples" / "blast"
SMALL = 2_000_000


@pytest.fixture(scope="module")
def workload(tmp_path_factory: pytest.TempPathFactory) -> data.Workload:
    """A 2 MB database with a BLAST+ index, 64 queries, 8 planted matches (both strands)."""
    makeblastdb = require_binary("makeblastdb", "ncbi-blast+")
    return data.prepare(tmp_path_factory.mktemp("cache"), SMALL, seed=7, queries=64, makeblastdb=makeblastdb)


def run_task(db: Path, queries: Path, out: Path, engine: str, cwd: Path | None = None,
             script: Path = BLAST_DIR / "task.py") -> subprocess.CompletedProcess[str]:
    """``python3 task.py ...`` as a ComputeUnit runs it."""
    return subprocess.run([sys.executable, str(script), "--db", str(db), "--queries", str(queries),
                           "--out", str(out), "--engine", engine],
                          capture_output=True, text=True, timeout=120, cwd=cwd, check=False)


# ------------------------------------------------------------------ generator
def test_generator_plants_mutated_query_stretches_at_known_positions(workload: data.Workload) -> None:
    db = dict(read_fasta(workload.fasta_dir / "db.fasta"))
    queries = dict(read_fasta(workload.queries_fasta))
    assert len(db) == workload.records == SMALL // data.RECORD_LENGTH
    assert sum(len(s) for s in db.values()) == SMALL
    assert len(queries) == 64 and len(workload.plants) == 8
    assert {p.strand for p in workload.plants} == {"plus", "minus"}
    for p in workload.plants:
        lo, hi = sorted((p.sstart, p.send))
        region = db[p.subject][lo - 1:hi]
        if p.strand == "minus":
            region = kmer.reverse_complement(region)
        stretch = queries[p.query][p.qstart - 1:p.qend]
        assert len(region) == len(stretch) == hi - lo + 1
        differences = sum(a != b for a, b in zip(region, stretch))
        assert differences == p.mutations >= 1


def test_generator_is_deterministic_and_cached_by_size_and_seed(tmp_path: Path) -> None:
    first = data.prepare(tmp_path / "a", 100_000, seed=3, queries=16)
    again = data.prepare(tmp_path / "a", 100_000, seed=3, queries=16)
    elsewhere = data.prepare(tmp_path / "b", 100_000, seed=3, queries=16)
    other_seed = data.prepare(tmp_path / "a", 100_000, seed=4, queries=16)
    assert not first.reused and again.reused and again.root == first.root
    assert (elsewhere.fasta_dir / "db.fasta").read_bytes() == (first.fasta_dir / "db.fasta").read_bytes()
    assert elsewhere.plants == first.plants
    assert other_seed.root != first.root and other_seed.plants != first.plants
    assert not first.has_blast_db and not (first.blast_dir / "db.nsq").exists()


def test_an_interrupted_build_is_rebuilt(tmp_path: Path) -> None:
    built = data.prepare(tmp_path, 50_000, seed=1, queries=8)
    (built.root / "ready.json").unlink()
    (built.fasta_dir / "db.fasta").write_bytes(b">broken\nAC")
    rebuilt = data.prepare(tmp_path, 50_000, seed=1, queries=8)
    assert not rebuilt.reused
    assert sum(len(s) for _, s in read_fasta(rebuilt.fasta_dir / "db.fasta")) == 50_000


def test_split_queries_covers_every_query_once(workload: data.Workload, tmp_path: Path) -> None:
    chunks = data.split_queries(workload.queries_fasta, 5, tmp_path)
    ids = [qid for c in chunks for qid, _ in read_fasta(c)]
    assert len(chunks) == 5 and sorted(ids) == sorted(q for q, _ in read_fasta(workload.queries_fasta))
    assert len(data.split_queries(workload.queries_fasta, 1000, tmp_path / "many")) == 64


@pytest.mark.parametrize(("text", "expected"), [("5MB", 5_000_000), ("2GB", 2 * 10**9), ("1.5kb", 1500),
                                                ("512MiB", 512 * 2**20), ("1234", 1234)])
def test_parse_size(text: str, expected: int) -> None:
    assert data.parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "MB", "5 parsecs", "0", "-1MB"])
def test_parse_size_rejects_nonsense(text: str) -> None:
    with pytest.raises(ValueError, match="size"):
        data.parse_size(text)


# ------------------------------------------------------------------ engines through task.py
@pytest.mark.parametrize("engine", ["blast", "kmer"])
def test_task_finds_every_planted_match(workload: data.Workload, tmp_path: Path, engine: str) -> None:
    if engine == "blast":
        require_binary("blastn", "ncbi-blast+")
    chunks = data.split_queries(workload.queries_fasta, 3, tmp_path / "chunks")
    outs = []
    for i, chunk in enumerate(chunks):
        out = tmp_path / "out" / f"hits-{i:04d}.tsv"
        proc = run_task(workload.db_dir(engine), chunk, out, engine)
        assert proc.returncode == 0, proc.stderr
        assert f"engine {engine}:" in proc.stdout
        outs.append(out)
    merged = merge.merge(outs, tmp_path / "hits.tsv")
    assert merged.engines == {engine: 3}
    check = merge.check_planted(merged.hits, workload.plants)
    assert check.all_found and len(check.found) == 8, check.missing
    assert len(merged.hits) < 3 * len(workload.plants), "random queries should hit (almost) nothing"
    lines = (tmp_path / "hits.tsv").read_text().splitlines()
    assert lines[0] == f"# engine: {engine} x3" and lines[1].startswith("# qseqid\tsseqid\tpident")


def test_kmer_engine_reports_the_same_alignments_as_blast(workload: data.Workload, tmp_path: Path) -> None:
    require_binary("blastn", "ncbi-blast+")
    found = {}
    for engine in ("blast", "kmer"):
        out = tmp_path / f"{engine}.tsv"
        assert run_task(workload.db_dir(engine), workload.queries_fasta, out, engine).returncode == 0
        found[engine] = {(h.qseqid, h.sseqid, h.strand): h for h in read_hits(out)[0]}
    for p in workload.plants:
        b, k = found["blast"][(p.query, p.subject, p.strand)], found["kmer"][(p.query, p.subject, p.strand)]
        if b.gapopen == 0:  # the k-mer engine is ungapped: same alignment, same columns
            assert (b.qstart, b.qend, b.sstart, b.send, b.length, b.mismatch) == \
                   (k.qstart, k.qend, k.sstart, k.send, k.length, k.mismatch)
            assert abs(b.bitscore - k.bitscore) <= 2 and k.evalue < 1e-50


def test_auto_engine_uses_blast_when_its_database_is_there(workload: data.Workload, tmp_path: Path) -> None:
    require_binary("blastn", "ncbi-blast+")
    chunk = data.split_queries(workload.queries_fasta, 1, tmp_path)[0]
    assert run_task(workload.blast_dir, chunk, tmp_path / "a.tsv", "auto").returncode == 0
    assert read_hits(tmp_path / "a.tsv")[1][0].startswith("blast (blastn 2.")
    assert run_task(workload.fasta_dir, chunk, tmp_path / "b.tsv", "auto").returncode == 0
    assert read_hits(tmp_path / "b.tsv")[1][0].startswith("kmer (word 20")


def test_task_runs_from_a_sandbox_of_links_into_a_content_addressed_cache(
    workload: data.Workload, tmp_path: Path
) -> None:
    """As the agent stages the task-code DataUnit: sandbox names are symlinks to files named by hash."""
    cache, sandbox = tmp_path / "cache", tmp_path / "sandbox"
    cache.mkdir()
    sandbox.mkdir()
    for i, name in enumerate(("task.py", "kmer.py", "hits.py")):
        target = cache / f"{i:02x}deadbeef"
        target.write_bytes((BLAST_DIR / name).read_bytes())
        (sandbox / name).symlink_to(target)
    (sandbox / "blastdb").symlink_to(workload.fasta_dir)
    chunk = data.split_queries(workload.queries_fasta, 1, sandbox)[0]
    proc = subprocess.run([sys.executable, "task.py", "--db", "blastdb", "--queries", chunk.name,
                           "--out", "hits-0000.tsv", "--engine", "kmer"],
                          cwd=sandbox, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    hits, _ = read_hits(sandbox / "hits-0000.tsv")
    assert merge.check_planted(hits, workload.plants).all_found


def test_task_errors_name_the_problem(workload: data.Workload, tmp_path: Path) -> None:
    chunk = data.split_queries(workload.queries_fasta, 1, tmp_path)[0]
    missing = run_task(tmp_path / "nope", chunk, tmp_path / "x.tsv", "kmer")
    assert missing.returncode == 2 and "nope is not a directory" in missing.stderr
    no_index = run_task(workload.fasta_dir, chunk, tmp_path / "x.tsv", "blast")
    assert no_index.returncode == 2 and "makeblastdb" in no_index.stderr
    no_queries = run_task(workload.fasta_dir, tmp_path / "none.fasta", tmp_path / "x.tsv", "kmer")
    assert no_queries.returncode == 2 and "none.fasta does not exist" in no_queries.stderr
    assert not (tmp_path / "x.tsv").exists()


# ------------------------------------------------------------------ merge / check
def test_check_planted_reports_the_missing_ones(workload: data.Workload) -> None:
    p = workload.plants[0]
    lo, hi = sorted((p.sstart, p.send))
    same = Hit(p.query, p.subject, 99.0, hi - lo + 1, 1, 0, p.qstart, p.qend, p.sstart, p.send, 1e-90, 300.0)
    wrong_strand = Hit(p.query, p.subject, 99.0, hi - lo + 1, 1, 0, p.qstart, p.qend, p.send, p.sstart, 1e-9, 50)
    elsewhere = Hit(p.query, p.subject, 99.0, 40, 0, 0, 1, 40, hi + 100, hi + 139, 1e-9, 50.0)
    assert merge.check_planted([same], [p]).all_found
    assert not merge.check_planted([wrong_strand, elsewhere], [p]).all_found
    check = merge.check_planted([same], workload.plants)
    assert [x.query for x in check.found] == [p.query] and check.expected == len(workload.plants)


def test_hits_rows_round_trip() -> None:
    hit = Hit("q1", "s2", 97.5, 200, 5, 0, 3, 202, 900, 701, 1.5e-90, 351.0)
    assert Hit.from_row(hit.to_row()) == hit and hit.strand == "minus"
    with pytest.raises(ValueError, match="12 tab-separated columns"):
        Hit.from_row("q1\ts2\t97.5")


# ------------------------------------------------------------------ accounting
def test_traffic_is_the_run_s_byte_accounting(tmp_path: Path) -> None:
    """Real SQLite coordination and history: transfer records as the data operations and agents write them."""
    session = Session(f"sqlite:///{tmp_path / 'coord.sqlite'}", namespace="acct",
                      history_url=f"sqlite:///{tmp_path / 'history.sqlite'}")
    coord = session.coord
    run = start_run(coord, "r1").id
    coord.create(Kind.PILOT, "pilot-a", {"labels": {"datacenter": "site-a", "machine": "node-1"},
                                         "cached_dus": ["du-c0", "du-db"]})
    coord.create(Kind.PILOT, "pilot-b", {"labels": {"datacenter": "site-b", "machine": "node-2"},
                                         "cached_dus": ["du-c1", "du-db"]})
    coord.create_many(Kind.CU, [(f"cu-{i}", {"description": {}, "run": run}) for i in range(4)])

    def record(du: str, nbytes: int, category: ByteCategory, pilot: str | None = None, cu: str | None = None) -> None:
        coord.record_event(TRANSFER_EVENT, du, transfer_record(du, nbytes, 0.1, category=category, source="x",
                                                               destination="y", cu=cu, run=None if cu else run),
                           pilot=pilot)

    for du, nbytes in (("du-db", 1_250_000), ("du-c0", 1_000), ("du-c1", 1_000)):
        record(du, nbytes, ByteCategory.UPLOADED)
    record("du-db", 1_250_000, ByteCategory.REPLICATED)  # to site-b: a replication, not an upload
    record("du-db", 1_250_000, ByteCategory.LINKED, "pilot-a", "cu-0")
    record("du-c0", 1_000, ByteCategory.STAGED, "pilot-a", "cu-0")
    record("du-db", 1_250_000, ByteCategory.CACHE_HIT, "pilot-a", "cu-1")
    record("du-c0", 1_000, ByteCategory.CACHE_HIT, "pilot-a", "cu-1")
    record("du-db", 1_250_000, ByteCategory.STAGED, "pilot-b", "cu-2")
    record("du-c1", 1_000, ByteCategory.STAGED, "pilot-b", "cu-2")
    record("du-db", 1_250_000, ByteCategory.CACHE_HIT, "pilot-b", "cu-3")
    record("du-c1", 1_000, ByteCategory.CACHE_HIT, "pilot-b", "cu-3")
    for i in range(4):
        record("du-out", 300, ByteCategory.OUTPUT, "pilot-a" if i < 2 else "pilot-b", f"cu-{i}")
    try:
        t = report.traffic(session, run, ["pilot-a", "pilot-b"])
    finally:
        session.close()
    assert (t.uploaded, t.replicated, t.staged, t.linked, t.cache_hit, t.output) == (
        1_252_000, 1_250_000, 1_252_000, 1_250_000, 2_502_000, 1_200)
    assert t.naive == 4 * 1_250_000 + 4 * 1_000 and t.saved == t.naive - t.staged == 3_752_000
    assert t.moved == 1_252_000 + 1_250_000 + 1_252_000 + 1_200
    assert t.by_pilot["site-a/node-1"].by_category["linked"] == 1_250_000
    assert t.by_pilot["site-b/node-2"].by_category["staged"] == 1_251_000
    assert t.cached == {"site-a/node-1": ["du-c0", "du-db"], "site-b/node-2": ["du-c1", "du-db"]}


# ------------------------------------------------------------------ the whole example
def _run_example(tmp_path: Path, *extra: str, path: str | None = None
                 ) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """``run.py`` on a 5 MB database in 4 chunks (64 queries, 8 planted), as a subprocess."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # PDATA_HOME: this test's (autouse fixture)
    if path is not None:
        env["PATH"] = path
    workdir = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(BLAST_DIR / "run.py"), "--db-size", "5MB", "--chunks", "4",
                           "--queries", "64", "--workdir", str(workdir), "--timeout", "240", *extra],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path, check=False)
    summary = workdir / "results" / "summary.json"
    doc = json.loads(summary.read_text()) if summary.exists() else {}
    return proc, doc


def _path_without_blast() -> str:
    dirs = os.environ.get("PATH", "").split(os.pathsep)
    return os.pathsep.join(d for d in dirs if d and not (Path(d) / "blastn").exists())


def _assert_complete_run(proc: subprocess.CompletedProcess[str], doc: dict[str, Any], engine: str,
                         *, keep: bool = False, url: str | None = None) -> None:
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    found = re.search(r"planted matches\s+(\d+)/(\d+) found", proc.stdout)
    assert found and found[1] == found[2] and int(found[2]) == 8, proc.stdout
    assert re.search(r"compute units\s+4/4 done", proc.stdout), proc.stdout
    assert f"hits written by {engine} (4 chunk files)" in proc.stdout
    assert doc["ok"] and doc["compute_units"] == {"Done": 4} and doc["planted"]["missing"] == []
    assert doc["engine"] == engine and doc["hit_engines"] == {engine: 4}
    assert sum(doc["placement"].values()) == 4 and set(doc["placement"]) <= {"site-a/node-1", "site-b/node-2"}
    b = doc["bytes"]
    assert b["naive"] >= 4 * doc["db_du_bytes"] > 0
    assert b["saved"] == b["naive"] - b["staged"] > 0
    assert b["staged"] <= 2 * (doc["db_du_bytes"] + 100_000), "each pilot fetches the database at most once"
    assert b["uploaded"] < 2 * doc["db_du_bytes"], "a replication is not an upload"
    assert set(doc["cached_dus"]) <= {"site-a/node-1", "site-b/node-2"}
    assert Path(doc["hits_file"]).is_file()
    assert (Path(doc["run_dir"]) / "stores").is_dir() is keep, "--keep keeps the stores; they go otherwise"
    # the summary's bytes are the run's byte accounting: pdata report gives the same numbers
    coord = connect(url, doc["namespace"])
    try:
        with History() as history:
            ins = Inspector(coord, history)
            ins.refresh()
            assert {k: v for k, v in b.items() if k not in ("naive", "by_pilot")} == ins.bytes(doc["run"]).as_dict()
            assert ins.run(doc["run"]).counts == {"Done": 4}  # the history keeps the run
        left = {kind: coord.list_ids(kind) for kind in Kind}
        if keep:
            assert left[Kind.RUN] == [doc["run"]] and len(left[Kind.CU]) == 4
        else:  # the example removed its own records: nothing of it is left in coordination
            assert left == {kind: [] for kind in Kind} and coord.last_cursor() is None
    finally:
        coord.close()


@pytest.mark.slow
def test_the_example_with_blast_finds_every_planted_match(tmp_path: Path) -> None:
    require_binary("blastn", "ncbi-blast+")
    proc, doc = _run_example(tmp_path, "--engine", "blast")
    _assert_complete_run(proc, doc, "blast")
    assert doc["db_du_bytes"] > 5_000_000, "the database DataUnit ships makeblastdb's files with the FASTA"


@pytest.mark.slow
def test_without_blast_installed_the_example_falls_back_to_the_kmer_engine(tmp_path: Path) -> None:
    proc, doc = _run_example(tmp_path, "--keep", path=_path_without_blast())
    _assert_complete_run(proc, doc, "kmer", keep=True)
    assert doc["db_du_bytes"] < 5_100_000, "the k-mer engine's DataUnit holds only the FASTA"
    forced = subprocess.run([sys.executable, str(BLAST_DIR / "run.py"), "--db-size", "5MB", "--engine", "blast"],
                            capture_output=True, text=True, timeout=120, check=False,
                            env={**os.environ, "PATH": _path_without_blast()})
    assert forced.returncode == 2 and "makeblastdb/blastn not found" in forced.stderr


@pytest.mark.slow
def test_the_example_runs_on_redis_coordination(tmp_path: Path, redis_server: Any) -> None:
    proc, doc = _run_example(tmp_path, "--engine", "kmer", "--url", redis_server.url)
    _assert_complete_run(proc, doc, "kmer", url=redis_server.url)
    assert f"127.0.0.1:{redis_server.port}" in proc.stdout


@pytest.mark.slow
def test_failed_compute_units_make_the_run_fail_and_are_named(tmp_path: Path) -> None:
    proc, doc = _run_example(tmp_path, "--engine", "kmer", "--python", str(tmp_path / "no-such-python"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "PROBLEMS" in proc.stdout and "planted matches   0/8 found" in proc.stdout
    assert proc.stdout.count("executable not found") == 4
    assert doc["compute_units"] == {"Failed": 4} and not doc["ok"] and doc["hits"] == 0
