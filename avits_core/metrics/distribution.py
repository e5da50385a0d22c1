"""Set-level distribution metrics of a run: FVD, KVD and FAD of the baseline set and of a selection's
set against reference clips (``evaluation.distribution`` of the config; recipes in docs/metrics.md).

Moved here from the runner: it reads the run's tables and media through the run context it is given
(``ctx.cfg``, ``ctx.store``, ``ctx.run_id``) and imports nothing of ``avits_core.runner``.
"""

from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from avits_core.errors import ConfigError
from avits_core.store import fs as sfs

if TYPE_CHECKING:  # pragma: no cover
    from avits_core.config import DistributionConfig
    from avits_core.metrics.features import FeatureSet

log = logging.getLogger(__name__)


def _distribution_extractors(dist: "DistributionConfig") -> dict[str, Any]:
    """{"video": I3D features, "audio": CLAP or AudioCLIP embedding} for the kinds the config sets."""
    from avits_core.metrics.features import ClapAudioEmbedding, I3DVideoFeatures

    out: dict[str, Any] = {}
    if dist.video is not None:
        v = dist.video
        if v.extractor == "i3d-jb":
            from avits_core.metrics.i3d_javisbench import JavisBenchI3DFeatures

            out["video"] = JavisBenchI3DFeatures(v.path, device=v.device, batch_size=v.batch_size,
                                                 num_frames=v.num_frames or 24, size=v.size)
        else:
            out["video"] = I3DVideoFeatures(v.path, device=v.device, num_frames=v.num_frames or 16, size=v.size,
                                            batch_size=v.batch_size, sampling=v.sampling)
    if dist.audio is not None:
        a = dist.audio
        if a.extractor == "audioclip":
            from avits_core.metrics.audioclip import AudioClipEmbedding

            out["audio"] = AudioClipEmbedding(a.model_path, device=a.device, batch_size=a.batch_size)
        else:
            out["audio"] = ClapAudioEmbedding(a.model_path, device=a.device, batch_size=a.batch_size)
    return out


def _media_features(paths: Sequence[Path], extractors: dict[str, Any], chunk: int = 32) -> dict[str, "FeatureSet"]:
    """Features of the mp4 files, per kind; the files are read ``chunk`` at a time (bounded memory)."""
    from avits_core.media import AVClip, read_mp4, read_video
    from avits_core.metrics.features import FeatureSet, audio_features, video_features

    def video_only(p: Path) -> AVClip:  # no audio track needed (e.g. silent reference videos for FVD)
        frames, fps = read_video(p)
        return AVClip(video=frames, fps=fps, audio=np.zeros(0, np.float32), sample_rate=1, meta={"path": str(p)})

    read = read_mp4 if "audio" in extractors else video_only
    parts: dict[str, list[np.ndarray]] = {k: [] for k in extractors}
    names: dict[str, str] = {}
    for i in range(0, len(paths), chunk):
        clips = [read(p) for p in paths[i:i + chunk]]
        for kind, ext in extractors.items():
            fs = video_features(clips, ext) if kind == "video" else audio_features(clips, ext)
            parts[kind].append(fs.features)
            names[kind] = fs.extractor
    return {k: FeatureSet(np.concatenate(parts[k]), names[k]) for k in extractors if parts[k]}


def evaluate_distribution(ctx: Any, selection_id: str) -> int:
    """Set-level FVD / KVD / FAD (``evaluation.distribution``) of the baseline set (the first candidate
    of each prompt) and of ``selection_id``'s set against the reference clips. Returns #rows written.

    One metrics row per (set, metric) with ``prompt_id``/``candidate_id`` null, ``held_out`` true and
    the extractor's name. Idempotent: a (selection_id, metric) that already has a set-level row is not
    computed again (and no model is loaded when nothing is missing). Features are extracted from the
    stored mp4 files (each candidate once, even when both sets hold it). Reference features are cached
    in ``<run>/analysis/reference-features-<extractor>.npz`` under a hash of the reference files
    (path, size, mtime), so a changed reference set is extracted again. A set of fewer than 2 clips
    gets a null value (a distance needs 2 samples per set).
    """
    import hashlib
    import re

    from avits_core.metrics.features import FeatureSet, fad, fvd, kvd_video

    dist = ctx.cfg.evaluation.distribution
    if dist is None:
        return 0
    sels = [r for r in ctx.store.read("selections").to_pylist() if r["selection_id"] == selection_id]
    if not sels:
        raise ConfigError(f"no selection {selection_id!r} in run {ctx.run_id}")
    have = {(m["selection_id"], m["metric"])
            for m in ctx.store.read("metrics", ["selection_id", "candidate_id", "metric"]).to_pylist()
            if m["candidate_id"] is None}
    cands = ctx.store.read("candidates").select(["prompt_id", "candidate_id", "media_path"]).to_pylist()
    media = {c["candidate_id"]: c["media_path"] for c in cands}
    first: dict[str, str] = {}
    for c in sorted(cands, key=lambda c: c["candidate_id"]):
        first.setdefault(c["prompt_id"], c["candidate_id"])
    sets: dict[str | None, list[str]] = {
        None: sorted(first.values()),
        selection_id: sorted(s["candidate_id"] for s in sels if s["candidate_id"] is not None),
    }
    kind_of = {"fvd": "video", "kvd": "video", "fad": "audio"}
    todo = [(sid, m) for sid in sets for m in dist.metric_names() if (sid, m) not in have]
    if not todo:
        return 0
    extractors = {k: e for k, e in _distribution_extractors(dist).items() if k in {kind_of[m] for _, m in todo}}

    # reference features: cached per extractor, keyed by the reference files
    refs = dist.reference_files()
    key = hashlib.sha256(json.dumps([[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in refs]).encode()).hexdigest()
    cache_dir = ctx.store.path / "analysis"
    ref_feats: dict[str, FeatureSet] = {}
    cache_path: dict[str, Path] = {}
    for kind, ext in extractors.items():
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", ext.name)[:80]
        cache_path[kind] = cache_dir / f"reference-features-{safe}-{hashlib.sha256(ext.name.encode()).hexdigest()[:8]}.npz"
        if cache_path[kind].is_file():
            src = io.BytesIO(sfs.read_bytes(cache_path[kind])) if sfs.is_remote(cache_path[kind]) else cache_path[kind]
            with np.load(src) as z:
                if str(z["key"]) == key and str(z["extractor"]) == ext.name:
                    ref_feats[kind] = FeatureSet(z["features"], ext.name)
                    log.info("reference %s features from %s", kind, cache_path[kind])
    missing = {k: e for k, e in extractors.items() if k not in ref_feats}
    if missing:
        t0 = time.perf_counter()
        new = _media_features(refs, missing)
        for kind, fs in new.items():
            buf = io.BytesIO()
            np.savez(buf, features=fs.features, key=np.array(key), extractor=np.array(fs.extractor))
            sfs.put_bytes(cache_path[kind], buf.getvalue())  # one whole PUT, or an atomic local write
            ref_feats[kind] = fs
        log.info("reference features (%s) of %d clips in %.2fs", ", ".join(new), len(refs), time.perf_counter() - t0)

    # generated features: each needed candidate once
    need = sorted({cid for sid, _ in todo for cid in sets[sid]})
    gen = _media_features([ctx.store.path / media[c] for c in need], extractors) if need else {}
    row_of = {c: i for i, c in enumerate(need)}
    fns = {"fvd": fvd, "kvd": kvd_video, "fad": fad}
    rows = []
    for sid, m in todo:
        kind, ext = kind_of[m], extractors[kind_of[m]]
        ids = sets[sid]
        value, name = None, ext.name
        if len(ids) >= 2:
            part = FeatureSet(gen[kind].features[[row_of[c] for c in ids]], gen[kind].extractor)
            res = fns[m](part, ref_feats[kind], protocol=dist.protocol)
            value, name = res.value, res.extractor
            log.info("%s %s = %.6g (n=%d generated vs %d reference, %s)", sid or "baseline", m, res.value,
                     res.n_a, res.n_b, res.extractor)
        else:
            log.warning("%s: %s needs at least 2 clips, the set has %d; stored as null", sid or "baseline", m, len(ids))
        rows.append(dict(run_id=ctx.run_id, selection_id=sid, prompt_id=None, candidate_id=None, metric=m,
                         value=value, held_out=True, extractor=name))
    ctx.store.append("metrics", rows)
    return len(rows)
