"""``avits evaluate`` I/O counts: rewards-table reads of the scoring step and clip decodes per step.

Plain script; prints its figures. Run: ``.venv/bin/python bench/bench_evaluate_folder.py [N]``.

Writes N (default 16) SynthAV-like clips and 3 reference clips to a temp folder, then evaluates them
with av_align, temporal_flickering, synth_text and the set-level FVD + FAD (a scripted stand-in I3D
and a seeded tiny AudioCLIP tower, as the tests build them), in batches of 4, for the ``avits`` and
``javisbench`` protocols. For each: wall and CPU seconds of the scoring batches and of ``finish``,
how often each table was read and each clip reader called, the CPU of ``read_entry`` over the N
clips, and a checksum of the metrics rows (equal checksums = the same numbers).

Figures (2 cores, shared, N = 16): rewards reads in scoring 12 -> 4 (once per batch instead of once
per metric per batch); javisbench clips decoded by OpenCV and then again by read_mp4 for their audio
-> OpenCV + read_mp4_audio (no second video decode), read_entry CPU 0.34 -> 0.17 s; checksums equal.
"""

from __future__ import annotations

import collections
import csv
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from avclips import jump_clip  # noqa: E402
from tiny_models import build_tiny_i3d_and_audioclip  # noqa: E402

import avits_core.evaluate_folder as ef  # noqa: E402
import avits_core.media as media  # noqa: E402
from avits_core.evaluate_folder import read as ef_read  # noqa: E402
from avits_core.store.parquet import RunStore  # noqa: E402

counts: collections.Counter = collections.Counter()


def _count(owner: object, name: str, key: str) -> None:
    f = getattr(owner, name)

    def wrapped(*a, **k):  # noqa: ANN002, ANN003, ANN202
        counts[key] += 1
        return f(*a, **k)

    setattr(owner, name, wrapped)


def main(n: int) -> None:
    for name in ("read_mp4", "read_video", "read_mp4_audio"):
        _count(media, name, name)  # read_entry imports them from avits_core.media when it runs
    _count(ef_read, "_read_cv2_video", "opencv_video")
    real_read = RunStore.read

    def read(self, table, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        counts[f"table:{table}"] += 1
        return real_read(self, table, *a, **k)

    RunStore.read = read
    tmp = Path(tempfile.mkdtemp(prefix="bench-eval-"))
    folder, ref = tmp / "clips", tmp / "ref"
    folder.mkdir()
    ref.mkdir()
    for i in range(n):
        media.write_mp4(jump_clip(seed=i, video_noise=2.0, audio_noise=0.01), folder / f"p{i}.mp4")
    for i in range(3):
        media.write_mp4(jump_clip(seed=100 + i), ref / f"r{i}.mp4")
    with open(tmp / "p.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text"])
        w.writerows([f"p{i}", "x"] for i in range(n))
    i3d, ac, arch = build_tiny_i3d_and_audioclip(tmp)
    for proto in ("avits", "javisbench"):
        metrics = {"av_align": {}, "temporal_flickering": {}, "synth_text": {},
                   "fvd": {"path": str(i3d), "extractor": "i3d", "num_frames": 4, "size": 16},
                   "fad": {"extractor": "audioclip", "path": str(ac), **arch}}
        spec = ef.EvalSpec(folder=folder, prompts=tmp / "p.csv", out=tmp / f"ev-{proto}", protocol=proto,
                           metrics=metrics, reference=ref, batch_size=4)
        plan = ef.prepare(spec)
        store = plan.store()
        counts.clear()
        t0, c0 = time.perf_counter(), time.process_time()
        for b in ef.batches(plan):
            ef.score_entries(plan, store, b)
        t1, c1 = time.perf_counter(), time.process_time()
        score = dict(counts)
        counts.clear()
        ef.finish(plan, store)
        t2, c2 = time.perf_counter(), time.process_time()
        fin = dict(counts)
        e0 = time.process_time()
        for e in plan.entries:
            ef.read_entry(e, proto)
        e1 = time.process_time()
        rows = sorted((r["metric"], r["candidate_id"] or "", r["value"]) for r in store.read("metrics").to_pylist())
        digest = hashlib.sha1(json.dumps(rows).encode()).hexdigest()[:12]
        print(f"{proto:10s} N={n}: scoring {t1 - t0:.2f} s wall {c1 - c0:.2f} s CPU {score}")
        print(f"{'':10s} finish {t2 - t1:.2f} s wall {c2 - c1:.2f} s CPU {fin}")
        print(f"{'':10s} read_entry x{n}: {e1 - e0:.2f} s CPU; metrics rows sha1 {digest}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 16)
