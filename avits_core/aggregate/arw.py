"""Adaptive Reward Weighting (ARW): weight each verifier by the inverse of its learned noise scale.

The rule (exact; reproduced by the shared test vectors in ``shared/testvectors/arw``):

* State: one log-variance ``s_k`` per verifier, starting at ``init_log_var``, and the history
  ``H_k`` of every raw score of the stream so far (all prompts, all generations).
* ``observe(scores, **event)``: append the event's scores to ``H_k``; while the history holds a
  single value, skip the fit; otherwise take ``max_iter`` steps of the optimizer (PyTorch defaults
  besides ``lr``; SGD uses momentum 0.9; optimizer state persists across events) on::

      L(s) = sum_k mean_{h in H_k} [ 1/2 exp(-s_k) ((h - mean H_k)^2 + eps_sq) + 1/2 s_k ]

* ``combine(scores)``: ``sum_k w_k * r_k / (exp(s_k / 2) + eps_sigma)``.

Two implementations, selected by ``impl``:

* ``"fast"`` (default). L depends on the history only through its count n_k, mean and mean squared
  deviation var_k, since ``mean_h (h - mean)^2 = var_k``. So
  ``L = sum_k 1/2 exp(-s_k)(var_k + eps_sq) + 1/2 s_k`` and
  ``dL/ds_k = 1/2 - 1/2 exp(-s_k)(var_k + eps_sq)``. Running moments are merged per event in
  float64 (Chan/Welford), and each optimizer update is written out in closed form with numpy,
  in the working dtype (float32 by default), step for step as ``torch.optim`` does it
  (Adam/AdamW: betas 0.9/0.999, eps 1e-8, AdamW weight_decay 0.01 decoupled; RMSprop: alpha
  0.99, eps 1e-8; SGD: momentum 0.9, first step seeds the buffer with the gradient; Adagrad:
  eps 1e-10, initial accumulator 0). Cost per event: O(candidates + max_iter * K), independent
  of the history length.
* ``"torch"``: the direct rule, recomputing L over the full stored history with real
  ``torch.optim`` optimizers and autograd each step. Cost per event grows with the history; it is
  the reference the fast one is tested against.

Agreement: in float64 the two agree to ~1e-14. In float32 they differ only by rounding (the fast
gradient is formed in float64 and rounded once; torch's SIMD sqrt is not always correctly rounded):
~1e-6 relative on sigma for Adam/AdamW/SGD/Adagrad, ~1e-5 for RMSprop, whose fits end on a limit
cycle of amplitude ~lr around the optimum that amplifies last-bit differences.

Decisions:

* Scores enter the history in the working dtype (a float32 stream is rounded to float32 before it is
  accumulated, exactly as the reference stores it); moments are then kept in float64.
* Before any fit (no event yet, or a history of one value) the log-variances are ``init_log_var``.
* A fit that leaves a non-finite log-variance (a diverging optimizer / learning rate) raises
  :class:`~avits_core.errors.ScoreError` naming the verifier, instead of ranking with NaN.
* Trace rows (one per verifier per observed event, for the ``arw_trace`` table):
  ``event_seq`` (from the event kwargs, else the 0-based count of observed events), ``prompt_id``
  and ``generation`` (from the event kwargs, else None), ``verifier``, ``log_var``, ``sigma``
  (``exp(log_var / 2)``), ``history_n`` and ``loss_before`` / ``loss_after`` (the total L before
  the first and after the last step of this fit; None when no fit happened).

The two engines are in :mod:`avits_core.aggregate.arw_fit`; this module is the aggregator.
"""

from __future__ import annotations

import logging
import math
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from avits_core.aggregate.arw_fit import OPTIMIZERS, FastEngine, TorchEngine  # OPTIMIZERS re-exported
from avits_core.aggregate.base import Aggregator
from avits_core.aggregate.simple import take_params
from avits_core.errors import ConfigError, ScoreError

log = logging.getLogger(__name__)

IMPLS: tuple[str, ...] = ("fast", "torch")
DTYPES: tuple[str, ...] = ("float32", "float64")


class AdaptiveRewardWeighting(Aggregator):
    """``arw``: aggregate = sum_k w_k * r_k / (sigma_k + eps_sigma), sigma_k = exp(s_k / 2), where
    the log-variances s_k are fitted online (see the module docstring) to every raw score observed
    so far. Input: raw oriented scores of one prompt's candidates. Output: float64 per candidate,
    unbounded (a score in units of each verifier's learned noise scale).

    Parameters: ``optimizer`` (adam | adamw | rmsprop | sgd | adagrad, default adam), ``lr`` (0.05),
    ``max_iter`` (50), ``init_log_var`` (0.0), ``eps_sq`` (1e-6), ``eps_sigma`` (1e-6),
    ``dtype`` (float32 | float64, default float32), ``impl`` (fast | torch, default fast).
    Weights default to 1/K each.
    """

    name = "arw"
    stateful = True
    defaults: ClassVar[dict[str, Any]] = {
        "optimizer": "adam",
        "lr": 0.05,
        "max_iter": 50,
        "init_log_var": 0.0,
        "eps_sq": 1e-6,
        "eps_sigma": 1e-6,
        "dtype": "float32",
        "impl": "fast",
    }

    def __init__(self, verifiers: Sequence[str], weights: Mapping[str, float] | None = None, **params: Any):
        super().__init__(verifiers, weights)
        p = take_params(self.name, params, self.defaults)
        if p["optimizer"] not in OPTIMIZERS:
            raise ConfigError(f"arw: unknown optimizer {p['optimizer']!r}; known: {', '.join(OPTIMIZERS)}")
        if p["impl"] not in IMPLS:
            raise ConfigError(f"arw: unknown impl {p['impl']!r}; known: {', '.join(IMPLS)}")
        if p["dtype"] not in DTYPES:
            raise ConfigError(f"arw: unknown dtype {p['dtype']!r}; known: {', '.join(DTYPES)}")
        for key in ("lr", "init_log_var", "eps_sq", "eps_sigma"):
            try:
                p[key] = float(p[key])
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"arw: parameter {key} must be a number, got {p[key]!r}") from exc
            if not math.isfinite(p[key]):
                raise ConfigError(f"arw: parameter {key} must be finite, got {p[key]}")
        if p["lr"] <= 0:
            raise ConfigError(f"arw: parameter lr must be > 0, got {p['lr']}")
        for key in ("eps_sq", "eps_sigma"):
            if p[key] < 0:
                raise ConfigError(f"arw: parameter {key} must be >= 0, got {p[key]}")
        mi = p["max_iter"]
        if isinstance(mi, bool) or not isinstance(mi, (int, np.integer)) or mi < 1:
            raise ConfigError(f"arw: parameter max_iter must be an integer >= 1, got {mi!r}")
        p["max_iter"] = int(mi)
        self.params = p
        self._make_engine()

    def _make_engine(self) -> None:
        p = self.params
        cls = FastEngine if p["impl"] == "fast" else TorchEngine
        self.engine: FastEngine | TorchEngine = cls(
            len(self.verifiers), p["optimizer"], p["lr"], p["init_log_var"], p["eps_sq"], np.dtype(p["dtype"])
        )
        self.n_events = 0

    def reset(self) -> None:
        super().reset()
        self._make_engine()

    @property
    def log_var(self) -> dict[str, float]:
        """Current log-variance per verifier."""
        return dict(zip(self.verifiers, map(float, self.engine.log_var())))

    @property
    def sigma(self) -> dict[str, float]:
        """Current noise scale exp(log_var / 2) per verifier."""
        return {v: math.exp(s / 2.0) for v, s in self.log_var.items()}

    @property
    def history_n(self) -> int:
        """Number of scores per verifier in the history."""
        return self.engine.history_n

    def observe(self, scores: Mapping[str, Any], **event: Any) -> None:
        s = self.check(scores)
        eng = self.engine
        eng.append([s[v] for v in self.verifiers])
        loss_before = loss_after = None
        if eng.history_n > 1:
            loss_before = eng.loss()
            eng.fit(self.params["max_iter"])
            loss_after = eng.loss()
        lv = eng.log_var()
        bad = np.flatnonzero(~np.isfinite(lv))
        if bad.size:
            v = self.verifiers[int(bad[0])]
            raise ScoreError(
                f"arw: fit diverged at event {event.get('event_seq', self.n_events)}: log_var of verifier {v!r} "
                f"is {lv[bad[0]]} (optimizer {self.params['optimizer']}, lr {self.params['lr']}); "
                "lower lr or change optimizer"
            )
        seq = event.get("event_seq", self.n_events)
        for v, s_k in zip(self.verifiers, lv):
            self.trace.append(
                {
                    "event_seq": seq,
                    "prompt_id": event.get("prompt_id"),
                    "generation": event.get("generation"),
                    "verifier": v,
                    "log_var": float(s_k),
                    "sigma": math.exp(float(s_k) / 2.0),
                    "history_n": eng.history_n,
                    "loss_before": loss_before,
                    "loss_after": loss_after,
                }
            )
        self.n_events += 1
        log.debug("arw event %s: n=%d log_var=%s", seq, eng.history_n, lv)

    def combine(self, scores: Mapping[str, Any]) -> np.ndarray:
        s = self.check(scores)
        lv = self.engine.log_var()
        eps_sigma = self.params["eps_sigma"]
        out = np.zeros_like(s[self.verifiers[0]])
        for v, s_k in zip(self.verifiers, lv):
            out += self.weights[v] * s[v] / (math.exp(s_k / 2.0) + eps_sigma)
        return out
