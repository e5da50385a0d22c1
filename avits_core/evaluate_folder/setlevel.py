"""Set-level metrics (FVD, KVD, FAD) of the readable clips against a reference folder or JavisBench's
feature cache, and their per-category values."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from avits_core.errors import ConfigError
from avits_core.media import AVClip

if TYPE_CHECKING:
    from avits_core.evaluate_folder.plan import EvalPlan

log = logging.getLogger("avits_core.evaluate_folder")

def set_extractors(set_metrics: Mapping[str, Mapping[str, Any]], protocol: str = "avits") -> dict[str, Any]:
    """Feature extractors of the set-level metrics. FVD/KVD: ``extractor: i3d-jb`` (JavisBench's I3D state
    dict at ``path``; the default with the javisbench protocol) or ``i3d`` (a StyleGAN-V TorchScript).
    FAD: ``extractor: audioclip`` (``path`` = an AudioCLIP checkpoint; the default with the javisbench
    protocol) or ``extractor: clap`` (``model_path``)."""
    from avits_core.metrics.audioclip import AudioClipEmbedding
    from avits_core.metrics.features import ClapAudioEmbedding, I3DVideoFeatures

    ex: dict[str, Any] = {}
    if "fvd" in set_metrics or "kvd" in set_metrics:
        p = dict(set_metrics.get("fvd") or set_metrics.get("kvd") or {})
        kind = p.pop("extractor", "i3d-jb" if protocol == "javisbench" else "i3d")
        if "path" not in p:
            raise ConfigError("fvd/kvd need the I3D weights: --metric-param fvd.path=<i3d_torchscript.pt "
                              "(extractor i3d) or i3d_pretrained_400.pt (extractor i3d-jb, JavisBench's)>")
        path = p.pop("path")
        p.pop("subset_size", None)
        if kind == "i3d":
            ex["video"] = I3DVideoFeatures(path, **p)
        elif kind == "i3d-jb":
            from avits_core.metrics.i3d_javisbench import JavisBenchI3DFeatures

            ex["video"] = JavisBenchI3DFeatures(path, **p)
        else:
            raise ConfigError(f"fvd: extractor must be i3d or i3d-jb, got {kind!r}")
        ex["video"].check_ready()
    if "fad" in set_metrics:
        p = dict(set_metrics["fad"])
        kind = p.pop("extractor", "audioclip" if protocol == "javisbench" else "clap")
        if kind == "audioclip":
            if "path" not in p:
                raise ConfigError("fad with AudioCLIP needs its checkpoint: --metric-param fad.path=AudioCLIP-Full-Training.pt")
            ex["audio"] = AudioClipEmbedding(p.pop("path"), **p)
        elif kind == "clap":
            ex["audio"] = ClapAudioEmbedding(**p)
        else:
            raise ConfigError(f"fad: extractor must be audioclip or clap, got {kind!r}")
        ex["audio"].check_ready()
    return ex


def load_reference_cache(path: Path) -> dict[str, np.ndarray]:
    """JavisBench's pre-extracted reference features (``cache/fvd_fad/<set>-vanilla-max4s.pt``): a dict
    with ``video`` (N, 400) I3D logits and/or ``audio`` (N, 1024) AudioCLIP features, row i = CSV row i."""
    import torch

    try:
        d = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"--reference {path}: cannot read it as a torch feature cache: {exc}") from None
    if not isinstance(d, Mapping) or not ({"video", "audio"} & set(d)):
        raise ConfigError(f"--reference {path}: expected a dict with 'video' and/or 'audio' feature tensors")
    out = {}
    for k in ("video", "audio"):
        if k in d:
            a = np.asarray(d[k].detach().cpu().double().numpy() if hasattr(d[k], "detach") else d[k], dtype=np.float64)
            if a.ndim != 2:
                raise ConfigError(f"--reference {path}: {k!r} features must be 2-D, got shape {a.shape}")
            out[k] = a
    return out


def set_level_rows(plan: EvalPlan, clips: Sequence[AVClip], index: Sequence[int]) -> list[dict[str, Any]]:
    """FVD/KVD/FAD of the readable clips (``index``: their CSV rows) against the reference: a folder of
    real clips, or JavisBench's feature cache (rows paired with the CSV rows, as the evaluator pairs
    them). One metrics row per metric; the features are saved for the per-category breakdown."""
    from avits_core.media import read_mp4
    from avits_core.metrics.features import FeatureSet, audio_features, fad, fvd, kvd_video, video_features

    ex = set_extractors(plan.set_metrics, plan.spec.protocol)
    ref = Path(plan.spec.reference)
    if len(clips) < 2:
        raise ConfigError(f"set-level metrics need >= 2 readable clips, got {len(clips)}")
    feats: dict[str, np.ndarray] = {"index": np.asarray(index, np.int64)}
    if ref.is_file():
        cache = load_reference_cache(ref)
        for kind in ("video", "audio"):
            if kind in ex and kind not in cache:
                raise ConfigError(f"--reference {ref} has no {kind!r} features")
            if kind in cache and len(cache[kind]) <= max(index):
                raise ConfigError(f"--reference {ref}: {len(cache[kind])} {kind} rows for a CSV row {max(index)}")
        real = {k: FeatureSet(v[list(index)], ex[k].name) for k, v in cache.items() if k in ex}
        feats["paired"] = np.ones(1, bool)
        log.warning("reference features from %s are taken to come from %s; only JavisBench's own cache "
                    "with the javisbench extractors is comparable", ref, {k: e.name for k, e in ex.items()})
    else:
        ref_paths = sorted(p for p in ref.rglob("*.mp4"))
        if len(ref_paths) < 2:
            raise ConfigError(f"--reference {ref}: need >= 2 mp4 files, found {len(ref_paths)}")
        refs = [read_mp4(p) for p in ref_paths]
        real = {}
        if "video" in ex:
            real["video"] = video_features(refs, ex["video"])
        if "audio" in ex:
            real["audio"] = audio_features(refs, ex["audio"])
        feats["paired"] = np.zeros(1, bool)
    rows = []
    proto = plan.spec.protocol
    if "video" in ex:
        g = video_features(clips, ex["video"])
        feats["video_gen"], feats["video_ref"] = g.features, real["video"].features
        if "fvd" in plan.set_metrics:
            rows.append(fvd(g, real["video"], protocol=proto))
        if "kvd" in plan.set_metrics:
            rows.append(kvd_video(g, real["video"], protocol=proto))
    if "audio" in ex:
        g = audio_features(clips, ex["audio"])
        feats["audio_gen"], feats["audio_ref"] = g.features, real["audio"].features
        rows.append(fad(g, real["audio"], protocol=proto))
    np.savez(plan.out / f"set-features-{plan.evaluation_id}.npz", **feats)
    return [{"selection_id": plan.evaluation_id, "prompt_id": None, "candidate_id": None, "metric": d.metric,
             "value": d.value, "held_out": True, "extractor": d.extractor} for d in rows]


def set_level_by_category(plan: EvalPlan, metric: str, indices: Sequence[int]) -> float | None:
    """One set metric on the prompts at CSV rows ``indices`` (the evaluator's per-category FVD/KVD/FAD:
    generated and reference rows of those prompts). None without paired reference rows (a folder of
    real clips is not paired with prompts) or with fewer than 2 rows."""
    from avits_core.metrics.features import FeatureSet, fad, fvd, kvd_video

    path = plan.out / f"set-features-{plan.evaluation_id}.npz"
    if not path.is_file():
        return None
    z = np.load(path)
    if not bool(z["paired"][0]):
        return None
    pos = {int(i): k for k, i in enumerate(z["index"])}
    rows = [pos[i] for i in indices if i in pos]
    if len(rows) < 2:
        return None
    kind = "audio" if metric == "fad" else "video"
    if f"{kind}_gen" not in z:
        return None
    a, b = FeatureSet(z[f"{kind}_gen"][rows], "x"), FeatureSet(z[f"{kind}_ref"][rows], "x")
    fn = {"fvd": fvd, "kvd": kvd_video, "fad": fad}[metric]
    try:
        return float(fn(a, b, protocol=plan.spec.protocol).value)
    except ValueError as exc:
        log.warning("%s on %d prompts: %s", metric, len(rows), exc)
        return None

