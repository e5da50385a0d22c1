"""The ImageBind family of verifiers on one embedding-backbone interface.

Modules: ``backbone`` (the interface, ImageBind-huge, ``make_backbone``), ``tiny`` (the weight-free test
backbone), ``audio`` (Kaldi fbank audio input), ``vision`` (frame and video inputs), ``scores`` (formulas
and the five verifiers). Every public name is importable from this package.

Backbone interface (:class:`EmbeddingBackbone`): four methods that return one embedding row per
input, in one shared space (rows need not be normalised; every score here L2-normalises them):
    embed_text(texts)                      -> (B, D)
    embed_frames(frames)                   -> (N, D)   uint8 RGB frames (H, W, 3), one image each
    embed_video(videos, fps)               -> (B, D)   uint8 (T, H, W, 3) clips with their frame rates
    embed_audio(waves, sample_rates)       -> (B, D)   mono float waves with their sample rates

Backbones
    ``ImageBindBackbone`` (``backbone="imagebind"``): the official ImageBind-huge model. It needs the
        ``imagebind`` package (github.com/facebookresearch/ImageBind, which needs torchvision and
        torchaudio, so it is *not* installable beside this project's CPU torch; install it on the GPU
        machine) and the official ``imagebind_huge.pth`` state dict as a local file (``model_path``;
        never downloaded at run time). Without either, :meth:`check_ready` raises MissingWeightsError
        saying what to install or fetch. Inputs are prepared here without torchvision/torchaudio,
        following ImageBind's ``data.py``: frames are resized (short side 224, bicubic), centre
        cropped and normalised with the CLIP mean/std; a video becomes 5 clips of 2 s (2 frames
        each, evenly spaced clip starts), short-side scaled to 224 (bilinear) with 3 spatial crops;
        audio is resampled to 16 kHz, cut into 3 clips of 2 s and turned into a 128-bin Kaldi log-mel
        filterbank (25 ms / 10 ms, Hanning, pre-emphasis 0.97, padded/cropped to 204 frames,
        normalised with mean -4.268, std 9.138). The model averages over clips and crops.
    ``TinyBackbone`` (``backbone="tiny"``): a small, randomly initialised (seeded) torch network with
        the same four towers. Its numbers mean nothing; it exists so that the whole pipeline and
        the formulas run on a CPU with no weights (tests, ``make demo``).
    Any object with the four methods can be passed as ``backbone=`` (tests use designed vectors).

Scores (all cosines in [-1, 1], higher is better)
    ib_tv        cos(text, video)
    ib_ta        cos(text, audio)
    ib_av        cos(video, audio)
    avh_score    mean over frames f of cos(frame_f, whole-clip audio) (TAVGBench's AVHScore), over
                 ``num_frames`` (16) frames sampled uniformly (all frames when fewer).
    javis_score  JavisScore: windows of ``window_s`` = 2.0 s with ``overlap_s`` = 1.5 s (step 0.5 s)
                 over D = min(video duration, audio duration); window w covers [s_w, s_w + 2.0) for
                 s_w = 0, 0.5, ... while s_w + 2.0 <= D. A clip shorter than one window is one window
                 [0, D). Per window: the cosines between each frame inside the window and the
                 embedding of the window's audio; the mean of the lowest ``fraction`` (40%) of them,
                 k = max(1, floor(0.4 n)) frames; JavisScore = the mean over windows. Frames: the
                 ``num_frames`` (16) frames sampled uniformly from the clip (JavisBench evaluates 16
                 frames per video), a frame at index i sitting at time i / fps; a window that holds
                 none of them uses the sampled frame nearest to its centre. ``num_frames=None``
                 uses every frame. Each frame is embedded once even when windows share it.

Protocol ``javisbench`` (``protocol="javisbench"``: JavisBench's evaluator, ``calc_imagebind_score`` and
``calc_av_score`` in JavisDiT ``eval/javisbench``; checked against its code, not its numbers)
    ib_tv, ib_av  the same recipe as ours (ImageBind's own video and audio transforms); only the
                  decoding differs (the evaluator reads files with pytorchvideo / torchaudio).
    ib_ta        the text is the CSV's ``audio_text`` column when the set has one, else ``text``.
    avh_score    EVERY frame of the clip (the evaluator embeds each decoded frame), not 16.
    javis_score  the evaluator's windows, counted in frames and samples, not seconds: audio
                 resampled to 16 kHz (librosa soxr_hq here; torchaudio there); frame windows of
                 int(2.0 * fps) frames with step int(2.0 * fps) - int(1.5 * fps), audio windows of
                 32000 samples with step 8000, each list's last window moved back to end at the last
                 frame / sample, both lists cut to the shorter; a clip with at most one window of
                 frames or of audio is one window of every frame and the whole audio. Per window: the
                 cosines of each of its frames with the window audio's embedding, the mean of the
                 k = int(0.4 * n) lowest (no max(1, .): k = 0, e.g. 2 frames, is an error row where
                 the evaluator would produce NaN); the mean over windows.
    The evaluator's text for ib_tv, avh and javis is ``text``; ``text_field`` cannot be changed.
"""


from avits_core.verifiers.imagebind.audio import (
    IB_AUDIO_MEAN,
    IB_AUDIO_STD,
    ib_audio_input,
    kaldi_fbank,
    kaldi_mel_banks,
)
from avits_core.verifiers.imagebind.backbone import (
    DEFAULT_IMAGEBIND_PATH,
    IMAGEBIND_URL,
    EmbeddingBackbone,
    ImageBindBackbone,
    make_backbone,
)
from avits_core.verifiers.imagebind.scores import (
    IB_AUDIO_SECONDS,
    IB_MIN_SIDE,
    JAVISBENCH_SR,
    AVHScore,
    IBAudioVideo,
    IBTextAudio,
    IBTextVideo,
    JavisScore,
    cosine_rows,
    javis_windows,
    lowest_fraction_mean,
    silence_reason,
)
from avits_core.verifiers.imagebind.tiny import TinyBackbone
from avits_core.verifiers.imagebind.vision import CLIP_MEAN, CLIP_STD, ib_image_input, ib_video_input

__all__ = [
    "AVHScore", "CLIP_MEAN", "CLIP_STD", "DEFAULT_IMAGEBIND_PATH", "EmbeddingBackbone", "IBAudioVideo", "IBTextAudio",
    "IBTextVideo", "IB_AUDIO_MEAN", "IB_AUDIO_SECONDS", "IB_AUDIO_STD", "IB_MIN_SIDE", "IMAGEBIND_URL",
    "ImageBindBackbone", "JAVISBENCH_SR", "JavisScore", "TinyBackbone", "cosine_rows", "ib_audio_input",
    "ib_image_input", "ib_video_input", "javis_windows", "kaldi_fbank", "kaldi_mel_banks", "lowest_fraction_mean",
    "make_backbone", "silence_reason",
]
