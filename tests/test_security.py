"""Security (issue 10, reliability suite): servers on 127.0.0.1 only, YAML safe-loaded, no unpickling of
user-supplied files, and no name from a prompt file, a config or an option can write outside its folder.

The code checks are static (the AST of every module of the product), so a new call site that breaks a
rule fails here with its file and line; the allowed exceptions are listed explicitly.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from avits_core.config import load_config, load_yaml_text, parse_override
from avits_core.errors import ConfigError
from avits_core.names import UnsafeNameError, UnsafePathError

REPO = Path(__file__).resolve().parents[1]
PRODUCT = ["avits_core", "avits", "flows", "tasks"]
AVITS = str(Path(sys.executable).parent / "avits")

#: The hostile names every path-forming input is tried with (the 300-character one is too long for any).
BAD_NAMES = ["../../../../x", "/abs/x", "nul\x00byte", "y" * 300]


def _modules():
    for top in PRODUCT:
        for path in sorted((REPO / top).rglob("*.py")):
            yield path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def _calls(name_suffixes: tuple[str, ...]):
    for path, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _dotted(node.func).endswith(name_suffixes):
                yield path.relative_to(REPO), node


def _kw(node: ast.Call, name: str):
    for k in node.keywords:
        if k.arg == name:
            return k.value
    return None


# -- servers ------------------------------------------------------------------------------------

def test_every_server_avits_starts_is_bound_to_loopback():
    from avits import server

    assert server.HOST == "127.0.0.1"
    cmd = server._server_cmd(4280)  # the one command line of the private and the `avits server start` server
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    # no other listening code in the product: every bind/host goes through server.HOST
    offenders = []
    for path, tree in _modules():
        src = path.read_text(encoding="utf-8")
        for needle in ("0.0.0.0", "INADDR_ANY", "'::'", '"::"'):
            if needle in src:
                offenders.append(f"{path.relative_to(REPO)}: {needle}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _dotted(node.func).endswith(".bind") and node.args:
                a = node.args[0]
                if isinstance(a, ast.Tuple) and not (isinstance(a.elts[0], ast.Name) and a.elts[0].id == "HOST"):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: bind to {ast.unparse(a)}")
            if isinstance(node, ast.keyword) and node.arg == "dashboard_address" and \
                    isinstance(node.value, ast.Constant) and node.value.value is not None:
                offenders.append(f"{path.relative_to(REPO)}:{node.value.lineno}: {node.arg}={node.value.value!r}")
    assert not offenders, offenders
    # the Dask cluster of `runner: {kind: dask}` has no dashboard and uses LocalCluster's default host
    from avits_core.config import RunConfig
    from flows.task_runner import task_runner_for

    cfg = RunConfig.model_validate({"prompts": {"source": ["a ball"]}, "verifiers": [{"name": "av_sync"}],
                                    "runner": {"kind": "dask", "workers": 1, "processes": True}})
    kw = task_runner_for(cfg).cluster_kwargs
    assert kw.get("dashboard_address") is None and kw.get("host") in (None, "127.0.0.1")


def _listening_addresses(port: int) -> set[str]:
    out = set()
    for fname, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            lines = Path(fname).read_text().splitlines()[1:]
        except OSError:
            continue
        for ln in lines:
            f = ln.split()
            local, state = f[1], f[3]
            addr, p = local.split(":")
            if state == "0A" and int(p, 16) == port:  # LISTEN
                if v6:
                    out.add("v6:" + addr)
                else:
                    out.add(".".join(str(b) for b in reversed(bytes.fromhex(addr))))
    return out


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc/net/tcp")
def test_private_server_listens_on_loopback_only(tmp_path):
    from avits.server import start_child_server

    srv = start_child_server(env={"PREFECT_HOME": str(tmp_path)})
    try:
        assert _listening_addresses(srv.port) == {"127.0.0.1"}
    finally:
        srv.stop()


# -- YAML ---------------------------------------------------------------------------------------

PY_TAGS = ["!!python/object/apply:os.system ['touch {marker}']",
           "!!python/object:collections.OrderedDict {{}}",
           "!!python/name:os.system",
           "!!python/object/new:subprocess.Popen [['touch', '{marker}']]"]


@pytest.mark.parametrize("tag", PY_TAGS)
def test_yaml_python_tags_are_refused_everywhere(tmp_path, tag):
    marker = tmp_path / "pwned"
    value = tag.format(marker=marker)
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml_text(f"x: {value}\n", "t.yaml")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"name: {value}\nprompts: {{source: [a ball]}}\nverifiers: [{{name: av_sync}}]\n")
    with pytest.raises(ConfigError):
        load_config(cfg)
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_override(f"name={value}")
    bench = tmp_path / "b.yaml"
    bench.write_text(f"name: {value}\nconfigs: [c.yaml]\n")
    from avits_core.benchmark import load_benchmark

    with pytest.raises(ConfigError):
        load_benchmark(bench)
    assert not marker.exists()


def test_every_yaml_load_in_the_code_is_safe():
    bad = []
    for path, node in _calls(("yaml.load", "yaml.load_all", "yaml.unsafe_load", "yaml.full_load",
                              "yaml.unsafe_load_all", "yaml.full_load_all")):
        loader = _kw(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
        name = _dotted(loader) if loader is not None else ""
        if not name.endswith(("SafeLoader", "CSafeLoader", "_UniqueKeyLoader")):
            bad.append(f"{path}:{node.lineno}: {ast.unparse(node)}")
    assert not bad, bad
    # the custom loader is a SafeLoader
    import yaml

    from avits_core.config.load import _UniqueKeyLoader

    assert issubclass(_UniqueKeyLoader, yaml.SafeLoader)


# -- pickles ------------------------------------------------------------------------------------

#: Modules that may import pickle-like modules, and why (none today).
PICKLE_ALLOWED: dict[str, str] = {}
#: Modules that may load a TorchScript archive, and why. TorchScript is not a pickle of Python objects
#: but it carries code the TorchScript interpreter runs, so it is as trusted as the weights path itself.
JIT_ALLOWED: dict[str, str] = {
    "avits_core/metrics/features.py": "FVD's I3D exists only as TorchScript (i3d_torchscript.pt); the path "
                                      "comes from the user's own evaluation.distribution.video.path",
}


def test_no_unpickling_of_user_files():
    bad = []
    for path, tree in _modules():
        rel = str(path.relative_to(REPO))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
                for n in names:
                    if n.split(".")[0] in ("pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal") \
                            and rel not in PICKLE_ALLOWED:
                        bad.append(f"{rel}:{node.lineno}: imports {n}")
    for path, node in _calls(("torch.load",)):
        w = _kw(node, "weights_only")
        if not (isinstance(w, ast.Constant) and w.value is True):
            bad.append(f"{path}:{node.lineno}: torch.load without weights_only=True")
    for path, node in _calls(("np.load", "numpy.load")):
        a = _kw(node, "allow_pickle")
        if a is not None and not (isinstance(a, ast.Constant) and a.value is False):
            bad.append(f"{path}:{node.lineno}: np.load with allow_pickle")
    for path, node in _calls(("read_pickle", "torch.jit.load", "jit.load")):
        if str(path) not in JIT_ALLOWED:
            bad.append(f"{path}:{node.lineno}: {_dotted(node.func)}")
    assert not bad, bad
    # the scan is not vacuous
    n_loads = sum(1 for _ in _calls(("torch.load",)))
    assert n_loads >= 5  # it sees the call sites (state.py latents, imagebind, synchformer, ...)


#: Classes whose ``from_pretrained`` reads only JSON / vocabulary files, never weights.
NO_WEIGHTS_SUFFIXES = ("Config", "Tokenizer", "TokenizerFast", "FeatureExtractor", "Processor", "ProcessorPil")


def test_every_from_pretrained_of_weights_refuses_pickles():
    """transformers' and diffusers' ``from_pretrained`` fall back to pickled ``*.bin`` weights: every call
    that loads weights passes ``use_safetensors=True`` (configs, tokenizers and processors load none)."""
    bad, seen = [], []
    for path, node in _calls(("from_pretrained",)):
        owner = _dotted(node.func).rsplit(".", 1)[0]
        if owner.endswith(NO_WEIGHTS_SUFFIXES):
            continue
        seen.append(f"{path}:{node.lineno}: {owner}")
        w = _kw(node, "use_safetensors")
        if not (isinstance(w, ast.Constant) and w.value is True):
            bad.append(f"{path}:{node.lineno}: {owner}.from_pretrained without use_safetensors=True")
    assert not bad, bad
    assert len(seen) >= 3, seen  # the scan sees the CLAP, CLIP and LTX-2 loaders


def test_a_model_folder_with_only_pickled_weights_is_refused_unread(tmp_path):
    """A CLIP folder whose weights are a pickled pytorch_model.bin (here a pickle that would run a
    command): the pre-flight check names the file, scoring records error rows, nothing is unpickled."""
    import pickle

    import numpy as np

    from avits_core.errors import MissingWeightsError
    from avits_core.media import AVClip
    from avits_core.prompts import Prompt
    from avits_core.verifiers.clip import ClipScore
    from tiny_models import build_tiny_clip

    folder = build_tiny_clip(tmp_path / "clip")
    for f in folder.glob("*.safetensors"):
        f.unlink()
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"vision_model.embeddings.class_embedding": Evil()}))
    v = ClipScore(model_path=str(folder))
    with pytest.raises(MissingWeightsError, match=r"pytorch_model\.bin' holds pickled weights"):
        v.check_ready()
    clip = AVClip(video=np.zeros((4, 32, 32, 3), np.uint8), fps=8.0, audio=np.zeros(8000, np.float32),
                  sample_rate=16000)
    res = v.score([clip], [Prompt("p", "a red ball")])
    assert res.errors[0] and "pickled weights" in res.errors[0]
    assert not marker.exists()


def test_a_pickled_latent_file_is_not_executed(tmp_path):
    import pickle

    from avits_core.errors import AvitsError
    from avits_core.runner.state import load_latent_file

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    f = tmp_path / "c000.pt"
    f.write_bytes(pickle.dumps({"steps": Evil()}))
    with pytest.raises(Exception) as ei:  # the weights-only unpickler refuses os.system
        load_latent_file(f, "c000", 0, 0)
    assert isinstance(ei.value, (pickle.UnpicklingError, AvitsError)), repr(ei.value)
    assert not marker.exists()


# -- names and paths ----------------------------------------------------------------------------

def _tiny_cfg(tmp_path: Path, **over):
    base = {"name": "sec", "seed": 1, "output_root": str(tmp_path / "runs"),
            "generator": {"name": "synth", "params": {"num_steps": 4}},
            "prompts": {"source": ["a small red ball bounces twice with a high beep"]},
            "search": {"method": "best_of_n", "n": 2}, "verifiers": [{"name": "av_sync"}],
            "aggregator": {"name": "weighted"}, "evaluation": {"oracle": True, "verifiers": []}}
    base.update(over)
    return base


def _files_outside(tmp_path: Path, root: Path) -> list[Path]:
    return [p for p in tmp_path.rglob("*") if p.is_file() and root not in p.parents]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_generation_writes_refuse_a_prompt_id_that_leaves_the_run(tmp_path, monkeypatch, bad):
    """Even when a prompt id gets past the prompt loader (its check switched off here), media, latents
    and plans are written through store.inside: nothing lands outside the run folder."""
    import avits_core.prompts as prompts_mod
    from avits_core import runner
    from avits_core.config import RunConfig
    from avits_core.runner.generate import generate_event
    from avits_core.runner.state import plan_relpath

    monkeypatch.setattr(prompts_mod, "check_prompt_id", lambda value, where=None: value)
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"prompt_id": bad, "text": "a small red ball bounces twice with a high beep"}) + "\n")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    ctx = runner.prepare_run(RunConfig.model_validate(_tiny_cfg(tmp_path, prompts={"source": str(f)})), check_models=False)
    assert ctx.prompts[0].prompt_id == bad  # the id did get through
    before = {p for p in tmp_path.rglob("*")}
    runner.start_search(ctx)
    with pytest.raises((UnsafePathError, ValueError, OSError)) as ei:
        generate_event(ctx, bad, 0)
    if "\x00" not in bad and len(bad) < 255:
        assert isinstance(ei.value, UnsafePathError) and "leaves the folder" in str(ei.value)
    new = {p for p in tmp_path.rglob("*")} - before
    assert all(ctx.store.path in p.parents for p in new), sorted(new)
    assert not list(work.iterdir()) and not Path("/abs/x").exists()
    assert ctx.store.read("candidates").num_rows == 0
    if len(bad) < 255:  # a too-long id stays inside (the loader refuses it: test_prompt_file_ids_...)
        with pytest.raises(UnsafePathError):
            ctx.store.inside(plan_relpath(bad, 1))


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_run_id_name_and_output_values_are_refused_before_anything_is_written(tmp_path, bad):
    from avits_core.config import RunConfig

    for key in ("run_id", "name"):
        with pytest.raises((ConfigError, ValueError)) as ei:
            RunConfig.model_validate(_tiny_cfg(tmp_path, **{key: bad}))
        assert key in str(ei.value)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_prompt_file_ids_are_refused_by_the_cli_with_exit_2(tmp_path, bad):
    import yaml

    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"prompt_id": "ok", "text": "a ball"}) + "\n" + json.dumps({"prompt_id": bad, "text": "a cube"}) + "\n")
    cfg = _tiny_cfg(tmp_path, prompts={"source": str(f)})
    c = tmp_path / "c.yaml"
    c.write_text(yaml.safe_dump(cfg))
    if bad != BAD_NAMES[0]:  # one CLI round trip is enough; the loader is the same for every value
        from avits_core.prompts import load_prompts

        with pytest.raises(ConfigError, match=r"line 2, field 'prompt_id'"):
            load_prompts(f)
        return
    r = subprocess.run([AVITS, "run", str(c)], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                       env=dict(os.environ, PREFECT_API_URL="http://127.0.0.1:9/api"))
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    assert any("line 2, field 'prompt_id'" in ln for ln in lines), lines
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_benchmark_name_and_labels_are_checked(tmp_path, bad):
    from avits_core.benchmark import load_benchmark

    (tmp_path / "c.yaml").write_text("prompts: {source: [a ball]}\nverifiers: [{name: av_sync}]\n")
    b = tmp_path / "b.yaml"
    b.write_text(json.dumps({"name": bad, "configs": ["c.yaml"]}))  # JSON is YAML; keeps NUL escaped
    with pytest.raises(UnsafeNameError, match=r"b\.yaml: name: benchmark name"):
        load_benchmark(b)
    b.write_text(json.dumps({"name": "ok", "configs": [{"path": "c.yaml", "label": bad}]}))
    with pytest.raises(UnsafeNameError, match=r"configs\.0\.label: label"):
        load_benchmark(b)
    b.write_text("\ufeffname: ok\nconfigs: [c.yaml]\n")  # an editor's BOM is fine
    assert load_benchmark(b)["name"] == "ok"
    b.write_text("name: a\nname: b\nconfigs: [c.yaml]\n")
    with pytest.raises(ConfigError, match="appears twice"):
        load_benchmark(b)


def test_benchmark_folder_stays_under_benchmarks(tmp_path):
    """The folder the benchmark flow writes its comparison to (flows.benchmark.comparison_folder) stays
    under <output_root>/benchmarks, on local disk and on an object store."""
    from avits_core.names import UnsafeNameError
    from flows.benchmark import comparison_folder

    root = str(tmp_path / "runs")
    assert comparison_folder(root, "nightly") == tmp_path / "runs" / "benchmarks" / "nightly"
    for bad in ["../x", "/abs/x", "a/../../x"]:
        with pytest.raises(UnsafePathError):
            comparison_folder(root, bad)
    pytest.importorskip("s3fs")
    assert str(comparison_folder("s3://bucket/runs", "nightly")) == "s3://bucket/runs/benchmarks/nightly"
    for bad in ["../x", "/abs/x", "a/../../x", "a/b"]:
        with pytest.raises((UnsafePathError, UnsafeNameError)):
            comparison_folder("s3://bucket/runs", bad)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A tiny finished run built at library level (no Prefect): candidates, rewards, selection, metrics."""
    from avits_core import runner
    from avits_core.config import RunConfig

    tmp = tmp_path_factory.mktemp("secrun")
    cfg = RunConfig.model_validate(_tiny_cfg(tmp))
    out = runner.run(cfg) if hasattr(runner, "run") else None
    path = Path(out["run_path"]) if isinstance(out, dict) and "run_path" in out else next((tmp / "runs").iterdir())
    return path


@pytest.mark.parametrize("bad", BAD_NAMES + ["bogus"])
def test_selection_option_is_checked_and_an_unknown_one_refused(finished_run, bad):
    from typer.testing import CliRunner

    from avits.cli import app

    before = sorted(p for p in finished_run.parent.parent.rglob("*"))
    for cmd in (["report"], ["budget", "--no-record"], ["diagnose"]):
        r = CliRunner().invoke(app, [*cmd, str(finished_run), "--selection", bad])
        out = r.output.strip()
        assert r.exit_code == 2, (cmd, out)
        assert len(out.splitlines()) == 1 and out.startswith("error: ")
        if bad == "bogus":
            assert "no selection 'bogus'" in out and "stored:" in out
        else:
            assert "--selection: selection id" in out
    after = sorted(p for p in finished_run.parent.parent.rglob("*"))
    assert [p for p in after if p not in before and "lock" not in p.name] == []
