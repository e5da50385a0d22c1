"""VideoReward (VideoAlign's Qwen2-VL-2B video reward model) as the ``videoreward`` verifier.

Split by job:
    :mod:`.template`    the prompt template (read from the user's file, hash-checked) and the chat text
    :mod:`.frames`      frame sampling, resize, normalisation and patches (no torchvision)
    :mod:`.checkpoint`  folders, ``model_config.json``, both weight layouts, the LoRA fold and key remap
    :mod:`.model`       the network on transformers 5.x (sequential positions, reward-token pooling), loading
    :mod:`.verifier`    the :class:`VideoReward` verifier (heads, normalisation, cache, batching)

Nothing here imports torch or transformers at import time. Recipe: ``docs/videoreward.md``.
"""

from avits_core.verifiers.videoreward.verifier import VideoReward, clear_head_cache

__all__ = ["VideoReward", "clear_head_cache"]
