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
