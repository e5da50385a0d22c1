"""One bad file (issue 10, case 8): a corrupt or truncated Parquet part is reported by name and
skipped by RunStore.read and the DuckDB views; the rest stays queryable; corrupt_parts lists it
and quarantine_parts moves it aside."""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from avits_core.store import RunStore, StoreError, connect, query, winners
from avits_core.store.duck import skipped_parts
from avits_core.store.parts import QUARANTINE_DIR, corrupt_parts, quarantine_parts
from test_store import cand, met, rew, sel


@pytest.fixture()
def run(tmp_path: Path):
    """A run with 3 rewards parts (2 rows each), a selection and metrics; then one rewards part is
    truncated and one garbage file sits among the metrics parts."""
    st = RunStore(tmp_path / "runs", "r1").create()
    st.append("candidates", [cand("c0"), cand("c1", index=0)])
    parts = [st.append("rewards", [rew("c0", "va", 0.1), rew("c0", "vb", 0.2)]),
             st.append("rewards", [rew("c1", "va", 0.3), rew("c1", "vb", 0.4)]),
             st.append("rewards", [rew("c1", "vc", 0.5), rew("c0", "vc", 0.7)])]
    st.append("selections", [sel("s1", "p0", "c1", 0.9)])
    st.append("metrics", [met(None, "p0", "c0", "m", 1.0), met("s1", "p0", "c1", "m", 2.0)])
    truncated = parts[1]
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])  # e.g. a copy that ran out of disk
    garbage = st.path / "metrics" / "part-garbage.parquet"
    garbage.write_bytes(b"this is not parquet at all")
    return st, truncated, garbage


def test_store_read_skips_a_truncated_part_and_names_it(run, caplog):
    st, truncated, _ = run
    with caplog.at_level(logging.WARNING):
        t = st.read("rewards")
    assert sorted(zip(t["candidate_id"].to_pylist(), t["verifier"].to_pylist())) == [
        ("c0", "va"), ("c0", "vb"), ("c0", "vc"), ("c1", "vc")]  # the 4 rows of the 2 good parts
    assert [c.path for c in st.skipped_parts] == [truncated] and st.skipped_parts[0].table == "rewards"
    assert truncated.name in caplog.text
    with pytest.raises(StoreError, match=truncated.name):
        st.read("rewards", strict=True)
    assert st.read("metrics").num_rows == 2  # the garbage file is skipped too
    assert st.scored_pairs("va", "1") == {"c0"}  # c1's lost rows count as not scored: a resume redoes them


def test_duckdb_views_skip_bad_parts_and_other_tables_are_untouched(run, caplog):
    st, truncated, garbage = run
    with caplog.at_level(logging.WARNING):
        con = connect(st.path)
    assert sorted(p.path.name for p in skipped_parts(con)) == sorted([truncated.name, garbage.name])
    assert truncated.name in caplog.text and garbage.name in caplog.text
    assert con.sql("SELECT count(*) FROM rewards_all").fetchall()[0][0] == 4
    assert con.sql("SELECT count(*) FROM metrics").fetchall()[0][0] == 2
    assert con.sql("SELECT count(*) FROM candidates").fetchall()[0][0] == 2
    assert winners(con).num_rows == 1  # canned queries still work
    # the same across a runs root
    assert query(st.root, "SELECT count(*) AS n FROM rewards")["n"].to_pylist() == [4]


def test_corrupt_parts_lists_and_quarantine_moves_them_aside(run):
    st, truncated, garbage = run
    # a part with an intact footer but a column of the wrong type is found too (full read)
    wrong = st.path / "selections" / "part-wrongtype.parquet"
    pq.write_table(pa.table({"selection_id": ["s2"], "budget": ["four"]}), wrong)
    found = corrupt_parts(st.path)
    assert [(c.table, c.path.name) for c in found] == [
        ("rewards", truncated.name), ("selections", "part-wrongtype.parquet"), ("metrics", "part-garbage.parquet")]
    assert all(c.reason for c in found) and "budget" in found[1].reason
    assert [(p, r) for p, r, _ in found][0][0] == truncated  # (path, reason) first, as `avits doctor` reads it
    moved = quarantine_parts(st.path)
    assert [new.relative_to(st.path).as_posix() for _, new in moved] == [
        f"{QUARANTINE_DIR}/rewards/{truncated.name}", f"{QUARANTINE_DIR}/selections/part-wrongtype.parquet",
        f"{QUARANTINE_DIR}/metrics/part-garbage.parquet"]
    assert not truncated.exists() and (st.path / QUARANTINE_DIR / "rewards" / truncated.name).exists()
    assert corrupt_parts(st.path) == [] and skipped_parts(connect(st.path)) == []
    fresh = RunStore(st.root, st.run_id)
    assert fresh.read("rewards").num_rows == 4 and fresh.skipped_parts == []
    with pytest.raises(StoreError, match="not a part file"):
        quarantine_parts(st.path, [st.path / "run.json"])


def test_a_healthy_run_keeps_the_live_glob(tmp_path):
    st = RunStore(tmp_path, "ok").create()
    st.append("metrics", [met(None, "p0", "c0", "m", 1.0)])
    con = connect(st.path)
    st.append("metrics", [met(None, "p0", "c1", "m", 2.0)])  # added after connect: still seen
    assert con.sql("SELECT count(*) FROM metrics").fetchall()[0][0] == 2 and skipped_parts(con) == []
