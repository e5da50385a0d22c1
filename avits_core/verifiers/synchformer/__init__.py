"""DeSync: Synchformer's audio-video offset as a verifier and evaluation metric (plain torch).

Modules: ``model`` (Synchformer and strict weight loading), ``keys`` (checkpoint key names across
transformers versions), ``audio`` (log-mel without torchaudio), ``video`` (25 fps resampling, resize
and crop without torchvision), ``windows`` (the av_benchmark and javisbench policies: segments and
windows), ``verifier`` (:class:`DeSync`). Importing this package
does not import torch or transformers; the model modules do. Recipe and numbers: docs/desync.md.
"""

from avits_core.verifiers.synchformer.verifier import DEFAULT_SYNCHFORMER_PATH, DeSync

__all__ = ["DeSync", "DEFAULT_SYNCHFORMER_PATH"]
