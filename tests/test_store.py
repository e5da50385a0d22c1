"""Tests of avits_core.store: schemas, RunStore (atomic parts, validation, cache, run.json), DuckDB views, canned queries."""

from __future__ import annotations

import datetime as dt
import json
import math
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from avits_core.errors import UnknownNameError
from avits_core.store import (
    CANNED,
    DOCS,
    SCHEMAS,
    TABLE_NAMES,
    RunStore,
    SchemaError,
    StoreError,
    candidates_per_prompt,
    connect,
    list_runs,
    make_selection_id,
    metric_table,
    query,
    reward_wide,
    rewards_summary,
    winners,
)
from avits_core.store.queries import run_canned

UTC = dt.timezone.utc
T0 = dt.datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)


def t(sec: int) -> dt.datetime:
    return T0 + dt.timedelta(seconds=sec)


# ------------------------------------------------------------------------------------------------
# row factories


def cand(cid: str, prompt: str = "p0", index: int = 0, **kw) -> dict:
    row = dict(prompt_id=prompt, prompt_index=index, prompt_text=f"text of {prompt}", candidate_id=cid,
               search="best_of_n", generation=0, step=0, seed=7, generator="synth", nfe=8,
               media_path=f"media/{cid}.mp4")
    row.update(kw)
    return row


def rew(cid: str, verifier: str, value: float | None, *, prompt: str = "p0", status: str = "ok",
        error: str | None = None, version: str = "1", seq: int = 0, gen: int = 0, at: int = 0) -> dict:
    return dict(prompt_id=prompt, candidate_id=cid, verifier=verifier, verifier_version=version, value=value,
                status=status, error=error, event_seq=seq, generation=gen, wall_s=0.25, scored_at=t(at))


SPEC = {"verifiers": ["va", "vb"], "weights": [1.0, 2.0], "aggregator": {"name": "weighted"}, "budget": None}


def sel(sid: str, prompt: str, cid: str | None, score: float | None) -> dict:
    return dict(selection_id=sid, prompt_id=prompt, candidate_id=cid, score=score, aggregator="weighted",
                verifiers=["va", "vb"], weights=[1.0, 2.0], budget=None, spec=SPEC)


def met(sid: str | None, prompt: str, cid: str, metric: str, value: float | None, held_out: bool = True) -> dict:
    return dict(selection_id=sid, prompt_id=prompt, candidate_id=cid, metric=metric, value=value,
                held_out=held_out)


@pytest.fixture()
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "runs", "r1").create()


def hidden_files(store: RunStore) -> list[Path]:
    return [p for p in store.path.rglob(".*") if p.name != ".run.json.lock"]


# ------------------------------------------------------------------------------------------------
# schemas


def test_every_column_is_documented():
    assert set(SCHEMAS) == set(DOCS) == set(TABLE_NAMES) == {
        "candidates", "rewards", "arw_trace", "selections", "metrics"}
    for table, sch in SCHEMAS.items():
        assert list(DOCS[table]) == sch.names
        for name in sch.names:
            assert len(DOCS[table][name]) > 15, (table, name)
        assert "run_id" in sch.names
    assert SCHEMAS["candidates"].field("created_at").type == pa.timestamp("us", tz="UTC")
    assert SCHEMAS["selections"].field("weights").type == pa.list_(pa.float64())


def test_make_selection_id_is_canonical():
    a = make_selection_id({"verifiers": ["va", "vb"], "weights": [1, 2], "aggregator": "arw", "budget": 4})
    b = make_selection_id({"budget": 4.0, "aggregator": "arw", "weights": (2.0, 1.0), "verifiers": ("vb", "va")})
    c = make_selection_id({"verifiers": ["va", "vb"], "weights": [np.float64(1), np.int64(2)], "aggregator": "arw",
                           "budget": 4})
    assert a == b == c
    assert len(a) == 12 and int(a, 16) >= 0
    assert make_selection_id({"verifiers": ["va", "vb"], "weights": [2, 1], "aggregator": "arw", "budget": 4}) != a
    assert make_selection_id({"verifiers": ["va", "vb"], "weights": [1, 2], "aggregator": "arw", "budget": 8}) != a
    with pytest.raises(StoreError, match="weights"):
        make_selection_id({"verifiers": ["va"], "weights": [math.nan]})
    with pytest.raises(StoreError, match="object"):
        make_selection_id({"x": object()})


# ------------------------------------------------------------------------------------------------
# round trips


ROWS = {
    "candidates": [cand("c0", truth={"bounces": 3, "color": "red"}, latent_path="latents/c0.npz", nfe_own=8,
                        batch_index=0, wall_s=0.5, created_at=t(1)),
                   cand("c1", generation=1, step=4, parent_ids=["c0"], nfe=12, seed=2**40)],
    "rewards": [rew("c0", "va", 0.5), rew("c1", "va", math.nan, status="error", error="ValueError: boom")],
    "arw_trace": [dict(selection_id="s1", event_seq=0, prompt_id="p0", generation=0, verifier="va",
                       log_var=-1.0, sigma=math.exp(-0.5), history_n=2, loss_before=None, loss_after=0.3,
                       weight=0.6)],
    "selections": [sel("s1", "p0", "c0", 1.5), sel("s1", "p1", None, None)],
    "metrics": [met(None, "p0", "c0", "sync_ms", 12.0, held_out=True),
                dict(met("s1", "p0", "c0", "clap", 0.2, held_out=False), extractor="clap-v1")],
}


@pytest.mark.parametrize("table", TABLE_NAMES)
def test_round_trip_every_table(store: RunStore, table: str):
    rows = ROWS[table]
    part = store.append(table, rows)
    assert part is not None and part.parent == store.path / table and part.name.startswith("part-")
    got = store.read(table)
    assert got.schema.equals(SCHEMAS[table])
    assert got.num_rows == len(rows)
    back = got.to_pylist()
    for written, read in zip(rows, back):
        assert read["run_id"] == "r1"
        for k, v in written.items():
            if k in ("truth", "spec"):
                assert json.loads(read[k]) == v
            elif isinstance(v, float) and math.isnan(v):
                assert read[k] is None  # error reward: NaN stored as null
            else:
                assert read[k] == v, (table, k)
        for k in ("created_at", "scored_at"):
            if k in read and k not in written:
                assert read[k].tzinfo is not None  # default filled with the append time
    if table == "candidates":
        assert back[0]["parent_ids"] == [] and back[1]["latent_path"] is None
    # a pa.Table with wider integer types and a column subset goes through too
    tbl = got.drop_columns(["created_at"] if "created_at" in got.column_names else ["scored_at"])
    if table == "candidates":
        tbl = tbl.set_column(tbl.schema.get_field_index("candidate_id"), "candidate_id",
                             pa.array([f"x{i}" for i in range(tbl.num_rows)]))
        tbl = tbl.set_column(tbl.schema.get_field_index("generation"), "generation",
                             tbl["generation"].cast(pa.int64()))
    store.append(table, tbl)
    assert store.read(table).num_rows == 2 * len(rows)
    assert len(store.parts(table)) == 2


def test_zero_rows_write_nothing(store: RunStore):
    assert store.append("rewards", []) is None
    assert store.append("rewards", SCHEMAS["rewards"].empty_table()) is None
    assert store.parts("rewards") == []
    empty = store.read("metrics")
    assert empty.num_rows == 0 and empty.schema.equals(SCHEMAS["metrics"])
    assert store.read("metrics", ["metric", "value"]).column_names == ["metric", "value"]


# ------------------------------------------------------------------------------------------------
# validation


@pytest.mark.parametrize(
    "table,rows,match",
    [
        ("nope", [{}], r"unknown table 'nope'"),
        ("candidates", [dict(cand("c0"), colour="red")], r"candidates\.colour \(row 0\): unknown column"),
        ("candidates", [{k: v for k, v in cand("c0").items() if k != "prompt_id"}],
         r"candidates\.prompt_id \(row 0\): missing required column"),
        ("candidates", [cand("c0"), cand("c1", generation=1.5)], r"candidates\.generation \(row 1\).*1\.5"),
        ("candidates", [cand("c0", generation=True)], r"candidates\.generation.*True"),
        ("candidates", [cand("c0", prompt_index="3")], r"candidates\.prompt_index.*'3'"),
        ("candidates", [cand("c0", parent_ids="c9")], r"candidates\.parent_ids.*'c9'"),
        ("candidates", [cand("c0", step=2**40)], r"candidates\.step.*1099511627776"),
        ("candidates", [cand("c0", created_at=dt.datetime(2025, 1, 1))], r"candidates\.created_at.*timezone"),
        ("candidates", [cand("c0", run_id="other")], r"candidates\.run_id \(row 0\): is 'other'"),
        ("candidates", [cand("c0", media_path="/abs/c0.mp4")], r"candidates\.media_path.*absolute"),
        ("candidates", [cand("c0"), cand("c0")], r"candidates\.candidate_id \(row 1\).*twice"),
        ("candidates", [cand("c0", parent_ids=["c0"])], r"candidates\.parent_ids.*itself"),
        ("candidates", [cand("c0", truth="{not json")], r"candidates\.truth.*not valid JSON"),
        ("candidates", [cand("c0", nfe=-1)], r"candidates\.nfe.*>= 0"),
        ("candidates", [cand("c0", seed=None)], r"candidates\.seed \(row 0\): is None"),
        ("rewards", [rew("c0", "va", math.nan)], r"rewards\.value.*'ok'.*nan"),
        ("rewards", [rew("c0", "va", None, status="error")], r"rewards\.error.*no error message"),
        ("rewards", [rew("c0", "va", 0.3, status="error", error="x")], r"rewards\.value.*'error'.*0\.3"),
        ("rewards", [rew("c0", "va", 0.3, status="fine")], r"rewards\.status.*'fine'"),
        ("rewards", [rew("c0", "va", "0.3")], r"rewards\.value.*'0\.3'"),
        ("selections", [dict(sel("s", "p0", "c0", 1.0), weights=[1.0])], r"selections\.weights.*1 entries"),
        ("selections", [sel("s", "p0", None, 1.0)], r"selections\.score.*candidate_id is null"),
        ("selections", [dict(sel("s", "p0", "c0", 1.0), budget=0)], r"selections\.budget.*>= 1"),
        ("arw_trace", [dict(ROWS["arw_trace"][0], sigma=0.0)], r"arw_trace\.sigma.*> 0"),
        ("metrics", "not rows", r"metrics: rows must be"),
    ],
)
def test_validation_errors_name_table_column_value(store: RunStore, table, rows, match):
    with pytest.raises(StoreError, match=match):
        store.append(table, rows)
    assert all(store.parts(name) == [] for name in TABLE_NAMES)
    assert hidden_files(store) == []


def test_validation_of_arrow_input(store: RunStore):
    base = pa.Table.from_pylist([cand("c0")])
    bad_type = base.set_column(base.schema.get_field_index("step"), "step", pa.array(["4"]))
    with pytest.raises(SchemaError, match=r"candidates\.step: Arrow type string cannot be stored as int32"):
        store.append("candidates", bad_type)
    overflow = base.set_column(base.schema.get_field_index("step"), "step", pa.array([2**40], pa.int64()))
    with pytest.raises(SchemaError, match=r"candidates\.step \(row 0\): value 1099511627776"):
        store.append("candidates", overflow)
    nulls = base.set_column(base.schema.get_field_index("seed"), "seed", pa.array([None], pa.int64()))
    with pytest.raises(SchemaError, match=r"candidates\.seed \(row 0\): is null"):
        store.append("candidates", nulls)
    naive = base.append_column("created_at", pa.array([dt.datetime(2025, 1, 1)], pa.timestamp("us")))
    with pytest.raises(SchemaError, match=r"candidates\.created_at.*naive"):
        store.append("candidates", naive)
    assert store.parts("candidates") == []


def test_candidate_ids_must_be_new(store: RunStore):
    store.append("candidates", [cand("c0")])
    with pytest.raises(SchemaError, match=r"'c0' is already stored"):
        store.append("candidates", [cand("c1"), cand("c0")])
    assert store.candidate_ids() == {"c0"}


def test_invalid_run_id(tmp_path: Path):
    for bad in ("", "../x", "a/b", ".hidden", "x" * 300):
        with pytest.raises(StoreError, match="invalid run_id"):
            RunStore(tmp_path, bad)


# ------------------------------------------------------------------------------------------------
# atomicity and concurrency


def test_crash_mid_write_leaves_only_complete_parts(store: RunStore, monkeypatch):
    store.append("rewards", [rew("c0", "va", 1.0)])
    real = pq.write_table

    def crash(table, where, **kw):  # write half a file, then die
        where.write(b"PAR1" + b"\0" * 100)
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(pq, "write_table", crash)
    with pytest.raises(KeyboardInterrupt):
        store.append("rewards", [rew("c1", "va", 2.0)])
    monkeypatch.setattr(pq, "write_table", real)
    assert len(store.parts("rewards")) == 1 and hidden_files(store) == []
    assert store.read("rewards")["candidate_id"].to_pylist() == ["c0"]

    # a hard kill leaves the hidden temp file behind: readers ignore it, cleanup_temp removes it
    junk = store.path / "rewards" / ".part-dead.parquet.999.deadbeef.tmp"
    junk.write_bytes(b"PAR1 half a file")
    assert store.read("rewards").num_rows == 1
    assert connect(store.path).sql("SELECT count(*) FROM rewards_all").fetchall()[0][0] == 1
    assert store.cleanup_temp(max_age_s=3600) == 0  # too young to be a dead writer's
    assert store.cleanup_temp(max_age_s=0) == 1 and not junk.exists()


def test_corrupt_part_is_skipped_by_name_or_a_clear_error_when_strict(store: RunStore):
    store.append("metrics", [met(None, "p0", "c0", "m", 1.0)])
    (store.path / "metrics" / "part-broken.parquet").write_bytes(b"not parquet")
    assert store.read("metrics")["value"].to_pylist() == [1.0]  # more in tests/test_corrupt_parts.py
    assert [c.path.name for c in store.skipped_parts] == ["part-broken.parquet"]
    with pytest.raises(StoreError, match="part-broken.parquet"):
        store.read("metrics", strict=True)


def test_two_threads_append_concurrently(store: RunStore):
    n_parts, errors = 20, []

    def writer(name: str) -> None:
        try:
            for i in range(n_parts):
                store.append("rewards", [rew(f"{name}-{i}-{k}", "va", float(k)) for k in range(3)])
                store.append("candidates", [cand(f"{name}-{i}")])
                store.update_run_json(timings={f"{name}-{i}": float(i)})
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in ("a", "b")]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert len(store.parts("rewards")) == 2 * n_parts
    ids = store.read("rewards")["candidate_id"].to_pylist()
    assert len(ids) == len(set(ids)) == 2 * n_parts * 3
    assert len(store.candidate_ids()) == 2 * n_parts
    assert len(store.read_run_json()["timings"]) == 2 * n_parts  # no lost update
    assert hidden_files(store) == []


# ------------------------------------------------------------------------------------------------
# cache and run.json


def test_scored_pairs_is_the_cache(store: RunStore):
    assert store.scored_pairs("va", "1") == set()
    store.append("rewards", [rew("c0", "va", 1.0), rew("c1", "va", None, status="error", error="E: x"),
                             rew("c2", "va", 1.0, version="2"), rew("c3", "vb", 1.0)])
    assert store.scored_pairs("va", "1") == {"c0", "c1"}
    assert store.scored_pairs("va", "1", include_errors=False) == {"c0"}
    assert store.scored_pairs("va", "2") == {"c2"}
    assert store.scored_pairs("vb", "1") == {"c3"}
    store.append("rewards", [rew("c1", "va", 0.7, at=5)])  # the retry
    assert store.scored_pairs("va", "1", include_errors=False) == {"c0", "c1"}


def test_run_json(tmp_path: Path):
    s = RunStore(tmp_path, "r9")
    with pytest.raises(StoreError, match="run.json does not exist"):
        s.read_run_json()
    s.write_run_json({"config": {"seed": 1, "out": Path("x")}, "status": "running", "timings": {"gen": 1.0}})
    assert s.read_run_json()["config"] == {"seed": 1, "out": "x"}
    merged = s.update_run_json(status="done", timings={"score": 2.0})
    assert merged == s.read_run_json()
    assert merged["status"] == "done" and merged["timings"] == {"gen": 1.0, "score": 2.0}
    with pytest.raises(StoreError, match="cannot serialise"):
        s.write_run_json({"bad": math.inf})
    assert s.read_run_json()["status"] == "done"
    assert [p.name for p in s.path.iterdir() if p.name.endswith(".tmp")] == []


def test_list_runs(tmp_path: Path):
    assert list_runs(tmp_path / "missing") == []
    RunStore(tmp_path, "b").create()
    RunStore(tmp_path, "a").write_run_json({"status": "new"})
    (tmp_path / "not_a_run").mkdir()
    (tmp_path / ".hidden").mkdir()
    assert list_runs(tmp_path) == ["a", "b"]


# ------------------------------------------------------------------------------------------------
# DuckDB views


def test_rewards_view_dedupe_policy(store: RunStore):
    store.append("rewards", [
        rew("c0", "va", None, status="error", error="E: 1", at=1),
        rew("c0", "va", 0.8, at=2),                                  # retry succeeded
        rew("c1", "va", None, status="error", error="E: first", at=1),
        rew("c2", "va", 0.1, at=1),
    ])
    store.append("rewards", [
        rew("c0", "va", None, status="error", error="E: later", at=3),  # a later error never hides the ok
        rew("c1", "va", None, status="error", error="E: second", at=2),  # two errors: latest wins
        rew("c2", "va", 0.3, at=2),                                      # re-scored: latest ok wins
        rew("c2", "va", 0.9, version="2", at=0),                         # another version is another key
    ])
    con = connect(store.path)
    assert con.sql("SELECT count(*) FROM rewards_all").fetchall()[0][0] == 8
    got = {(r[0], r[1]): (r[2], r[3], r[4]) for r in con.sql(
        "SELECT candidate_id, verifier_version, status, value, error FROM rewards").fetchall()}
    assert got == {("c0", "1"): ("ok", 0.8, None), ("c1", "1"): ("error", None, "E: second"),
                   ("c2", "1"): ("ok", 0.3, None), ("c2", "2"): ("ok", 0.9, None)}
    assert con.sql("SELECT * FROM rewards").columns == SCHEMAS["rewards"].names


def test_views_over_empty_run_and_missing_path(tmp_path: Path):
    s = RunStore(tmp_path, "empty").create()
    con = connect(s.path)
    for view in ("candidates", "rewards", "rewards_all", "arw_trace", "selections", "metrics"):
        rel = con.sql(f"SELECT * FROM {view}")
        table = view if view != "rewards_all" else "rewards"
        assert rel.columns == SCHEMAS[table].names
        assert rel.to_arrow_table().num_rows == 0
    types = dict(con.sql("SELECT column_name, column_type FROM (DESCRIBE candidates)").fetchall())
    assert types["parent_ids"] == "VARCHAR[]" and types["nfe"] == "BIGINT" and types["created_at"].startswith(
        "TIMESTAMP WITH TIME ZONE")
    for name in CANNED:
        assert run_canned(con, name).num_rows == 0
    with pytest.raises(StoreError, match="not a folder"):
        connect(tmp_path / "nope")
    # an empty runs root is fine too
    (tmp_path / "emptyroot").mkdir()
    assert connect(tmp_path / "emptyroot").sql("SELECT count(*) FROM metrics").fetchall()[0][0] == 0


def test_views_over_a_root_with_two_runs(tmp_path: Path):
    for run, n in (("r1", 2), ("r2", 3)):
        s = RunStore(tmp_path, run).create()
        s.write_run_json({"status": "done"})
        s.append("candidates", [cand(f"c{i}") for i in range(n)])
        s.append("rewards", [rew(f"c{i}", "va", float(i)) for i in range(n)])
    RunStore(tmp_path, "r3").create()  # a run with no parts yet
    con = connect(tmp_path)
    assert con.sql("SELECT run_id, count(*) FROM candidates GROUP BY ALL ORDER BY 1").fetchall() == [
        ("r1", 2), ("r2", 3)]
    assert con.sql("SELECT count(*) FROM rewards").fetchall()[0][0] == 5  # same candidate ids, different runs
    assert query(tmp_path, "SELECT sum(value) AS s FROM rewards WHERE run_id = $r", {"r": "r2"}).to_pylist() == [
        {"s": 3.0}]
    # one run's folder alone
    assert query(tmp_path / "r1", "SELECT count(*) AS n FROM rewards").column("n").to_pylist() == [2]


def test_union_by_name_with_a_part_lacking_newer_columns(store: RunStore):
    legacy_cols = [n for n in SCHEMAS["candidates"].names
                   if n not in ("nfe_own", "batch_index", "wall_s", "latent_path", "truth")]
    legacy = pa.Table.from_pylist([dict(cand("old"), run_id="r1", parent_ids=[], created_at=t(0))],
                                  schema=pa.schema([SCHEMAS["candidates"].field(n) for n in legacy_cols]))
    pq.write_table(legacy, store.path / "candidates" / "part-legacy.parquet")
    # while every part lacks the column, the view still has it (NULL)
    con = connect(store.path)
    assert con.sql("SELECT nfe_own, latent_path FROM candidates").fetchall() == [(None, None)]
    store.append("candidates", [cand("new", nfe_own=5, latent_path="l/new.npz")])
    read = {r["candidate_id"]: r for r in store.read("candidates").to_pylist()}
    assert read["old"]["nfe_own"] is None and read["new"]["nfe_own"] == 5
    con = connect(store.path)
    assert con.sql("SELECT candidate_id, nfe_own, latent_path FROM candidates ORDER BY 1").fetchall() == [
        ("new", 5, "l/new.npz"), ("old", None, None)]


# ------------------------------------------------------------------------------------------------
# canned queries on a small hand-made run with known answers


@pytest.fixture()
def demo(tmp_path: Path) -> RunStore:
    s = RunStore(tmp_path / "runs", "demo").create()
    cands = []
    for pi, p in enumerate(("p0", "p1")):
        for k in range(3):
            cands.append(cand(f"{p}c{k}", prompt=p, index=pi, generation=0 if k < 2 else 1,
                              parent_ids=[] if k < 2 else [f"{p}c0"], nfe=8 if k < 2 else 12,
                              nfe_own=8 if k < 2 else 4, batch_index=k if k < 2 else 0))
    s.append("candidates", cands)
    va = {"p0c0": 0.1, "p0c1": 0.2, "p0c2": 0.9, "p1c0": 0.5, "p1c1": 0.4, "p1c2": 0.3}
    vb = {"p0c0": 1.0, "p0c1": 2.0, "p0c2": 3.0, "p1c0": 4.0, "p1c1": 5.0}
    rows = [rew(c, "va", v, prompt=c[:2]) for c, v in va.items()]
    rows += [rew(c, "vb", v, prompt=c[:2], at=2) for c, v in vb.items()]
    rows += [rew("p0c1", "vb", None, prompt="p0", status="error", error="E: retried", at=1),
             rew("p1c2", "vb", None, prompt="p1", status="error", error="E: broken", at=1)]
    s.append("rewards", rows)
    sid = make_selection_id(SPEC)
    s.append("selections", [sel(sid, "p0", "p0c2", 6.9), sel(sid, "p1", None, None)])
    s.append("metrics", [met(None, "p0", "p0c0", "m1", 1.0), met(None, "p1", "p1c0", "m1", 3.0),
                         met(None, "p0", "p0c0", "m2", 10.0, held_out=False),
                         met(sid, "p0", "p0c2", "m1", 2.0), met(sid, "p1", "p1c0", "m1", 6.0),
                         met(sid, "p1", "p1c0", "m3", math.nan)])
    return s


def test_winners(demo: RunStore):
    con = connect(demo.path)
    sid = make_selection_id(SPEC)
    w = winners(con, sid).to_pylist()
    assert [(r["prompt_id"], r["candidate_id"], r["verifier"], r["value"], r["used"]) for r in w] == [
        ("p0", "p0c2", "va", 0.9, True), ("p0", "p0c2", "vb", 3.0, True), ("p1", None, None, None, None)]
    assert w[0]["prompt_index"] == 0 and w[2]["prompt_index"] == 1 and w[0]["score"] == 6.9
    assert winners(con, "other").num_rows == 0
    assert winners(con).num_rows == 3


def test_metric_table(demo: RunStore):
    con = connect(demo.path)
    sid = make_selection_id(SPEC)
    rows = {r["metric"]: r for r in metric_table(con, sid).to_pylist()}
    assert set(rows) == {"m1", "m2", "m3"}
    m1 = rows["m1"]
    assert (m1["n_baseline"], m1["baseline_mean"], m1["n_selected"], m1["selected_mean"], m1["change"]) == (
        2, 2.0, 2, 4.0, 2.0)
    assert m1["held_out"] is True
    m2 = rows["m2"]
    assert (m2["n_baseline"], m2["baseline_mean"], m2["n_selected"], m2["selected_mean"], m2["change"]) == (
        1, 10.0, 0, None, None)
    assert m2["held_out"] is False
    assert rows["m3"]["n_selected"] == 0 and rows["m3"]["selected_mean"] is None  # NaN stored as null


def test_reward_wide(demo: RunStore):
    con = connect(demo.path)
    wide = reward_wide(con)
    assert wide.column_names == ["run_id", "prompt_id", "prompt_index", "candidate_id", "generation", "va", "vb"]
    got = {r["candidate_id"]: (r["va"], r["vb"]) for r in wide.to_pylist()}
    assert got == {"p0c0": (0.1, 1.0), "p0c1": (0.2, 2.0), "p0c2": (0.9, 3.0), "p1c0": (0.5, 4.0),
                   "p1c1": (0.4, 5.0), "p1c2": (0.3, None)}
    assert wide.column("candidate_id").to_pylist() == ["p0c0", "p0c1", "p0c2", "p1c0", "p1c1", "p1c2"]


def test_candidates_per_prompt_and_summary(demo: RunStore):
    con = connect(demo.path)
    cpp = candidates_per_prompt(con).to_pylist()
    assert [(r["prompt_id"], r["prompt_index"], r["n_candidates"], r["n_generations"], r["max_generation"],
             r["max_nfe"], r["total_nfe"], r["n_rewards_ok"], r["n_rewards_error"]) for r in cpp] == [
        ("p0", 0, 3, 2, 1, 12, 20, 6, 0), ("p1", 1, 3, 2, 1, 12, 20, 5, 1)]
    summ = {r["verifier"]: r for r in rewards_summary(con).to_pylist()}
    assert (summ["va"]["n_ok"], summ["va"]["n_error"], summ["vb"]["n_ok"], summ["vb"]["n_error"]) == (6, 0, 5, 1)
    assert summ["vb"]["mean"] == pytest.approx(3.0) and summ["va"]["max"] == 0.9
    assert summ["va"]["wall_s"] == pytest.approx(6 * 0.25)
    for name in CANNED:
        if name in ("ablation", "bon_at_k"):  # need analysis files / budgeted selections this run lacks
            continue
        assert run_canned(con, name).num_rows > 0
    with pytest.raises(UnknownNameError, match="winners"):
        run_canned(con, "nope")


def test_names_that_become_paths_are_checked_on_write(store: RunStore):
    """Issue 10 case 6: the store refuses ids that would leave the run folder as file names."""
    for bad in ["../x", "/abs", "a/b", ".hidden", "x" * 201]:
        with pytest.raises(SchemaError, match="not a safe name"):
            store.append("candidates", [cand("c0", prompt=bad)])
        with pytest.raises(SchemaError, match="candidate_id"):
            store.append("candidates", [cand(bad)])
        with pytest.raises(SchemaError, match="selection_id"):
            store.append("selections", [sel(bad, "p0", "c0", 1.0)])
    with pytest.raises(SchemaError, match="leaves the run folder"):
        store.append("candidates", [cand("c0", media_path="media/../../escape.mp4")])
    assert store.read("candidates").num_rows == 0 and store.read("selections").num_rows == 0
    assert store.append("candidates", [cand("c0", prompt="-0Gj8-vB1q4_000030")]) is not None
