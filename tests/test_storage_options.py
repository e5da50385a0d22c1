"""Object-store options per location (avits_core.store.fs): a config's ``storage`` block holds for its own
``output_root`` and below, so configs for different stores in one process (a benchmark's runs, a worker,
a test session) never use each other's endpoint or credentials."""

from __future__ import annotations

import pytest

from avits_core.config import config_from_dict
from avits_core.store import fs


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    fs.set_storage_options(None)
    yield
    fs.set_storage_options(None)


def _cfg(root: str, storage: dict | None = None):
    data = {"output_root": root, "prompts": {"source": ["a dog barks"]}, "verifiers": [{"name": "av_sync"}]}
    if storage is not None:
        data["storage"] = storage
    return config_from_dict(data, source="test")


def test_each_configs_storage_holds_for_its_own_root_only():
    _cfg("s3://bucket-a/runs", {"endpoint_url": "http://127.0.0.1:9001", "key": "ka"})
    _cfg("S3://bucket-b/runs/", {"endpoint_url": "http://127.0.0.1:9002"})  # loaded last: used to win everywhere
    _cfg("s3://bucket-c/runs")  # no storage block: the environment only
    assert fs.storage_options("s3://bucket-a/runs/demo-1234/rewards")["endpoint_url"] == "http://127.0.0.1:9001"
    assert fs.storage_options("s3://bucket-a/runs")["key"] == "ka"
    assert fs.storage_options("s3://bucket-b/runs/x")["endpoint_url"] == "http://127.0.0.1:9002"
    assert "key" not in fs.storage_options("s3://bucket-b/runs/x")
    assert fs.storage_options("s3://bucket-c/runs/x") == {"use_listings_cache": False}
    assert fs.storage_options("s3://bucket-a/runs-other/x") == {"use_listings_cache": False}  # a sibling, not under it


def test_the_longest_root_wins_then_the_process_default_then_the_environment(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://env:1")
    fs.set_storage_options({"region_name": "eu-west-1"})  # every location no root covers
    fs.set_storage_options({"endpoint_url": "http://outer:2"}, root="s3://b/p")
    fs.set_storage_options({"endpoint_url": "http://inner:3"}, root="s3://b/p/q")
    assert fs.storage_options("s3://b/p/q/run")["endpoint_url"] == "http://inner:3"
    assert fs.storage_options("s3://b/p/run")["endpoint_url"] == "http://outer:2"
    assert fs.storage_options("s3://b/other") == {"use_listings_cache": False, "endpoint_url": "http://env:1",
                                                  "region_name": "eu-west-1"}
    fs.set_storage_options(None, root="s3://b/p/q")  # that root's entry only
    assert fs.storage_options("s3://b/p/q/run")["endpoint_url"] == "http://outer:2"


def test_as_path_builds_the_filesystem_with_its_locations_options():
    pytest.importorskip("s3fs")
    _cfg("s3://bucket-a/runs", {"endpoint_url": "http://127.0.0.1:9001"})
    _cfg("s3://bucket-b/runs", {"endpoint_url": "http://127.0.0.1:9002"})
    a, b = fs.as_path("s3://bucket-a/runs/r1"), fs.as_path("s3:/bucket-b/runs/r2")  # the second as pathlib collapses it
    assert a.fs.endpoint_url == "http://127.0.0.1:9001" and b.fs.endpoint_url == "http://127.0.0.1:9002"
    assert (a / "rewards").fs.endpoint_url == "http://127.0.0.1:9001"
