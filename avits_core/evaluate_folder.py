"""Evaluate a folder of generated mp4 files (any model's outputs) without generating anything.

``avits evaluate FOLDER --prompts CSV [--reference DIR] [--protocol javisbench] [--metrics ...]``
is this module behind a thin Prefect flow (``flows/evaluate.py``). Plain Python, no Prefect.

Which file belongs to which prompt (decisions)
    One mp4 per prompt, at the top level of FOLDER. ``naming="id"``: prompt ``P`` is ``P.mp4``. A
    prompt id that cannot be one file name as it is (``/``, ``\\``, a space, any character outside
    ``A-Z a-z 0-9 . _ = + -``, a leading ``.``) is refused before any work with an error naming the
    id and its row: it is never rewritten into another name (the project's rule for every name that
    becomes a path: a rewritten id would no longer be the key the tables join on, and two ids could
    meet in one file). ``naming="javisbench"``: row i of the CSV is ``sample_{i:04d}.mp4``, as
    JavisBench's evaluator expects. ``naming="auto"`` (default) picks ``javisbench`` when every mp4 in
    the folder is named ``sample_<digits>.mp4`` and none of them is a prompt id's file, else ``id``.
    With the JavisBench protocol a ``.wav`` next to an mp4 (same stem) is read as that clip's audio,
    as the evaluator reads ``sample_0000.wav``; otherwise the audio comes from the mp4.

What is never silently skipped
    * a prompt without its file: an error row ("missing: ...") for every metric of that prompt;
    * an mp4 that matches no prompt (an extra clip): a ``ConfigError`` listing them before any work,
      unless ``allow_extra`` (then they are listed in ``evaluation.json`` and logged);
    * an mp4 without an audio stream: error rows for the metrics that read audio, values for the
      video-only ones (``temporal_flickering``, ``clip``...);
    * an unreadable (corrupt) mp4: an error row for every metric of that prompt, naming the file.

Tables (an ``avits`` run folder at ``out``: DuckDB, ``avits sql`` work on it)
    ``rewards``: the per-clip cache, one row per (clip, metric): ``candidate_id`` is
    ``<prompt_id>+<12 hex of the file's blake2b>`` (a safe name, should it become a path), so a clip
    replaced by a new file is scored again;
    ``verifier_version`` is the verifier's ``cache_version``, which includes the protocol. An ``ok``
    row is never recomputed; error rows are retried by the next evaluation.
    ``metrics``: one row per (clip, metric) with ``selection_id`` = the evaluation id (a hash of the
    protocol, the metric specs and the clip set), ``held_out`` true, ``value`` null for an error
    row and ``extractor`` naming the model and protocol (``clip:openai/clip-vit-base-patch32+
    protocol=javisbench``); set-level rows (FVD, KVD, FAD) have null prompt/candidate.
    Set-level metrics compare the readable clips with ``reference``: a folder of real mp4 clips
    (unpaired), or JavisBench's feature cache ``<set>-vanilla-max4s.pt`` (javisbench protocol only;
    reference row i pairs with CSV row i as in the evaluator, which also gives per-category values);
    the features are kept in ``set-features-<evaluation id>.npz``.
    ``summary.json``: laid out like JavisBench's evaluator output (metric keys ``clip_score``,
    ``clap_score``, ``av_align``, ``ib_tv``...; with category columns ``{"overall", "all", "0": [...],
    ...}``, the per-aspect lists indexed by category; without them, one number per metric), so the
    two can be diffed. Means are over the clips that have a value; ``all`` holds null for error rows
    (the evaluator has no error rows: it stops). ``evaluation.json``: provenance (folder, prompts,
    protocol, metric specs and versions, counts, every error by prompt). ``categories.json``: per
    (metric, aspect, category) n / mean / n_failed rows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from avits_core.errors import ConfigError, MediaError, MediaFormatError
from avits_core.media import AVClip
from avits_core.prompts import Prompt, load_prompts
from avits_core.store import fs as sfs
from avits_core.verifiers.base import Verifier

log = logging.getLogger(__name__)

PROTOCOLS = ("avits", "javisbench")
#: Weight-free default metrics.
DEFAULT_METRICS = ("av_align", "temporal_flickering")
SET_METRICS = ("fvd", "kvd", "fad")
#: avits metric name -> the key JavisBench's evaluator writes in its JSON.
JAVISBENCH_KEYS = {
    "clip": "clip_score", "clap": "clap_score", "av_align": "av_align", "ib_tv": "ib_tv", "ib_ta": "ib_ta",
    "ib_av": "ib_av", "avh_score": "avh_score", "javis_score": "javis_score", "desync": "desync",
    "fvd": "fvd", "kvd": "kvd", "fad": "fad", "vqascore": "vqascore",
}
#: Categories per aspect in JavisBench's taxonomy (its configs/category.json): cat0 event scenario 5,
#: cat1 visual style 3, cat2 sound type 5, cat3 temporal composition 3, cat4 spatial composition 3.
JAVISBENCH_CATEGORIES = {0: 5, 1: 3, 2: 5, 3: 3, 4: 3}
#: Verifiers whose published variants are chosen by another parameter: name -> (parameter, {protocol: value}).
PROTOCOL_PARAMS: dict[str, tuple[str, dict[str, str]]] = {
    "desync": ("policy", {"javisbench": "javisbench"}),
    "vqascore": ("video_policy", {"javisbench": "tile"}),
}
_SAFE = re.compile(r"^[A-Za-z0-9_=+-][A-Za-z0-9._=+-]*$")
_SAMPLE = re.compile(r"^sample_(\d+)\.mp4$")
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]{0,199}$")


def clip_file_name(prompt_id: str, *, where: str = "prompt") -> str:
    """The mp4 file name of a prompt id, ``<id>.mp4``; a ConfigError naming the id (and ``where``)
    when the id cannot be one file name as it is (see the module docstring)."""
    if not _SAFE.match(prompt_id) or len(prompt_id) > 200:
        bad = "".join(sorted({ch for ch in prompt_id if not re.match(r"[A-Za-z0-9._=+-]", ch)}))
        why = f"contains {bad!r}" if bad else ("starts with '.'" if prompt_id.startswith(".") else "is too long")
        raise ConfigError(f"{where}: prompt id {prompt_id!r} {why}; it cannot name a clip file "
                          f"(allowed: letters, digits and . _ = + -). Give the prompts safe ids "
                          f"(column 'id' or 'prompt_id') and name the files <id>.mp4")
    return f"{prompt_id}.mp4"


@dataclass
class ClipEntry:
    """One prompt and where its clip is (``path`` None when missing; ``problem`` says why)."""

    index: int
    prompt: Prompt
    path: Path | None
    wav: Path | None = None
    problem: str | None = None
    candidate_id: str = ""


@dataclass
class EvalSpec:
    """Everything ``avits evaluate`` was asked to do (validated by :func:`prepare`)."""

    folder: Path
    prompts: Path
    out: Path | None = None
    protocol: str = "avits"
    metrics: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: {m: {} for m in DEFAULT_METRICS})
    reference: Path | None = None
    naming: str = "auto"
    allow_extra: bool = False
    batch_size: int = 8


@dataclass
class EvalPlan:
    spec: EvalSpec
    prompts: list[Prompt]
    entries: list[ClipEntry]
    extra: list[str]
    naming: str
    verifiers: dict[str, Verifier]
    set_metrics: dict[str, dict[str, Any]]
    evaluation_id: str
    out: Path

    @property
    def run_id(self) -> str:
        return self.out.name

    def store(self):  # noqa: ANN201 - RunStore
        from avits_core.store.parquet import RunStore

        return RunStore(self.out.parent, self.out.name).create()


def _file_digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=6)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def locate_clips(folder: Path, prompts: Sequence[Prompt], naming: str = "auto") -> tuple[list[ClipEntry], list[str], str]:
    """(one entry per prompt, names of mp4 files matching no prompt, the naming used)."""
    if naming not in ("auto", "id", "javisbench"):
        raise ConfigError(f"naming must be auto, id or javisbench, got {naming!r}")
    files = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".mp4")
    by_id = {clip_file_name(p.prompt_id, where=f"prompt {i + 1}"): p for i, p in enumerate(prompts)}
    if naming == "auto":
        naming = "javisbench" if files and all(_SAMPLE.match(f) for f in files) and not (set(files) & set(by_id)) else "id"
    entries: list[ClipEntry] = []
    for i, p in enumerate(prompts):
        name = f"sample_{i:04d}.mp4" if naming == "javisbench" else clip_file_name(p.prompt_id)
        path = folder / name
        e = ClipEntry(index=i, prompt=p, path=path if path.is_file() else None)
        if e.path is None:
            e.problem = f"missing: no file {name!r} for prompt {p.prompt_id!r} in {folder}"
            e.candidate_id = f"{p.prompt_id}+missing"
        else:
            wav = path.with_suffix(".wav")
            e.wav = wav if wav.is_file() else None
            e.candidate_id = f"{p.prompt_id}+{_file_digest(path)}"
        entries.append(e)
    used = {e.path.name for e in entries if e.path is not None}
    extra = [f for f in files if f not in used]
    return entries, extra, naming


def _evaluation_id(protocol: str, verifiers: Mapping[str, Verifier], set_metrics: Mapping[str, Any],
                   entries: Sequence[ClipEntry], reference: Path | None) -> str:
    spec = {
        "protocol": protocol,
        "metrics": {n: [v.cache_version, _describe(v, protocol)] for n, v in sorted(verifiers.items())},
        "set": {k: dict(v) for k, v in sorted(set_metrics.items())},
        "clips": [e.candidate_id for e in entries],
        "reference": str(reference) if reference else None,
    }
    return "eval-" + hashlib.blake2b(json.dumps(spec, sort_keys=True, default=str).encode(), digest_size=6).hexdigest()


def _describe(v: Verifier, protocol: str) -> str:
    from avits_core.metrics.embedding import describe_extractor

    d = describe_extractor(v)
    return d + v.identity_suffix() if hasattr(v, "identity_suffix") else d


def make_verifier(name: str, params: Mapping[str, Any], protocol: str) -> Verifier:
    """The verifier ``name`` with ``params``; ``protocol`` is passed when the verifier has that parameter
    (verifiers without a published counterpart keep their one recipe)."""
    from avits_core.registry import VERIFIERS

    kw = dict(params)
    cls = VERIFIERS.get_class(name)
    if "protocol" in getattr(cls, "identity_params", ()):
        kw.setdefault("protocol", protocol)
    elif name in PROTOCOL_PARAMS and protocol in PROTOCOL_PARAMS[name][1]:
        kw.setdefault(PROTOCOL_PARAMS[name][0], PROTOCOL_PARAMS[name][1][protocol])
    elif protocol != "avits":
        log.info("%s has no %s protocol; it is computed with its own recipe", name, protocol)
    try:
        return VERIFIERS.create(name, **kw)
    except TypeError as exc:
        raise ConfigError(f"metric {name!r}: bad parameters {sorted(kw)}: {exc}") from None


def prepare(spec: EvalSpec) -> EvalPlan:
    """Validate the request (folder, prompts, metrics, weights, reference, output) before any work."""
    from avits_core.registry import VERIFIERS

    if spec.protocol not in PROTOCOLS:
        raise ConfigError(f"--protocol must be one of {PROTOCOLS}, got {spec.protocol!r}")
    folder = Path(spec.folder)
    if not folder.is_dir():
        raise ConfigError(f"FOLDER {folder} is not a folder")
    prompts = load_prompts(Path(spec.prompts))
    entries, extra, naming = locate_clips(folder, prompts, spec.naming)
    if extra and not spec.allow_extra:
        shown = ", ".join(extra[:10]) + (f" and {len(extra) - 10} more" if len(extra) > 10 else "")
        raise ConfigError(f"{folder}: {len(extra)} mp4 file(s) match no prompt of {spec.prompts} "
                          f"(naming={naming!r}): {shown}; rename them or pass --allow-extra")
    if not spec.metrics:
        raise ConfigError("no metrics to compute")
    known = set(VERIFIERS.names())
    verifiers: dict[str, Verifier] = {}
    set_metrics: dict[str, dict[str, Any]] = {}
    for name, params in spec.metrics.items():
        if name in SET_METRICS:
            set_metrics[name] = dict(params)
            continue
        if name not in known:
            raise ConfigError(f"unknown metric {name!r}; known: {sorted(known | set(SET_METRICS))}")
        v = make_verifier(name, params, spec.protocol)
        v.check_ready()
        verifiers[name] = v
    if set_metrics:
        if spec.reference is None:
            raise ConfigError(f"{sorted(set_metrics)} need --reference DIR (real clips to compare against)")
        ref = Path(spec.reference)
        if not (ref.is_dir() or (ref.is_file() and ref.suffix == ".pt")):
            raise ConfigError(f"--reference {ref} is neither a folder of mp4 files nor a .pt feature cache")
        if ref.is_file() and spec.protocol != "javisbench":
            raise ConfigError(f"--reference {ref} is a JavisBench feature cache: use --protocol javisbench "
                              "(its features come from the evaluator's I3D and AudioCLIP)")
        _set_extractors(set_metrics, spec.protocol)  # raises for missing weights before any work
    out = Path(spec.out) if spec.out else Path.cwd() / f"eval-{folder.resolve().name}-{spec.protocol}"
    if not _RUN_ID.match(out.name):
        raise ConfigError(f"--out {out}: the folder name must start with a letter or digit and use only "
                          "letters, digits and . _ = + -")
    eid = _evaluation_id(spec.protocol, verifiers, set_metrics, entries, spec.reference)
    for e in entries:
        if e.problem:
            log.warning("%s", e.problem)
    return EvalPlan(spec, prompts, entries, extra, naming, verifiers, set_metrics, eid, out)


# ------------------------------------------------------------------------------------------------
# reading clips


def _probe(path: Path) -> tuple[bool, bool]:
    import av

    try:
        with av.open(str(path)) as c:
            return bool(c.streams.video), bool(c.streams.audio)
    except av.error.FFmpegError as exc:
        raise MediaFormatError(f"cannot read {path} as a media file: {exc}") from exc


def _read_cv2_video(path: Path) -> tuple[np.ndarray, float]:
    """Every frame as OpenCV decodes it (converted BGR -> RGB) and CAP_PROP_FPS, like the evaluator."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise MediaFormatError(f"OpenCV cannot open {path}")
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        frames = []
        while True:
            ok, f = cap.read()
            if not ok:
                break
            frames.append(f[..., ::-1])
    finally:
        cap.release()
    if not frames:
        raise MediaFormatError(f"{path}: OpenCV decoded no frames")
    if not fps > 0:
        raise MediaFormatError(f"{path}: OpenCV reports no frame rate")
    return np.ascontiguousarray(np.stack(frames)), fps


def read_entry(entry: ClipEntry, protocol: str) -> tuple[AVClip | Exception, AVClip | Exception]:
    """(clip with video and audio, clip for video-only metrics); an Exception in place of a clip
    that cannot be read, which ``Verifier.score`` turns into that clip's error row."""
    from avits_core.media import read_mp4, read_video, read_wav

    if entry.path is None:
        err = MediaError(entry.problem or "missing")
        return err, err
    path = entry.path
    try:
        has_video, has_audio = _probe(path)
        if not has_video:
            raise MediaFormatError(f"{path} has no video stream")
        if protocol == "javisbench":
            frames, fps = _read_cv2_video(path)
        elif has_audio:
            full = read_mp4(path)
            frames, fps = full.video, full.fps
        else:
            frames, fps = read_video(path, backend="pyav")
    except Exception as exc:  # noqa: BLE001 - becomes this clip's error row
        return exc, exc
    meta = {"path": str(path), "prompt_id": entry.prompt.prompt_id}
    silent = AVClip(frames, fps, np.zeros(1, np.float32), 1, dict(meta, no_audio=True))
    try:
        if protocol == "javisbench" and entry.wav is not None:
            audio, sr = read_wav(entry.wav)
            meta["audio_path"] = str(entry.wav)
        elif not has_audio:
            raise MediaFormatError(f"{path} has no audio stream (and no {path.with_suffix('.wav').name} beside it)")
        elif protocol == "avits":
            audio, sr = full.audio, full.sample_rate
        else:
            a = read_mp4(path)
            audio, sr = a.audio, a.sample_rate
        return AVClip(frames, fps, audio, sr, meta), silent
    except Exception as exc:  # noqa: BLE001
        return exc, silent


# ------------------------------------------------------------------------------------------------
# scoring (cached in the rewards table)


def _reads_audio(v: Verifier) -> bool:
    return "audio" in v.modalities


def pending(plan: EvalPlan, store: Any) -> dict[str, list[ClipEntry]]:
    """Per metric, the clips without an ``ok`` rewards row for its cache version."""
    out = {}
    for name, v in plan.verifiers.items():
        done = store.scored_pairs(v.name, v.cache_version, include_errors=False)
        out[name] = [e for e in plan.entries if e.candidate_id not in done]
    return out


def score_entries(plan: EvalPlan, store: Any, entries: Sequence[ClipEntry]) -> int:
    """Score ``entries`` with every metric still missing for them; append rewards rows. Returns rows written."""
    todo = pending(plan, store)
    want = {e.candidate_id for e in entries}
    todo = {n: [e for e in es if e.candidate_id in want] for n, es in todo.items()}
    need = {e.candidate_id: e for es in todo.values() for e in es}
    if not need:
        return 0
    read = {cid: read_entry(e, plan.spec.protocol) for cid, e in need.items()}
    rows = []
    for name, es in todo.items():
        if not es:
            continue
        v = plan.verifiers[name]
        clips = [read[e.candidate_id][0 if _reads_audio(v) else 1] for e in es]
        t0 = time.perf_counter()
        res = v.score(clips, [e.prompt for e in es])
        share = (time.perf_counter() - t0) / len(es)
        for k, e in enumerate(es):
            err = res.errors[k]
            rows.append({
                "prompt_id": e.prompt.prompt_id, "candidate_id": e.candidate_id, "verifier": v.name,
                "verifier_version": v.cache_version,
                "value": None if err else float(res.values[k]), "status": "error" if err else "ok",
                "error": err, "event_seq": e.index, "generation": 0, "wall_s": share,
                "higher_is_better": bool(v.higher_is_better),
                "details": (json.dumps(res.details[k], sort_keys=True) if res.details and res.details[k] else None),
            })
    store.append("rewards", rows)
    return len(rows)


def _latest_rewards(plan: EvalPlan, store: Any) -> dict[tuple[str, str], dict[str, Any]]:
    """(metric, candidate_id) -> the latest ok row, else the latest error row, for this plan's versions."""
    tbl = store.read("rewards")
    best: dict[tuple[str, str], dict[str, Any]] = {}
    versions = {v.name: (n, v.cache_version) for n, v in plan.verifiers.items()}
    for r in tbl.to_pylist():
        key = versions.get(r["verifier"])
        if key is None or r["verifier_version"] != key[1]:
            continue
        k = (key[0], r["candidate_id"])
        old = best.get(k)
        rank = (r["status"] == "ok", r["scored_at"])
        if old is None or rank > (old["status"] == "ok", old["scored_at"]):
            best[k] = r
    return best


# ------------------------------------------------------------------------------------------------
# set-level metrics


def _set_extractors(set_metrics: Mapping[str, Mapping[str, Any]], protocol: str = "avits") -> dict[str, Any]:
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

    ex = _set_extractors(plan.set_metrics, plan.spec.protocol)
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


# ------------------------------------------------------------------------------------------------
# results


def metric_rows(plan: EvalPlan, store: Any) -> list[dict[str, Any]]:
    """One metrics row per (clip, metric) from the cached rewards (value None for an error)."""
    latest = _latest_rewards(plan, store)
    rows = []
    for name, v in plan.verifiers.items():
        ext = _describe(v, plan.spec.protocol)
        for e in plan.entries:
            r = latest.get((name, e.candidate_id))
            rows.append({"selection_id": plan.evaluation_id, "prompt_id": e.prompt.prompt_id,
                         "candidate_id": e.candidate_id, "metric": v.name,
                         "value": r["value"] if r and r["status"] == "ok" else None,
                         "held_out": True, "extractor": ext,
                         "_error": (r["error"] if r else "not scored") if not (r and r["status"] == "ok") else None})
    return rows


def _mean(vals: Sequence[float | None]) -> float | None:
    ok = [float(x) for x in vals if x is not None and math.isfinite(float(x))]
    return float(np.mean(ok)) if ok else None


def summarize(plan: EvalPlan, rows: Sequence[Mapping[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(summary laid out like JavisBench's evaluator JSON, per-category rows)."""
    from avits_core.metrics.categories import has_categories, prompt_categories

    verbose = has_categories(plan.prompts)
    cats = prompt_categories(plan.prompts) if verbose else {}
    aspects: dict[int, int] = {}
    for cs in cats.values():
        for c in cs:
            aspects[c.k] = max(aspects.get(c.k, 0), c.index + 1)
    if plan.spec.protocol == "javisbench":  # the evaluator's lists have one entry per category of its taxonomy
        for k in aspects:
            aspects[k] = max(aspects[k], JAVISBENCH_CATEGORIES.get(k, 0))
    order = {e.prompt.prompt_id: e.index for e in plan.entries}
    summary: dict[str, Any] = {}
    cat_rows: list[dict[str, Any]] = []
    by_metric: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        by_metric.setdefault(r["metric"], []).append(r)
    for metric, rs in by_metric.items():
        key = JAVISBENCH_KEYS.get(metric, metric)
        if rs[0]["prompt_id"] is None:  # set-level: {"overall", "<aspect>": [per category]} like the evaluator
            if not verbose:
                summary[key] = rs[0]["value"]
                continue
            d = {"overall": rs[0]["value"]}
            for k in sorted(aspects):
                d[str(k)] = [set_level_by_category(plan, metric, [order[pid] for pid, cs in cats.items()
                                                                  if any(c.k == k and c.index == i for c in cs)])
                             for i in range(aspects[k])]
            summary[key] = d
            continue
        rs = sorted(rs, key=lambda r: order[r["prompt_id"]])
        values = [r["value"] for r in rs]
        if not verbose:
            summary[key] = _mean(values)
            continue
        d: dict[str, Any] = {"overall": _mean(values), "all": values}
        for k in sorted(aspects):
            per = []
            for i in range(aspects[k]):
                vals = [r["value"] for r in rs if any(c.k == k and c.index == i for c in cats[r["prompt_id"]])]
                per.append(_mean(vals))
                cat_rows.append({"metric": metric, "aspect": f"cat{k}", "category": i,
                                 "title": next((c.title for cs in cats.values() for c in cs
                                                if c.k == k and c.index == i and c.title), None),
                                 "n": sum(v is not None for v in vals), "mean": per[-1],
                                 "n_failed": sum(v is None for v in vals)})
            d[str(k)] = per
        summary[key] = d
    return summary, cat_rows


def finish(plan: EvalPlan, store: Any) -> dict[str, Any]:
    """Write metrics rows (once per evaluation id), summary.json, categories.json, evaluation.json."""
    rows = metric_rows(plan, store)
    mine = [r for r in store.read("metrics").to_pylist() if r["selection_id"] == plan.evaluation_id]
    existing = {(r["metric"], r["candidate_id"]) for r in mine}
    if plan.set_metrics and not any(c is None for _, c in existing):
        readable, index = [], []
        for e in plan.entries:
            clip, _ = read_entry(e, plan.spec.protocol)
            if isinstance(clip, AVClip):
                readable.append(clip)
                index.append(e.index)
        set_rows = set_level_rows(plan, readable, index)
    else:
        set_rows = [r for r in mine if r["candidate_id"] is None]
    new = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows
           if (r["metric"], r["candidate_id"]) not in existing]
    new += [r for r in set_rows if (r["metric"], None) not in existing]
    if new:
        store.append("metrics", [{k: r[k] for k in ("selection_id", "prompt_id", "candidate_id", "metric",
                                                     "value", "held_out", "extractor")} for r in new])
    all_rows = rows + [dict(r) for r in set_rows]
    summary, cat_rows = summarize(plan, all_rows)
    errors: dict[str, dict[str, str]] = {}
    for r in rows:
        if r["_error"]:
            errors.setdefault(r["metric"], {})[r["prompt_id"]] = r["_error"]
    info = {
        "evaluation_id": plan.evaluation_id, "folder": str(Path(plan.spec.folder).resolve()),
        "prompts": str(Path(plan.spec.prompts).resolve()), "protocol": plan.spec.protocol,
        "naming": plan.naming, "n_prompts": len(plan.prompts),
        "n_missing": sum(e.path is None for e in plan.entries), "extra_files": plan.extra,
        "metrics": {n: {"version": v.cache_version, "extractor": _describe(v, plan.spec.protocol),
                        "summary_key": JAVISBENCH_KEYS.get(n, n)} for n, v in plan.verifiers.items()},
        "set_metrics": {n: dict(p) for n, p in plan.set_metrics.items()},
        "reference": str(plan.spec.reference) if plan.spec.reference else None,
        "n_errors": {m: len(e) for m, e in errors.items()}, "errors": errors,
    }
    for name, obj in (("summary.json", summary), ("categories.json", cat_rows), ("evaluation.json", info)):
        sfs.put_bytes(plan.out / name,
                      (json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8"))
    store.update_run_json(kind="evaluate", evaluation_id=plan.evaluation_id, protocol=plan.spec.protocol,
                          folder=info["folder"], prompts=info["prompts"])
    return {"summary": summary, "evaluation": info, "categories": cat_rows}


def batches(plan: EvalPlan) -> list[list[ClipEntry]]:
    n = max(1, int(plan.spec.batch_size))
    return [plan.entries[i:i + n] for i in range(0, len(plan.entries), n)]


def evaluate_folder(spec: EvalSpec) -> dict[str, Any]:
    """The whole evaluation in-process (the flow runs the same steps as tasks)."""
    plan = prepare(spec)
    store = plan.store()
    for b in batches(plan):
        score_entries(plan, store, b)
    return finish(plan, store)


def spec_to_dict(spec: EvalSpec) -> dict[str, Any]:
    """A JSON-able form of ``spec`` (flow and task parameters)."""
    return {"folder": str(spec.folder), "prompts": str(spec.prompts), "out": str(spec.out) if spec.out else None,
            "protocol": spec.protocol, "metrics": {k: dict(v) for k, v in spec.metrics.items()},
            "reference": str(spec.reference) if spec.reference else None, "naming": spec.naming,
            "allow_extra": bool(spec.allow_extra), "batch_size": int(spec.batch_size)}


def spec_from_dict(d: Mapping[str, Any]) -> EvalSpec:
    d = dict(d)
    return EvalSpec(folder=Path(d["folder"]), prompts=Path(d["prompts"]), out=Path(d["out"]) if d.get("out") else None,
                    protocol=d.get("protocol", "avits"), metrics=d.get("metrics") or {m: {} for m in DEFAULT_METRICS},
                    reference=Path(d["reference"]) if d.get("reference") else None, naming=d.get("naming", "auto"),
                    allow_extra=bool(d.get("allow_extra", False)), batch_size=int(d.get("batch_size", 8)))


_PLANS: dict[str, EvalPlan] = {}


def refresh_plan(spec: Mapping[str, Any]) -> EvalPlan:
    """:func:`prepare` now (the folder may have changed since an earlier run in this process) and keep
    the plan for the tasks of this run (:func:`cached_plan`)."""
    key = json.dumps(dict(spec), sort_keys=True, default=str)
    plan = _PLANS[key] = prepare(spec_from_dict(spec))
    return plan


def cached_plan(spec: Mapping[str, Any]) -> EvalPlan:
    """The plan :func:`refresh_plan` made for ``spec`` in this process (prepared now when there is none):
    the tasks of one flow run share it and its models."""
    key = json.dumps(dict(spec), sort_keys=True, default=str)
    plan = _PLANS.get(key)
    return plan if plan is not None else refresh_plan(spec)


def parse_metrics(text: str | None, params: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    """``"av_align,clip"`` and ``["clip.model_path=models/clip", "clip.num_frames=16"]`` -> metric specs.
    Values are YAML (``16`` is an int, ``true`` a bool)."""
    import yaml

    names = [m.strip() for m in (text or ",".join(DEFAULT_METRICS)).split(",") if m.strip()]
    if not names:
        raise ConfigError("--metrics is empty")
    out: dict[str, dict[str, Any]] = {n: {} for n in names}
    for item in params:
        key, sep, value = item.partition("=")
        name, dot, pkey = key.strip().partition(".")
        if not (sep and dot and pkey):
            raise ConfigError(f"--metric-param {item!r}: expected METRIC.KEY=VALUE, e.g. clip.num_frames=16")
        if name not in out:
            raise ConfigError(f"--metric-param {item!r}: metric {name!r} is not in --metrics {names}")
        out[name][pkey] = yaml.safe_load(value)
    return out
