"""Search methods at equal compute on SynthAV, judged by ground truth (issue 16).

    python bench/bench_search_methods.py                 # 24 prompts, 4 run seeds, budgets 80/160/320 NFE
    python bench/bench_search_methods.py --seeds 1 --prompts 6 --budgets 80   # a quick look

For every run seed, method and NFE budget per prompt, the search engine's in-memory loop
(:func:`avits_core.search.memory.run_in_memory`, the pipeline's own planning, generation, lineage and
NFE accounting, clips kept in memory) runs the method over the prompts with ARW over av_align +
av_sync + synth_text guiding; the held-out oracle metrics of each prompt's answer come from
SynthAV's ground truth. Rows: ``first`` (the first candidate of every prompt: no search),
``best_of_n``, ``evosearch``, ``zero_order``, ``search_over_paths``, ``smc``, ``beam``,
``prune``, ``evosearch+route``
(route_by_modality). Best-of-k for the smaller budgets is the exact replay of the first k candidates
of the largest Best-of-N run (seeds do not depend on N; the aggregator is fed the same events), its
wall time scaled by k/N.

Routing study: with the three guided verifiers above every verifier reads both tracks, so
route_by_modality has nothing to route (the row equals ``evosearch`` by construction and is not run
again). The study reruns EvoSearch with and without routing over av_align + av_sync +
synth_text_video + synth_text_audio (SynthText restricted to its picture / its sound attributes,
defined here), where routing has one-sided verifiers to read.

Outputs (``--out``, default ``runs/bench_search_methods/``): ``results.jsonl`` (one line per
seed x method x budget; reused on the next call, so an interrupted bench resumes), ``table.md``,
``faithful_vs_nfe.png`` (linked from ``table.md``). Rows of other bench folders join with
``--merge OTHER/results.jsonl`` (keys already present are kept). New methods plug in by name: add an entry to ``GRID`` (method name from
``SEARCH_METHODS`` and its params per budget).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from avits_core.aggregate import get_aggregator  # noqa: E402
from avits_core.generators.synth import SynthAVGenerator  # noqa: E402
from avits_core.metrics.oracle import oracle_metrics  # noqa: E402
from avits_core.prompts import load_prompts  # noqa: E402
from avits_core.registry import VERIFIERS  # noqa: E402
from avits_core.search.base import get_search  # noqa: E402
from avits_core.search.engine import OnlineSelection, best_of  # noqa: E402
from avits_core.search.memory import run_in_memory  # noqa: E402
from avits_core.search.routing import verifier_sides  # noqa: E402
from avits_core.verifiers.base import MinInput  # noqa: E402
from avits_core.verifiers.synth_text import AUDIO_ATTRS, VIDEO_ATTRS, SynthText, requested_attributes  # noqa: E402

try:  # one intra-op thread: the tiny per-clip work gains nothing from more, and the machine is shared
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass

STEPS = 20
GUIDED = ["av_align", "av_sync", "synth_text"]
SPLIT = ["av_align", "av_sync", "synth_text_video", "synth_text_audio"]
METRICS = ["faithful", "sync_error_ms", "attribute_accuracy", "noise_level"]
LOWER = {"sync_error_ms", "noise_level"}

#: method label -> budget (target NFE per prompt with 20-step SynthAV) -> (search method, params).
#: Actual NFE is measured (sum of nfe_own) and reported; the configs are chosen to land near the target.
GRID: dict[str, dict[int, tuple[str, dict[str, Any]]]] = {
    "best_of_n": {b: ("best_of_n", {"n": b // STEPS}) for b in (80, 160, 320)},
    # populations per generation, evolve noise (step 0) then latents at step 6; elite 1
    "evosearch": {
        80: ("evosearch", dict(evolution_schedule=[0, 6], population_size_schedule=[2, 2, 2], elite_size=1,
                               tournament_ratio=0.5, mutation_rate=0.3)),  # 40 + 20 + 15 = 75
        160: ("evosearch", dict(evolution_schedule=[0, 6], population_size_schedule=[4, 3, 4], elite_size=1,
                                tournament_ratio=0.5, mutation_rate=0.3)),  # 80 + 40 + 45 = 165
        320: ("evosearch", dict(evolution_schedule=[0, 6], population_size_schedule=[8, 5, 6], elite_size=1,
                                tournament_ratio=0.5, mutation_rate=0.3)),  # 160 + 80 + 75 = 315
    },
    "zero_order": {
        80: ("zero_order", dict(n=4, neighbours=2, radius=0.3)),
        160: ("zero_order", dict(n=8, neighbours=2, radius=0.3)),
        320: ("zero_order", dict(n=16, neighbours=4, radius=0.3)),
    },
    "search_over_paths": {
        80: ("search_over_paths", dict(paths=1, branches=2, schedule=[6, 12, 16], beta=0.5)),  # 20+30+18+10
        160: ("search_over_paths", dict(paths=2, branches=2, schedule=[6, 10, 16], beta=0.5)),  # 40+60+44+20
        320: ("search_over_paths", dict(paths=4, branches=2, schedule=[6, 10, 16], beta=0.5)),  # 80+120+88+40
    },
}
# intermediate-step methods (issue 16 part 2): NFE = planned_steps() of each config at 20 steps. Their
# first candidate is an intermediate clean estimate and every final one is steered, so they give no
# "first" (no search) row: that comes from Best-of-N's candidate 0.
STEERED = ("smc", "beam", "prune")
GRID["smc"] = {b: ("smc", dict(particles=k, resample_steps=[5, 10, 15])) for b, k in ((80, 3), (160, 7), (320, 14))}  # K*23
GRID["beam"] = {b: ("beam", dict(beams=nb, candidates_per_beam=3, beam_steps=[5, 10, 15], lookahead=2))
                for b, nb in ((80, 1), (160, 2), (320, 4))}  # B*K*26
GRID["prune"] = {b: ("prune", dict(n=n, prune_steps=[5], keep=0.25)) for b, n in ((80, 8), (160, 16), (320, 32))}  # 6n + 15n/4
GRID["evosearch+route"] = {b: (m, dict(p, route_by_modality=True)) for b, (m, p) in GRID["evosearch"].items()}


class _SynthTextPart(SynthText):
    """SynthText restricted to one track's attributes: the fraction in [0, 1] of the prompt's named
    attributes of that track that the clip shows (bench-local; not registered). A prompt that names
    none of the track's attributes (s20, s22: no sound named) asks nothing of it: 1.0 for every
    candidate (vacuously satisfied; a constant that cannot change the prompt's ranking)."""

    attrs: tuple[str, ...] = ()

    def score_clip(self, clip, prompt):
        req = {k: v for k, v in requested_attributes(prompt).items() if k in self.attrs}
        if not req:
            return 1.0
        got = self.measure(clip, tuple(req))
        return sum(1 for k, v in req.items() if got.get(k) == v) / len(req)


class SynthTextVideo(_SynthTextPart):
    name = "synth_text_video"
    attrs = VIDEO_ATTRS
    min_input = MinInput(frames=1, height=8, width=8, modalities=("video", "text"))


class SynthTextAudio(_SynthTextPart):
    name = "synth_text_audio"
    attrs = AUDIO_ATTRS
    min_input = MinInput(audio_seconds=0.1, sample_rate=8000, modalities=("audio", "text"))


SPLIT_MODALITIES = {"synth_text_video": ["video", "text"], "synth_text_audio": ["audio", "text"]}


def _verifiers(names):
    local = {"synth_text_video": SynthTextVideo, "synth_text_audio": SynthTextAudio}
    return [local[n]() if n in local else VERIFIERS.create(n) for n in names]


def _oracle(clip) -> dict[str, float]:
    m = oracle_metrics(clip.meta["truth"])
    return {k: float(m[k]) for k in METRICS}


def _row(seed, label, budget, vset, picks, nfe, wall, n_prompts, extra=None) -> dict[str, Any]:
    """``wall``: (wall seconds, CPU seconds of this process) per prompt."""
    row = {"seed": seed, "method": label, "budget": budget, "verifiers": vset, "prompts": n_prompts,
           "nfe_per_prompt": nfe, "wall_s_per_prompt": wall[0], "cpu_s_per_prompt": wall[1]}
    for k in METRICS:
        row[k] = float(np.mean([p[k] for p in picks]))
    row.update(extra or {})
    return row


def run_method(gen, verifiers, prompts, method_name, params, seed):
    """(picks' oracle metrics, first candidates' oracle metrics, mean NFE, wall per prompt, results)."""
    names = [v.name for v in verifiers]
    t0, c0 = time.perf_counter(), time.process_time()
    res = run_in_memory(gen, verifiers, get_aggregator("arw", names), prompts, get_search(method_name, params), seed)
    wall = (time.perf_counter() - t0) / len(prompts)
    cpu = (time.process_time() - c0) / len(prompts)
    picks, firsts = [], []
    for r in res:
        if r.selected is None:
            raise SystemExit(f"{method_name}: no eligible candidate for {r.prompt_id}")
        picks.append(_oracle(r.clips[r.selected]))
        firsts.append(_oracle(r.clips[min(c.candidate_id for c in r.records if c.kind == "final")]))
    nfe = float(np.mean([r.nfe_spent for r in res]))
    return picks, firsts, nfe, (wall, cpu), res


def bon_replay(res, names, k):
    """Best-of-k picks from the first k candidates of every prompt of a larger Best-of-N run: the
    aggregator fed the same events a Best-of-k run feeds it (oriented values, prompt order)."""
    online = OnlineSelection(get_aggregator("arw", names), names, {n: True for n in names})
    picks = []
    for i, r in enumerate(res):
        ids = sorted(r.clips)[:k]
        rows = [(c, {n: (None if math.isnan(r.scores[c][n]) else r.scores[c][n]) for n in names}) for c in ids]
        online.feed(i, r.prompt_id, 0, rows)
        picks.append(_oracle(r.clips[best_of(online.aggregates(r.prompt_id))]))
    return picks


def summarise(rows: list[dict[str, Any]], vset: str, labels: list[str], budgets: list[int]) -> list[dict[str, Any]]:
    out = []
    for label in labels:
        for b in ([0] if label == "first" else budgets):
            rs = [r for r in rows if r["method"] == label and r["budget"] == b and r["verifiers"] == vset]
            if not rs:
                continue
            s = {"method": label, "budget": b, "seeds": len(rs),
                 "nfe": float(np.mean([r["nfe_per_prompt"] for r in rs])),
                 "wall": float(np.mean([r["wall_s_per_prompt"] for r in rs])),
                 "cpu": float(np.mean([r.get("cpu_s_per_prompt", float("nan")) for r in rs]))}
            for k in METRICS:
                v = np.array([r[k] for r in rs])
                s[k] = (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0)
            # faithful minus Best-of-N's at the same budget, paired by run seed: mean and standard error
            bon = {r["seed"]: r["faithful"] for r in rows
                   if r["method"] == "best_of_n" and r["budget"] == b and r["verifiers"] == vset}
            d = np.array([r["faithful"] - bon[r["seed"]] for r in rs if r["seed"] in bon])
            s["d_bon"] = (float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0) \
                if len(d) and label not in ("first", "best_of_n") else None
            out.append(s)
    return out


def markdown(summary: list[dict[str, Any]], title: str) -> str:
    arrows = {k: ("↓" if k in LOWER else "↑") for k in METRICS}
    head = ["method", "budget", "NFE/prompt", *[f"{k} {arrows[k]}" for k in METRICS], "Δ faithful vs BoN (paired ± SE)", "wall s/prompt", "CPU s/prompt", "seeds"]
    lines = [f"**{title}** (mean over run seeds ± sample std across seeds)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summary:
        fmt = {"faithful": "{:.3f} ± {:.3f}", "sync_error_ms": "{:.1f} ± {:.1f}",
               "attribute_accuracy": "{:.3f} ± {:.3f}", "noise_level": "{:.3f} ± {:.3f}"}
        cells = [s["method"], "-" if s["budget"] == 0 else str(s["budget"]), f"{s['nfe']:.0f}",
                 *[fmt[k].format(*s[k]) for k in METRICS],
                 "-" if s.get("d_bon") is None else "{:+.3f} ± {:.3f}".format(*s["d_bon"]), f"{s['wall']:.2f}", f"{s['cpu']:.2f}", str(s["seeds"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(summary, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    first = [s for s in summary if s["method"] == "first"]
    if first:
        ax.axhline(first[0]["faithful"][0], color="grey", ls=":", label="first (no search)")
    labels = list(dict.fromkeys(s["method"] for s in summary if s["method"] != "first"))
    for i, label in enumerate(labels):
        ss = sorted((s for s in summary if s["method"] == label), key=lambda s: s["nfe"])
        jitter = 1.0 + 0.025 * (i - (len(labels) - 1) / 2)  # side by side, so that equal points stay visible
        x = [s["nfe"] * jitter for s in ss]
        y = np.array([s["faithful"][0] for s in ss])
        e = np.array([s["faithful"][1] for s in ss])
        ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=label)
    ax.set_xscale("log", base=2)
    budgets = sorted({s["budget"] for s in summary if s["budget"]})
    ax.set_xticks(budgets, [str(b) for b in budgets])
    ax.minorticks_off()
    ax.set_xlabel("NFE per prompt (measured)")
    ax.set_ylabel("faithful (held-out oracle)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def merge_rows(rows: list[dict[str, Any]], have: set, path: Path) -> list[dict[str, Any]]:
    """Rows of another bench's ``results.jsonl`` whose key (seed, method, budget, verifiers, prompts) is
    not in ``have``; appended to ``rows`` and their keys to ``have``. A missing file is an error."""
    if not path.is_file():
        raise SystemExit(f"--merge: no such file {path}")
    added = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        r = json.loads(line)
        missing = [k for k in ("seed", "method", "budget", "verifiers", "prompts", *METRICS) if k not in r]
        if missing:
            raise SystemExit(f"--merge: {path} line {i} lacks field {missing[0]!r}")
        key = (r["seed"], r["method"], r["budget"], r["verifiers"], r["prompts"])
        if key not in have:
            have.add(key)
            rows.append(r)
            added.append(r)
    return added


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--seeds", type=int, default=4, help="run seeds 0..SEEDS-1")
    ap.add_argument("--first-seed", type=int, default=0,
                    help="run only seeds FIRST..SEEDS-1 (split the work over processes; the table uses every stored seed)")
    ap.add_argument("--budgets", default="80,160,320", help="NFE budgets per prompt (keys of GRID)")
    ap.add_argument("--methods", default=",".join(GRID), help="labels of GRID")
    ap.add_argument("--studies", default="guided,split",
                    help="guided (the main table), split (the routing study); comma-separated")
    ap.add_argument("--out", default=str(REPO / "runs/bench_search_methods"))
    ap.add_argument("--merge", nargs="*", default=[], metavar="RESULTS_JSONL",
                    help="results.jsonl files of other bench runs (other --out): their rows whose (seed, method, "
                         "budget, verifiers, prompts) this --out lacks are added to its results.jsonl first")
    args = ap.parse_args()
    budgets = [int(b) for b in args.budgets.split(",")]
    labels = [m for m in args.methods.split(",") if m]
    unknown = [m for m in labels if m not in GRID]
    if unknown:
        raise SystemExit(f"--methods: unknown label {unknown[0]!r}; known: {list(GRID)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store = out / "results.jsonl"
    rows = [json.loads(x) for x in store.read_text().splitlines()] if store.exists() else []
    have = {(r["seed"], r["method"], r["budget"], r["verifiers"], r["prompts"]) for r in rows}
    for other in args.merge:
        added = merge_rows(rows, have, Path(other))
        if added:
            with store.open("a") as f:
                f.writelines(json.dumps(r) + "\n" for r in added)
        print(f"merged {len(added)} rows from {other}", flush=True)
    prompts = load_prompts(REPO / "data/prompts/synth-24.csv", limit=args.prompts)
    gen = SynthAVGenerator(num_steps=STEPS)

    def keep(row):
        rows.append(row)
        with store.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"seed {row['seed']} {row['verifiers']:6s} {row['method']:18s} {row['budget']:4d}: "
              f"faithful {row['faithful']:.3f} sync {row['sync_error_ms']:.1f} ms  NFE {row['nfe_per_prompt']:.0f}  "
              f"{row['wall_s_per_prompt']:.2f} s/prompt", flush=True)

    wanted = [x for x in args.studies.split(",") if x]
    studies = [st for st in (("guided", GUIDED, labels), ("split", SPLIT, ["evosearch", "evosearch+route"]))
               if st[0] in wanted]
    t_start = time.perf_counter()
    # warm-up (imports, first-call costs of the verifiers), so that no timed row pays for it
    run_method(gen, _verifiers(GUIDED), prompts[:1], "best_of_n", {"n": 2}, 0)
    for seed in range(args.first_seed, args.seeds):
        for vset, vnames, vlabels in studies:
            verifiers = _verifiers(vnames)
            one_sided = any(s is not None for s in verifier_sides(vnames, SPLIT_MODALITIES).values())
            for label in vlabels:
                if label == "best_of_n":
                    todo = [b for b in budgets if (seed, label, b, vset, len(prompts)) not in have]
                    if not todo:
                        continue
                    top = max(budgets)
                    m, p = GRID[label][top]
                    picks, firsts, nfe, wall, res = run_method(gen, verifiers, prompts, m, p, seed)
                    if (seed, "first", 0, vset, len(prompts)) not in have:
                        keep(_row(seed, "first", 0, vset, firsts, float(STEPS), (wall[0] / p["n"], wall[1] / p["n"]),
                                  len(prompts)))
                    for b in todo:
                        k = GRID[label][b][1]["n"]
                        bp = picks if k == p["n"] else bon_replay(res, vnames, k)
                        keep(_row(seed, label, b, vset, bp, nfe * k / p["n"], (wall[0] * k / p["n"], wall[1] * k / p["n"]),
                                  len(prompts),
                                  {"replayed": k != p["n"]}))
                    continue
                for b in budgets:
                    if (seed, label, b, vset, len(prompts)) in have:
                        continue
                    m, p = GRID[label][b]
                    if label.endswith("+route") and not one_sided:
                        # nothing to route: identical to the unrouted method by construction
                        base = [r for r in rows if r["seed"] == seed and r["budget"] == b and r["verifiers"] == vset
                                and r["method"] == label[: -len("+route")] and r["prompts"] == len(prompts)]
                        if base:
                            keep(dict(base[0], method=label, same_as=base[0]["method"]))
                            continue
                    if vset == "split":
                        p = dict(p, verifier_modalities=SPLIT_MODALITIES) if p.get("route_by_modality") else p
                    picks, firsts, nfe, wall, _ = run_method(gen, verifiers, prompts, m, p, seed)
                    keep(_row(seed, label, b, vset, picks, nfe, wall, len(prompts)))
                    if m not in STEERED and (seed, "first", 0, vset, len(prompts)) not in have and not any(
                            r["method"] == "first" and r["seed"] == seed and r["verifiers"] == vset for r in rows):
                        keep(_row(seed, "first", 0, vset, firsts, float(STEPS), (0.0, 0.0), len(prompts)))
    if store.exists():  # another process may have added rows (one process per study)
        rows = [json.loads(x) for x in store.read_text().splitlines()]
    rows = [r for r in rows if r["prompts"] == len(prompts) and r["seed"] < args.seeds]
    text = [f"SynthAV, {len(prompts)} prompts, {STEPS} steps, ARW; run seeds 0..{args.seeds - 1}; "
            f"bench wall {time.perf_counter() - t_start:.0f} s this call.", ""]
    main_sum = summarise(rows, "guided", ["first", *labels], budgets)
    text.append(markdown(main_sum, "Guided: av_align + av_sync + synth_text"))
    plot(main_sum, out / "faithful_vs_nfe.png", f"SynthAV, {len(prompts)} prompts, ARW over {' + '.join(GUIDED)}")
    if any(r["verifiers"] == "split" for r in rows):
        split_sum = summarise(rows, "split", ["first", "evosearch", "evosearch+route"], budgets)
        text.append(markdown(split_sum, "Routing study: av_align + av_sync + synth_text_video + synth_text_audio"))
        plot(split_sum, out / "faithful_vs_nfe_routing.png", "routing study (split synth_text)")
    text.append("![faithful vs NFE per method](faithful_vs_nfe.png)\n")
    if any(r["verifiers"] == "split" for r in rows):
        text.append("![routing study](faithful_vs_nfe_routing.png)\n")
    (out / "table.md").write_text("\n".join(text))
    print("\n".join(text))
    print(f"wrote {out / 'table.md'}, {out / 'faithful_vs_nfe.png'}")


if __name__ == "__main__":
    main()
