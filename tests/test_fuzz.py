"""Property-based fuzzing (hypothesis) of configs and prompt files (issue 10, reliability suite).

Property: every generated input either loads (and then its run id can be computed, every prompt id
is a safe unique name, every text non-empty) or raises the project's ConfigError (PromptError is
one) with a one-line message; no other exception escapes, and nothing is written on refusal.
"""

from __future__ import annotations

import codecs
import json
import os
import tempfile
from pathlib import Path

import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from avits_core.config import load_config  # noqa: E402
from avits_core.errors import ConfigError  # noqa: E402
from avits_core.names import PROMPT_ID_MAX, is_safe_name  # noqa: E402
from avits_core.prompts import load_prompts  # noqa: E402

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                    database=None)

BASE = {
    "name": "fuzz",
    "seed": 0,
    "output_root": "out",
    "generator": {"name": "synth", "params": {"num_steps": 4}},
    "prompts": {"source": ["a red ball bounces twice", "a blue cube bounces once"]},
    "search": {"method": "best_of_n", "n": 2},
    "verifiers": [{"name": "av_sync", "weight": 1.0}, {"name": "quality", "weight": 0.5}],
    "aggregator": {"name": "arw", "params": {}},
}

KEYS = ["name", "run_id", "seed", "output_root", "generator", "generator.name", "generator.params",
        "generator.params.num_steps", "prompts", "prompts.source", "prompts.text_column", "prompts.limit",
        "prompts.source.0", "search", "search.method", "search.n", "search.prompts_per_task", "search.params",
        "verifiers", "verifiers.0", "verifiers.0.name", "verifiers.0.weight", "verifiers.1.weight",
        "verifiers.5.weight", "verifiers.-1.weight", "verifiers.x", "aggregator.name", "aggregator.params.lr",
        "evaluation", "evaluation.oracle", "evaluation.verifiers", "evaluation.distribution",
        "evaluation.distribution.reference", "unknown", "a.b.c", "seed.x", "", ".", "name..x"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30), st.sampled_from(["../x", "/abs", "a\x00b", "x" * 300, "2020-01-01", "1e400", ".inf",
                                           "~", "yes", "0x1F", "!!python/object:os.system", "&a", "*a", "{", "["]),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=8)


def _yaml_text(v) -> str:
    try:
        return yaml.safe_dump(v, default_flow_style=True, allow_unicode=True).strip().removesuffix("...").strip()
    except yaml.YAMLError:
        return str(v)


override_values = st.one_of(values.map(_yaml_text), st.text(max_size=40))
plausible = st.one_of(  # overrides a user would type, mostly valid: so that loading is exercised too
    st.integers(-2, 9).map(lambda n: f"search.n={n}"), st.integers(-1, 2**64).map(lambda n: f"seed={n}"),
    st.floats(-1, 3).map(lambda w: f"verifiers.0.weight={w}"), st.integers(0, 4).map(lambda n: f"search.prompts_per_task={n}"),
    st.sampled_from(["aggregator.name=rank", "aggregator.name=weighted", "search.method=evosearch",
                     "run_id=my-run", "run_id=../x", "name=n1", "prompts.limit=1", "evaluation.oracle=false",
                     "generator.params.num_steps=2", "output_root=elsewhere", "prompts.source=[one, two]"]))
overrides = st.lists(st.one_of(plausible, plausible, st.tuples(st.sampled_from(KEYS) | st.text(max_size=15),
                                                               override_values).map(lambda kv: f"{kv[0]}={kv[1]}"),
                               st.text(max_size=20)), max_size=3)


def _snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _check_outcome(fn, root: Path):
    before = _snapshot(root)
    cwd = os.getcwd()
    os.chdir(root)  # a relative output_root would land here if anything wrote it
    try:
        result = fn()
    except ConfigError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg, repr(msg)
        result = None
    finally:
        os.chdir(cwd)
    assert _snapshot(root) == before, "a file was written while loading"
    return result


@SETTINGS
@given(items=overrides)
def test_set_overrides_load_or_refuse_with_one_line(items):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        cfg_file = root / "c.yaml"
        cfg_file.write_text(yaml.safe_dump(BASE))
        cfg = _check_outcome(lambda: load_config(cfg_file, items), root)
        if cfg is not None:
            rid = cfg.resolved_run_id()
            assert is_safe_name(rid) and len(rid) <= 200


@st.composite
def config_documents(draw):
    doc = json.loads(json.dumps(BASE))
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from([k for k in KEYS if k and "." not in k] + ["generator", "search", "prompts"]))
        if draw(st.booleans()) and isinstance(doc.get(path), dict):
            doc[path][draw(st.text(max_size=6))] = draw(values)
        else:
            doc[path] = draw(values)
    return doc


@SETTINGS
@given(doc=config_documents(), mode=st.sampled_from(["yaml", "bom", "crlf", "dup", "garbage"]),
       junk=st.binary(max_size=60))
def test_yaml_documents_load_or_refuse_with_one_line(doc, mode, junk):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        text = yaml.safe_dump(doc, allow_unicode=True)
        data = text.encode("utf-8")
        if mode == "bom":
            data = codecs.BOM_UTF8 + data
        elif mode == "crlf":
            data = text.replace("\n", "\r\n").encode("utf-8")
        elif mode == "dup":
            data = data + b"seed: 3\n"  # the same top-level key twice
        elif mode == "garbage":
            data = data[: len(data) // 2] + junk
        f = root / "c.yaml"
        f.write_bytes(data)
        cfg = _check_outcome(lambda: load_config(f), root)
        if mode == "dup" and "seed" in doc:
            assert cfg is None
        if cfg is not None:
            assert is_safe_name(cfg.resolved_run_id())


words = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,20}", fullmatch=True)
cells = st.one_of(words, words, words, st.text(max_size=25),
                  st.sampled_from(["../../x", "/etc/passwd", "a,b", 'say "hi"', "two\nlines", "x" * 300, "", "  ",
                                   "é", "s00", "-0Gj8-vB1q4", "\x00"]))


@st.composite
def csv_files(draw):
    header = draw(st.sampled_from([["prompt_id", "text"], ["id", "text", "category"], ["text"], ["text ", "cat0_ind"]])
                  | st.lists(st.sampled_from(["prompt_id", "id", "text", "category", "audio_text", "", "text "]),
                             min_size=1, max_size=4))
    n = len(header)
    row = st.lists(cells, min_size=n, max_size=n) | st.lists(cells, min_size=0, max_size=n + 1)
    rows = draw(st.lists(row, max_size=5))

    def q(c: str) -> str:
        return '"' + c.replace('"', '""') + '"' if draw(st.booleans()) else c

    nl = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    body = nl.join(",".join(q(c) for c in r) for r in [header, *rows]) + draw(st.sampled_from(["", nl]))
    enc = draw(st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "utf-16", "latin-1"]))
    try:
        return body.encode(enc)
    except UnicodeEncodeError:
        return body.encode("utf-8")


def _check_prompts(prompts) -> None:
    if prompts is None:
        return
    ids = [p.prompt_id for p in prompts]
    assert prompts and len(set(ids)) == len(ids)
    assert len({i.casefold() for i in ids}) == len(ids)
    assert all(is_safe_name(i, PROMPT_ID_MAX) for i in ids)
    assert all(p.text and p.text == p.text.strip() for p in prompts)


@SETTINGS
@given(data=csv_files())
def test_csv_prompt_files_load_or_refuse_with_one_line(data):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        f = root / "p.csv"
        f.write_bytes(data)
        _check_prompts(_check_outcome(lambda: load_prompts(f), root))


@SETTINGS
@given(lines=st.lists(st.one_of(cells, values.map(lambda v: json.dumps(v, default=str)),
                                st.fixed_dictionaries({"text": cells}, optional={"prompt_id": cells, "id": values})
                                .map(json.dumps)), max_size=6),
       suffix=st.sampled_from([".txt", ".jsonl"]), bom=st.booleans(), raw=st.binary(max_size=30))
def test_txt_and_jsonl_prompt_files_load_or_refuse_with_one_line(lines, suffix, bom, raw):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        f = root / f"p{suffix}"
        f.write_bytes((codecs.BOM_UTF8 if bom else b"") + "\n".join(lines).encode("utf-8") + raw)
        _check_prompts(_check_outcome(lambda: load_prompts(f), root))


def _check_cli_refusal(res, root: Path) -> None:
    """Exit code 2, one ``error: ...`` line (the last one; a start banner may precede it), no
    traceback, and no run folder written."""
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert res.exit_code == 2, (res.output, res.exception)
    assert len(errors) == 1 and lines[-1] == errors[0], lines
    assert "Traceback" not in res.output
    assert not (root / "runs").exists(), sorted(str(p) for p in (root / "runs").rglob("*"))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(items=overrides)
def test_cli_refuses_bad_overrides_with_exit_2_one_line_and_nothing_written(items):
    """The same overrides through ``avits run``: an input the config module refuses exits 2 with one
    line on stderr, before any run folder exists. (Inputs that load are not run here: too slow.)"""
    from typer.testing import CliRunner

    from avits.cli import app

    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        cfg_file = root / "c.yaml"
        cfg_file.write_text(yaml.safe_dump({**BASE, "output_root": str(root / "runs")}))
        try:
            load_config(cfg_file, items)
            return  # a valid config would start a run
        except ConfigError:
            pass
        args = ["run", str(cfg_file)]
        for it in items:
            args += ["--set", it]
        res = CliRunner().invoke(app, args)
        _check_cli_refusal(res, root)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(data=csv_files())
def test_cli_refuses_bad_prompt_files_with_exit_2_one_line_and_nothing_written(data):
    from typer.testing import CliRunner

    from avits.cli import app

    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "p.csv").write_bytes(data)
        try:
            load_prompts(root / "p.csv")
            return  # a valid prompt file would start a run
        except ConfigError:
            pass
        cfg_file = root / "c.yaml"
        cfg_file.write_text(yaml.safe_dump({**BASE, "output_root": str(root / "runs"), "prompts": {"source": "p.csv"}}))
        res = CliRunner().invoke(app, ["run", str(cfg_file)])
        _check_cli_refusal(res, root)
