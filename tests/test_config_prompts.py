"""Config validation, overrides, prompt loading and seeds."""

from pathlib import Path

import pytest

from avits_core.config import RunConfig, apply_overrides, config_from_dict, load_config
from avits_core.errors import ConfigError, PromptError
from avits_core.prompts import load_prompts
from avits_core.seeding import candidate_seeds, derive_seed

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "data" / "prompts" / "javisbench-mini-head.csv"  # a copy of ../shared/fixtures/


def _minimal(**kw):
    d = {"prompts": {"source": ["a red ball bounces twice"]}, "verifiers": [{"name": "av_sync"}]}
    d.update(kw)
    return d


def test_demo_config_loads_and_resolves_prompt_path():
    cfg = load_config(REPO / "data/configs/demo.yaml")
    assert cfg.search.n == 8 and cfg.aggregator.name == "arw"
    assert Path(cfg.prompts.source).is_file()
    assert [v.name for v in cfg.verifiers] == ["av_align", "av_sync", "synth_text"]
    assert abs(sum(cfg.weights.values()) - 1) < 1e-12


def test_overrides_set_nested_and_list_items(tmp_path):
    cfg = load_config(REPO / "data/configs/demo.yaml", ["search.n=3", "verifiers.1.weight=2.5", "seed=7"])
    assert cfg.search.n == 3 and cfg.verifiers[1].weight == 2.5 and cfg.seed == 7
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_overrides({}, ["search.n"])
    with pytest.raises(ConfigError, match="list index"):
        apply_overrides({"verifiers": [{}]}, ["verifiers.x.weight=1"])


@pytest.mark.parametrize(
    "patch, needle",
    [
        ({"searchh": {}}, "searchh: unknown key"),
        ({"search": {"n": 0}}, "search.n"),
        ({"search": {"n": "many"}}, "search.n"),
        ({"verifiers": []}, "verifiers"),
        ({"verifiers": [{"name": "a", "weight": -1}]}, "verifiers.0.weight"),
        ({"verifiers": [{"name": "a"}, {"name": "a"}]}, "listed twice"),
        ({"seed": "x"}, "seed"),
    ],
)
def test_bad_configs_name_the_field(patch, needle):
    with pytest.raises(ConfigError) as ei:
        config_from_dict(_minimal(**patch), source="cfg.yaml")
    assert needle in str(ei.value) and "cfg.yaml" in str(ei.value)


def test_missing_empty_and_non_mapping_config_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(ConfigError, match="empty"):
        load_config(tmp_path / "empty.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="YAML"):
        load_config(tmp_path / "bad.yaml")


def test_run_id_is_stable_per_config_and_overridable():
    a = config_from_dict(_minimal())
    b = config_from_dict(_minimal())
    c = config_from_dict(_minimal(seed=1))
    assert a.resolved_run_id() == b.resolved_run_id() != c.resolved_run_id()
    assert config_from_dict(_minimal(run_id="mine")).resolved_run_id() == "mine"
    with pytest.raises(ConfigError, match="run_id"):
        config_from_dict(_minimal(run_id="../escape"))


def test_javisbench_csv_keeps_metadata_and_categories():
    prompts = load_prompts(FIXTURE)
    assert len(prompts) == 3
    p = prompts[0]
    assert p.prompt_id == "m1INxJfEzjQ_scene-1"
    assert p.text.startswith("A person is riding a gray horse")
    assert "audio_text" in p.meta and p.categories["cat2"] == "0,1"


def test_synth_prompt_set_has_24_unique_prompts():
    prompts = load_prompts(REPO / "data/prompts/synth-24.csv")
    assert len(prompts) == 24 and len({p.prompt_id for p in prompts}) == 24


def test_txt_and_inline_prompts(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("# comment\nfirst prompt\n\nsecond prompt\n")
    assert [p.text for p in load_prompts(f)] == ["first prompt", "second prompt"]
    assert [p.prompt_id for p in load_prompts(["x", "y"])] == ["p0000", "p0001"]
    assert len(load_prompts(["x", "y", "z"], limit=2)) == 2


@pytest.mark.parametrize(
    "content, needle",
    [
        ("", "no header"),
        ("text\n", "empty"),
        ("prompt_id,caption\na,hello\n", "no 'text' column"),
        ("prompt_id,text\na,hello\na,again\n", "duplicate prompt_id 'a'"),
        ("prompt_id,text\na,\n", "empty text"),
    ],
)
def test_malformed_prompt_files(tmp_path, content, needle):
    f = tmp_path / "p.csv"
    f.write_text(content)
    with pytest.raises(PromptError) as ei:
        load_prompts(f)
    assert needle in str(ei.value) and str(f) in str(ei.value)


def test_missing_prompt_file_and_bad_type(tmp_path):
    with pytest.raises(PromptError, match="not found"):
        load_prompts(tmp_path / "missing.csv")
    (tmp_path / "p.json").write_text("{}")
    with pytest.raises(PromptError, match="unsupported"):
        load_prompts(tmp_path / "p.json")


def test_seeds_differ_per_prompt_and_prefix_stable():
    a = candidate_seeds(0, "s00", 8)
    b = candidate_seeds(0, "s01", 8)
    assert len(set(a)) == 8 and not set(a) & set(b)
    assert candidate_seeds(0, "s00", 4) == a[:4]
    assert derive_seed(1, "s00", 0) != a[0]
    assert all(0 <= s < 2**63 for s in a)


def test_run_id_follows_prompt_file_content_not_its_path(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    for d in (a, b):
        (d / "p.txt").write_text("a red ball bounces twice\n")
    ca = config_from_dict(_minimal(prompts={"source": "p.txt"}), base_dir=a)
    cb = config_from_dict(_minimal(prompts={"source": "p.txt"}), base_dir=b)
    assert ca.resolved_run_id() == cb.resolved_run_id()
    (b / "p.txt").write_text("a blue cube bounces once\n")
    assert ca.resolved_run_id() != cb.resolved_run_id()


def test_run_identity_ignores_scheduling_knobs(tmp_path):
    """Issue 10 case 9: output_root, prompts_per_task and batch sizes leave the run id unchanged;
    what changes results (seed, n, a verifier's device/dtype, the prompts) changes it."""
    base = _minimal(verifiers=[{"name": "clip", "params": {"model_path": "m", "batch_size": 2}}])
    a = config_from_dict(base)
    same = [
        dict(output_root=str(tmp_path / "elsewhere")),
        dict(search={"prompts_per_task": 1}),
        dict(verifiers=[{"name": "clip", "params": {"model_path": "m", "batch_size": 64}}]),
    ]
    for patch in same:
        assert config_from_dict({**base, **patch}).resolved_run_id() == a.resolved_run_id(), patch
    differ = [
        dict(seed=1),
        dict(search={"n": 3}),
        dict(verifiers=[{"name": "clip", "params": {"model_path": "m", "batch_size": 2, "dtype": "float16"}}]),
        dict(prompts={"source": ["another prompt"]}),
    ]
    for patch in differ:
        assert config_from_dict({**base, **patch}).resolved_run_id() != a.resolved_run_id(), patch
    ident = a.identity()
    assert "output_root" not in ident and "prompts_per_task" not in ident["search"]
    assert ident["verifiers"][0]["params"] == {"model_path": "m"}


def test_yaml_bom_duplicate_keys_and_one_line_errors(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_bytes(b"\xef\xbb\xbfname: bom\r\nprompts: {source: [a ball]}\r\nverifiers: [{name: av_sync}]\r\n")
    assert load_config(f).name == "bom"  # the BOM does not become part of the first key
    f.write_text("name: a\nseed: 1\nseed: 2\nprompts: {source: [x]}\nverifiers: [{name: av_sync}]\n")
    with pytest.raises(ConfigError) as ei:
        load_config(f)
    assert str(ei.value) == (f"{f}: not valid YAML: line 3, column 1: key 'seed' appears twice in one mapping "
                             "(first on line 2)")
    f.write_text("prompts: {source: [x]}\nverifiers: [{name: av_sync, weight: -1}]\nsearch: {n: 0}\n")
    with pytest.raises(ConfigError) as ei:
        load_config(f)
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith(f"{f}: invalid config: ")
    assert "verifiers.0.weight" in msg and "search.n" in msg and "(got 0)" in msg
    f.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"line 1, column 10: byte 0xe9 is not UTF-8"):
        load_config(f)


def test_overrides_refuse_bad_paths_without_touching_the_input():
    data = {"verifiers": [{"name": "a"}], "generator": None}
    out = apply_overrides(data, ["generator.params.num_steps=4", "verifiers.0.weight=2"])
    assert out["generator"] == {"params": {"num_steps": 4}} and data["generator"] is None
    for item, needle in [("verifiers.-1.weight=1", "not a valid list index"),
                         ("verifiers.5.weight=1", "the list has 1 items"),
                         ("verifiers..weight=1", "empty key component"),
                         ("verifiers.0.name.x=1", "is not a mapping"),
                         ("seed=[1, 2", "not valid YAML")]:
        with pytest.raises(ConfigError, match=needle):
            apply_overrides(data, [item])


def test_reference_list_csv_is_strict_and_bom_safe(tmp_path):
    from avits_core.config import DistributionConfig

    for name in ("a.mp4", "b.mp4"):
        (tmp_path / name).write_bytes(b"x")
    ref = tmp_path / "ref.csv"
    ref.write_bytes(b"\xef\xbb\xbfpath\r\na.mp4\r\n\r\nb.mp4\r\n")  # Excel: BOM, CRLF, an empty row
    dist = DistributionConfig(reference=str(ref), video={"path": "i3d.pt"})
    assert [p.name for p in dist.reference_files()] == ["a.mp4", "b.mp4"]
    ref.write_text("path\na.mp4\nb.mp4,extra\n")
    with pytest.raises(ConfigError, match=r"line 3: the row has more fields than the header"):
        dist.reference_files()


@pytest.mark.parametrize("root", ["memory://bucket/runs", "gs://bucket/runs", "ftp://host/runs", "hdfs://x/y"])
def test_unsupported_storage_scheme_is_refused_at_load(root):
    """A URL scheme the store does not support used to fail deep in the first read (fsspec traceback,
    "install gcsfs"); it is a one-line config error naming the scheme and the value."""
    with pytest.raises(ConfigError, match=rf"output_root: storage scheme '{root.split(':')[0]}' of '{root}' is not supported"):
        config_from_dict(_minimal(output_root=root))


def test_supported_storage_roots_load_and_the_scheme_is_lower_cased():
    assert config_from_dict(_minimal(output_root="S3://bucket/runs")).output_root == "s3://bucket/runs"
    assert config_from_dict(_minimal(output_root="s3a://bucket/runs")).output_root == "s3a://bucket/runs"
    assert config_from_dict(_minimal(output_root="runs/here")).output_root == "runs/here"
