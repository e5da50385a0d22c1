"""SynthAV world: prompt grammar, scene modes, latent layout and the numpy renderer.

This module holds everything about the *world* (what a scene is, how a prompt asks for one, how
a latent vector maps to a scene, how a scene is drawn and sounded). The sampler that moves latents
through the rectified-flow ODE lives in :mod:`avits_core.generators.synth`.

Scene
    One object (``ball`` or ``cube``; a palette ``colour``; a ``size``) bouncing ``count`` times on
    a floor during the clip; each bounce makes a short decaying tone burst (``pitch``, ``timbre``);
    a background sound texture (``background``); sensor noise in the picture and hiss in the
    sound. Defaults: 2 s, 12 fps, 64x64 RGB uint8 frames, 16 kHz mono float32 audio.

Prompt grammar (case-insensitive, words anywhere in the text; the first match of each attribute
wins, later conflicting words are ignored)::

    size        small | tiny -> small, medium, large | big -> large
    colour      red green blue yellow purple (violet) orange white
    shape       ball | sphere -> ball, cube | box | block -> cube
    count       once | twice | thrice, or <one..five | 1..5> time(s)   (1..4 are sampled by the hash)
    pitch       low | deep -> low, mid | middle -> mid, high          (also "low-pitched" ...)
    timbre      click | tick -> click, beep | tone -> beep, buzz | buzzer -> buzz
    background  rain | rainy -> rain, wind | windy -> wind, hum -> hum, silence | silent | quiet -> silence

``parse_prompt(text)`` returns only the attributes the text names. ``scene_spec(text)`` returns a
full specification: named attributes as asked, every other attribute drawn deterministically from
BLAKE2b of the normalised text (lower case, single spaces) salted with the attribute name.

Latent layout (joint vector x = [video (12) | audio (10)], D = 22)::

    video  0-2  colour logits        rgb = 255 * sigmoid(v)              (palette means = logit(rgb/255))
           3    size                 radius_px = clip(8 + 3 v, 4, 13)     (small -1 / medium 0 / large +1)
           4    shape                superellipse exponent p = 2 exp(0.354 max(v + 1, 0)^2) (2 at -1, 2.85 at 0, 8.2 at +1);
                                     the truth says "cube" iff it fills > FILL_THRESHOLD (0.87) of its bounding box (iff v > 0)
           5    bounce count         count = clip(round(v + 2.5), 1, 5)
           6    picture noise        level = sigmoid(2.5 v); pixel noise std = 2 + 40 level (uint8 units)
           7    bounce phase         phi = 0.15 tanh(v) (fraction of the bounce period)   [nuisance]
           8    start x              cx0 = W/2 + W/4 tanh(v)                                [nuisance]
           9    horizontal speed     vx = 12 tanh(v) px/s (reflects off the walls)          [nuisance]
           10   background level     grey = 45 + 12 tanh(v)                                 [nuisance]
           11   background tint      +-6 tanh(v) on red/blue                                [nuisance]
    audio  12   pitch                f0 = 440 * 2^clip(v, -2.5, 2.5) Hz  (low -1 / mid 0 / high +1)
           13-14 timbre              softmax(-|v - p_j|^2 / 0.1) over beep (1,0), buzz (-.5,.866), click (-.5,-.866)
           15   audio offset         offset_s = clip(0.4 v, -0.6, 0.6)
           16   sound noise          level = sigmoid(2.5 v); hiss std = 0.003 + 0.08 level
           17-18 background          softmax(-|v - p_j|^2 / 0.1) over rain (1,1), wind (1,-1), hum (-1,1), silence (-1,-1)
           19   loudness             amplitude = 0.45 (1 + 0.2 tanh(v))                     [nuisance]
           20   decay                tau = 0.05 * 2^(0.3 tanh(v)) s                          [nuisance]
           21   texture phase        phase of the wind modulation and hum                    [nuisance]

Scene modes (the components of the prompt-conditional Gaussian mixture; prior weights)::

    faithful        0.30   the scene the prompt asks for, in sync, clean
    av_offset       0.16   audio shifted by -0.25 s or +0.25 s (two components, 0.08 each): 3 frames
                           at 12 fps, and, for every count 1..4 (period >= 0.5 s), at least 0.25 s
                           from any bounce, so even a periodic cross-correlation cannot alias it to 0
    wrong_colour    0.10   another palette colour (chosen by hash)
    wrong_pitch     0.07   another pitch (hash)
    wrong_timbre    0.07   another timbre (hash)
    missing_bounce  0.07   count - 1 (absent when count == 1; weights renormalised)
    extra_bounce    0.07   count + 1 (up to 5)
    noisy_picture   0.08   picture noise level ~0.98 (pixel noise std ~41)
    noisy_sound     0.08   hiss level ~0.98 (hiss std ~0.08, about -22 dBFS)

Every component is a diagonal Gaussian: attribute dimensions sit at the mode's value with a small
std (below), nuisance dimensions are N(0, 1) in every mode (sample diversity that no verifier should
care about).

Rendering (numpy, vectorised over frames)
    Picture: dark grey background (level and tint are nuisance dims) with a lighter floor band (the
    bottom 8/64 of the frame); the object is an anti-aliased superellipse of the decoded colour. Its
    bottom follows parabolic arcs between bounces at t_k = (k + 0.5 + phi) * P, P = duration / count
    (exactly ``count`` impacts inside the clip) of height min(room, 20 px/s * P) (at size 64), so
    |vertical speed| is largest at each impact, 80 px/s whatever the count; it squashes (area preserving, up to 30 %) within 0.6 frame of an impact; it drifts horizontally and
    reflects off the walls. Gaussian pixel noise of the decoded std is added, then clipped to uint8.
    Sound: at t_k + offset (events falling outside the clip are dropped; ``audio_event_times_s`` lists
    the rendered ones) a 0.3 s tone burst with a 2 ms attack: beep = sine, decay tau; buzz = odd
    harmonics 1..9 with amplitudes 1/n (square-ish; partials below 0.45 sr), peak-normalised, decay
    tau; click = 0.6 (sine + white noise), decay 0.16 tau (~8 ms); timbres blend by their weights.
    Background textures, blended by their weights: rain = first-differenced (high-passed) white noise
    std 0.01; wind = one-pole 300 Hz low-passed noise std 0.015 with a 0.7 Hz swell; hum = 0.012
    (sin 100 Hz + 0.5 sin 200 Hz); silence = nothing. Plus white hiss of the decoded std; clipped to
    [-1, 1].
    Picture noise, click noise and noise textures use a numpy Generator seeded from BLAKE2b of the
    latent row's float32 bytes, so the same latent always renders the same clip, whatever batch it is in.

Modules, by job (the layout and the modes above are the contract they share): ``vocab``
(vocabulary, latent layout, mode weights), ``grammar`` (prompt -> scene spec), ``mixture`` (scene
modes as a Gaussian mixture), ``scene`` (latent -> scene parameters, ground truth), ``render``
(parameters -> frames and audio). Import the names from here.
"""

from __future__ import annotations

from avits_core.generators.synth_world.grammar import (  # noqa: F401
    describe,
    hash_choice,
    normalise_text,
    parse_prompt,
    scene_spec,
)
from avits_core.generators.synth_world.mixture import (  # noqa: F401
    Mixture,
    build_mixture,
    component_log_likelihood,
    spec_to_gaussian,
)
from avits_core.generators.synth_world.render import (  # noqa: F401
    ARC_EXPONENT,
    DROP_PER_S,
    SQUASH,
    latent_rng,
    render_audio,
    render_video,
)
from avits_core.generators.synth_world.scene import (  # noqa: F401
    decode_params,
    nearest_colour,
    scene_truth,
)
from avits_core.generators.synth_world.vocab import (  # noqa: F401
    ATTR_STD,
    ATTRIBUTES,
    AUDIO_DIM,
    BACKGROUNDS,
    BG_PROTOS,
    COUNT_WORDS,
    COUNTS,
    FILL_THRESHOLD,
    I_AMP,
    I_BG,
    I_BGLEVEL,
    I_COUNT,
    I_DECAY,
    I_OFFSET,
    I_PHASE,
    I_PITCH,
    I_PNOISE,
    I_RGB,
    I_SHAPE,
    I_SIZE,
    I_SNOISE,
    I_TIMBRE,
    I_TINT,
    I_TPHASE,
    I_VX,
    I_X0,
    LATENT_DIM,
    MAX_COUNT,
    MODE_WEIGHTS,
    MODES,
    NOISE_CLEAN,
    NOISE_NOISY,
    NUMBER_WORDS,
    OFFSET_SCALE,
    OFFSET_SHIFT_S,
    ONCE_WORDS,
    PALETTE,
    PITCHES,
    PROTO_TEMPERATURE,
    SHAPE_GAIN,
    SHAPES,
    SIZES,
    SYNONYMS,
    TIMBRE_PROTOS,
    TIMBRES,
    VIDEO_DIM,
    logit,
    sigmoid,
    superellipse_fill,
)
