"""Mutation operators: how a branch candidate's start latent is made from its parent's latent.

Shared by every search method that branches from stored latents (EvoSearch; later zero-order,
search over paths, ...). The engine applies them (:func:`apply_mutation`); methods only name a rule
in their plans.

* Step 0 (initial noise): ``z' = sqrt(1 - beta^2) z + beta eps`` (variance preserving: a standard
  normal z stays standard normal; beta = 0 is the identity, beta = 1 a fresh noise).
* Intermediate step k > 0, rule ``"vp"``: rectified flow writes ``x_k = (1 - s) x0 + s n`` with
  ``s = timesteps[k]``. ``predict_x0`` (one evaluation, its NFE counted) gives ``x0_hat``; the
  implied noise ``n_hat = (x_k - (1 - s) x0_hat) / s`` is mutated as above and mixed again:
  ``x_k' = (1 - s) x0_hat + s (sqrt(1 - beta^2) n_hat + beta eps)``.
* Rule ``"additive"`` (the EvoSearch reference rule): ``x_k' = x_k + (t/T) eps`` with
  ``t/T = timesteps[k]``; beta does not enter; no NFE.
* ``modality``: ``"joint"`` mutates video and audio latents together, ``"video"`` / ``"audio"`` that
  modality only (the other is copied from the parent).
* eps is ``generator.init_noise([seed])``: a standard normal of the generator's own latent shapes.
"""

from __future__ import annotations

import math

import numpy as np
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:  # annotations only
    import torch

from avits_core.generators.base import JointGenerator, Latents
from avits_core.prompts import Prompt

MODALITIES: tuple[str, ...] = ("joint", "video", "audio")
LATENT_MUTATIONS: tuple[str, ...] = ("vp", "additive")


def _mix(a: torch.Tensor, b: torch.Tensor, beta: float) -> torch.Tensor:
    return math.sqrt(max(0.0, 1.0 - beta * beta)) * a + beta * b.to(a.dtype)


def _check_pair(lat: Latents, eps: Latents) -> None:
    if lat.video.shape != eps.video.shape or lat.audio.shape != eps.audio.shape:
        raise ValueError(
            f"mutation noise shapes {tuple(eps.video.shape)}/{tuple(eps.audio.shape)} differ from the latents' "
            f"{tuple(lat.video.shape)}/{tuple(lat.audio.shape)}"
        )


def _check_beta(beta: float) -> None:
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"mutation rate beta must be in [0, 1], got {beta}")


def _check_modality(modality: str) -> None:
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")


def mutate_noise(z: Latents, eps: Latents, beta: float, modality: str = "joint") -> Latents:
    """Variance-preserving mutation ``sqrt(1 - beta^2) z + beta eps`` of the selected modality(ies).

    ``z`` and ``eps`` have equal shapes; the result keeps ``z``'s step, seeds and nfe (no NFE spent).
    """
    _check_pair(z, eps)
    _check_beta(beta)
    _check_modality(modality)
    video = _mix(z.video, eps.video, beta) if modality in ("joint", "video") else z.video.clone()
    audio = _mix(z.audio, eps.audio, beta) if modality in ("joint", "audio") else z.audio.clone()
    return Latents(video=video, audio=audio, step=z.step, seeds=list(z.seeds), nfe=z.nfe.copy())


def split_latent(generator: JointGenerator, lat: Latents, prompt: Prompt) -> tuple[Latents, Latents]:
    """(x0_hat, implied noise) of latents at step k > 0: ``x_k = (1 - s) x0_hat + s n_hat``.

    x0_hat comes from ``generator.predict_x0`` (its NFE is added to the returned x0_hat's nfe).
    Both results are reported at ``lat.step``.
    """
    k = lat.step
    s = float(generator.timesteps[k])
    if not s > 0.0:
        raise ValueError(f"cannot split a clean latent (step {k}, noise level {s})")
    x0 = generator.predict_x0(lat, prompt, k)
    v0 = x0.video.to(lat.video.dtype)
    a0 = x0.audio.to(lat.audio.dtype)
    nv = (lat.video - (1.0 - s) * v0) / s
    na = (lat.audio - (1.0 - s) * a0) / s
    x0_lat = Latents(video=v0, audio=a0, step=k, seeds=list(lat.seeds), nfe=np.asarray(x0.nfe).copy())
    n_lat = Latents(video=nv, audio=na, step=k, seeds=list(lat.seeds), nfe=lat.nfe.copy())
    return x0_lat, n_lat


def mutate_latent_vp(
    generator: JointGenerator, lat: Latents, prompt: Prompt, eps: Latents, beta: float, modality: str = "joint"
) -> Latents:
    """Variance-preserving re-noising of intermediate latents (see the module docstring).

    Split ``lat`` (at step k > 0) into x0_hat and its implied noise, mutate the noise part with
    :func:`mutate_noise`, mix again at the step's noise level. A modality that is not mutated is
    copied from ``lat`` unchanged. The result's nfe includes the predict_x0 call.
    """
    _check_pair(lat, eps)
    _check_beta(beta)
    _check_modality(modality)
    s = float(generator.timesteps[lat.step])
    x0, noise = split_latent(generator, lat, prompt)
    mutated = mutate_noise(noise, eps, beta, modality)
    video = (1.0 - s) * x0.video + s * mutated.video if modality in ("joint", "video") else lat.video.clone()
    audio = (1.0 - s) * x0.audio + s * mutated.audio if modality in ("joint", "audio") else lat.audio.clone()
    return Latents(video=video, audio=audio, step=lat.step, seeds=list(lat.seeds), nfe=x0.nfe.copy())


def mutate_latent_additive(
    generator: JointGenerator, lat: Latents, eps: Latents, modality: str = "joint"
) -> Latents:
    """The reference rule: ``x_k + (t/T) eps`` with ``t/T = timesteps[k]``; no NFE; beta not used."""
    _check_pair(lat, eps)
    _check_modality(modality)
    s = float(generator.timesteps[lat.step])
    video = lat.video + s * eps.video.to(lat.video.dtype) if modality in ("joint", "video") else lat.video.clone()
    audio = lat.audio + s * eps.audio.to(lat.audio.dtype) if modality in ("joint", "audio") else lat.audio.clone()
    return Latents(video=video, audio=audio, step=lat.step, seeds=list(lat.seeds), nfe=lat.nfe.copy())


def apply_mutation(generator: JointGenerator, lat: Latents, prompt: Prompt, eps: Latents,
                   mutation: Mapping[str, Any]) -> Latents:
    """Mutate parents' latents by ``mutation`` (``rule``, ``beta``, ``modality``): the noise rule at
    step 0, else the named latent rule."""
    rule = mutation.get("rule", "vp")
    beta = float(mutation.get("beta", 0.0))
    modality = mutation.get("modality", "joint")
    if lat.step == 0:
        return mutate_noise(lat, eps, beta, modality)
    if rule == "vp":
        return mutate_latent_vp(generator, lat, prompt, eps, beta, modality)
    if rule == "additive":
        return mutate_latent_additive(generator, lat, eps, modality)
    raise ValueError(f"unknown mutation rule {rule!r}; known: {list(LATENT_MUTATIONS)}")
