"""ITS has real headroom on SynthAV, and single verifiers show their trade-offs (bench/headroom.py)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def study():
    r = subprocess.run([sys.executable, str(REPO / "bench/headroom.py"), "--prompts", "12", "--json"],
                       capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    return {row["rule"]: row for row in out["rows"]}


def test_arw_selection_beats_the_first_candidate_on_held_out_metrics(study):
    first, arw = study["first (no search)"], study["ARW: av_align+av_sync+synth_text"]
    assert arw["sync_error_ms"] < 0.5 * first["sync_error_ms"]
    assert arw["bounce_count_correct"] >= first["bounce_count_correct"]
    assert arw["attribute_accuracy"] >= first["attribute_accuracy"]


def test_single_verifiers_show_trade_offs(study):
    first = study["first (no search)"]
    text_only = study["synth_text alone"]
    sync_only = study["av_sync alone"]
    quality_only = study["quality alone"]
    # synth_text alone fixes attributes but not sync
    assert text_only["attribute_accuracy"] == pytest.approx(1.0)
    assert text_only["sync_error_ms"] > 0.8 * first["sync_error_ms"]
    # av_sync alone fixes sync but not attributes
    assert sync_only["sync_error_ms"] < 0.5 * first["sync_error_ms"]
    assert sync_only["attribute_accuracy"] < text_only["attribute_accuracy"]
    # quality alone cleans the picture and sound but leaves sync broken
    assert quality_only["noise_level"] < 0.5 * first["noise_level"]
    assert quality_only["sync_error_ms"] > 0.8 * first["sync_error_ms"]
