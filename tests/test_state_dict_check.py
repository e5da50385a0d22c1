"""loading.check_state_dict / state_dict_problems: the one strict state-dict check every model loader uses
(VQAScore, Synchformer, VideoReward, AudioCLIP, JavisBench I3D)."""

from __future__ import annotations

import pytest
import torch

from avits_core.errors import ConfigError
from avits_core.loading import check_state_dict, state_dict_problems


def _net():
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))


def test_a_matching_state_dict_has_no_problem():
    net = _net()
    assert state_dict_problems(net.state_dict(), _net().state_dict()) is None
    check_state_dict(net.state_dict(), _net().state_dict(), what="x")  # no raise


def test_every_missing_unexpected_and_misshaped_key_is_named():
    expected = _net().state_dict()
    got = dict(expected)
    del got["0.bias"], got["1.running_var"]
    got["2.weight"] = torch.zeros(1)
    got["0.weight"] = torch.zeros(5, 3)
    assert state_dict_problems(expected, got) == (
        "2 missing keys: 0.bias, 1.running_var; 1 unexpected keys: 2.weight; "
        "1 keys with other shapes: 0.weight: checkpoint (5, 3) vs model (4, 3)")
    # the checkpoint's own spelling with a prefix; shapes may be given instead of tensors
    assert state_dict_problems({"a": (2,), "b": (1,)}, {"a": (3,)}, prefix="tower.") == (
        "1 missing keys: tower.b; 1 keys with other shapes: tower.a: checkpoint (3,) vs model (2,)")


def test_ignored_missing_keys_and_the_limit():
    expected = _net().state_dict()
    got = {k: v for k, v in expected.items() if not k.endswith("num_batches_tracked")}
    assert state_dict_problems(expected, got, ignore_missing=lambda k: k.endswith("num_batches_tracked")) is None
    assert state_dict_problems(expected, got) == "1 missing keys: 1.num_batches_tracked"
    many = {f"k{i:02d}": (1,) for i in range(15)}
    text = state_dict_problems(many, {}, limit=3)
    assert text == "15 missing keys: k00, k01, k02 ... and 12 more"


def test_check_raises_the_callers_error_with_what_and_hint():
    class WeightsError(ValueError):
        pass

    with pytest.raises(WeightsError, match=r"^model 'm.pt': 1 missing keys: b; get the file from X$"):
        check_state_dict({"a": (1,), "b": (1,)}, {"a": (1,)}, what="model 'm.pt'", error=WeightsError,
                         hint="get the file from X")
    with pytest.raises(ConfigError, match="1 unexpected keys: z"):  # the default error
        check_state_dict({}, {"z": (1,)}, what="m")
