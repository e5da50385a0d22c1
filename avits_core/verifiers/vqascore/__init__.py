"""VQAScore with CLIP-FlanT5 (Lin et al., 2024) on plain transformers: the ``vqascore`` verifier.

What it computes, per (clip, prompt), in (0, 1] (higher is better)
    question = 'Does this figure show "{text}"? Please answer yes or no.' inside CLIP-FlanT5's chat
    template (system line + `` USER: <image>\\n`` + question + `` ASSISTANT: ``), answer = "Yes";
    score(picture) = exp( (1/A) * sum_j log p(answer_j | picture, question, answer_<j) ) over the A answer
    tokens INCLUDING the EOS (A = 2 for "Yes": the geometric mean of P("Yes") and P(EOS | "Yes")), not
    P("Yes") alone. ``text`` is ``prompt.text`` or ``prompt.meta[text_field]``.

Video policies (``video_policy``, required, recorded in ``rewards.verifier_version``)
    Frames ``i * floor(T / frames)`` for ``i < frames`` (default 8; a clip with fewer frames is an error row).
    ``tile``  one picture: the frames side by side in time order with 10 black columns between them, after
              the JPEG round trips of JavisBench's evaluator (t2v_metrics ``video_mode = "concat"``);
              value = score(tile).
    ``mean``  value = mean over the frames of score(frame) (the ITS paper's reward code); the per-frame
              scores go to ``rewards.details``.
    Each picture is padded to a square with the CLIP mean colour, resized (short side 336, bicubic),
    centre-cropped and normalised (hand-written, ``frames.py``).

Modules: ``frames.py`` (sampling, tiling, JPEG, CLIP pixels), ``checkpoint.py`` (the files of a setup,
what is missing, the key mapping), ``model.py`` (CLIP vision tower + projector + T5, the splice and the
score), ``verifier.py`` (the Verifier). Importing this package does not import transformers.
Details and the comparison with the evaluator: docs/vqascore.md.
"""

from avits_core.verifiers.vqascore.verifier import (
    ANSWER_TEMPLATE,
    QUESTION_TEMPLATE,
    SYSTEM_MSG,
    VQAScore,
    chat_prompt,
    ids_with_image,
)

__all__ = ["VQAScore", "QUESTION_TEMPLATE", "ANSWER_TEMPLATE", "SYSTEM_MSG", "chat_prompt", "ids_with_image"]
