"""Key names of Synchformer checkpoints across transformers versions.

The published ``synchformer_state_dict.pth`` names its AST (audio encoder) keys as transformers 4
did (``afeat_extractor.ast.encoder.layer.N.attention.attention.query.weight``, ...); transformers 5
names the same tensors ``afeat_extractor.ast.layers.N.attention.q_proj.weight``, .... ``remap_ast_keys``
renames a published state dict for the installed transformers (which naming it uses is read once
from a meta-device ``ASTModel``); ``published_state_dict`` goes the other way, from a model to the
published names. Keys outside the AST encoder layers are never renamed.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Mapping

import torch

_AST_RULES = (  # published (transformers 4) -> transformers 5, applied after "encoder.layer.N." -> "layers.N."
    (".attention.attention.query.", ".attention.q_proj."),
    (".attention.attention.key.", ".attention.k_proj."),
    (".attention.attention.value.", ".attention.v_proj."),
    (".attention.output.dense.", ".attention.o_proj."),
    (".intermediate.dense.", ".mlp.fc1."),
    (".output.dense.", ".mlp.fc2."),
)
_AST_PREFIX = "afeat_extractor.ast."


@functools.lru_cache(maxsize=1)
def _new_ast_naming() -> bool:
    """True when the installed transformers names AST layers ``layers.N.attention.q_proj`` (5.x)."""
    from transformers import ASTConfig, ASTModel

    tiny = ASTConfig(hidden_size=4, num_hidden_layers=1, num_attention_heads=1, intermediate_size=4,
                     num_mel_bins=16, max_length=16, patch_size=16)
    with torch.device("meta"):
        keys = ASTModel(tiny).state_dict().keys()
    return any(k.startswith("layers.0.") for k in keys)


def remap_ast_key(key: str, new_naming: bool = True) -> str:
    """Rename one published key to the installed transformers' AST naming (others pass unchanged)."""
    if not new_naming or not key.startswith(_AST_PREFIX):
        return key
    rest = key[len(_AST_PREFIX):]
    m = re.match(r"encoder\.layer\.(\d+)\.(.*)$", rest)
    if not m:
        return key
    tail = "." + m.group(2)
    for old, new in _AST_RULES:
        if tail.startswith(old):
            tail = new + tail[len(old):]
            break
    return f"{_AST_PREFIX}layers.{m.group(1)}{tail}"


def unmap_ast_key(key: str, new_naming: bool = True) -> str:
    """The published name of one of our keys (inverse of :func:`remap_ast_key`)."""
    if not new_naming or not key.startswith(_AST_PREFIX + "layers."):
        return key
    m = re.match(r"layers\.(\d+)\.(.*)$", key[len(_AST_PREFIX):])
    assert m is not None
    tail = "." + m.group(2)
    for old, new in _AST_RULES:
        if tail.startswith(new):
            tail = old + tail[len(new):]
            break
    return f"{_AST_PREFIX}encoder.layer.{m.group(1)}{tail}"


def remap_ast_keys(sd: Mapping[str, Any], new_naming: bool | None = None) -> dict[str, Any]:
    """A published state dict with its AST keys renamed for the installed transformers."""
    new = _new_ast_naming() if new_naming is None else new_naming
    return {remap_ast_key(k, new): v for k, v in sd.items()}


def published_state_dict(model: torch.nn.Module, new_naming: bool | None = None) -> dict[str, torch.Tensor]:
    """``model``'s state dict under the published key names (what ``synchformer_state_dict.pth`` holds)."""
    new = _new_ast_naming() if new_naming is None else new_naming
    return {unmap_ast_key(k, new): v for k, v in model.state_dict().items()}
