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
"""

from __future__ import annotations

import logging
import math
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from avits_core.aggregate.base import Aggregator
from avits_core.aggregate.simple import RunningMoments, take_params
from avits_core.errors import ConfigError, ScoreError

log = logging.getLogger(__name__)

OPTIMIZERS: tuple[str, ...] = ("adam", "adamw", "rmsprop", "sgd", "adagrad")
IMPLS: tuple[str, ...] = ("fast", "torch")
DTYPES: tuple[str, ...] = ("float32", "float64")

# torch.optim defaults (besides lr) that the closed-form updates replicate
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
ADAMW_WEIGHT_DECAY = 1e-2
RMSPROP_ALPHA = 0.99
RMSPROP_EPS = 1e-8
SGD_MOMENTUM = 0.9
ADAGRAD_EPS = 1e-10


class ClosedFormOptimizer:
    """One of torch.optim's Adam, AdamW, RMSprop, SGD(momentum=0.9) or Adagrad (default
    hyper-parameters besides ``lr``), written out with numpy on a parameter vector in ``dtype``.

    ``step(param, grad)`` updates ``param`` in place, operation by operation in the order torch's
    single-tensor implementation performs them, so float32 rounding follows torch closely.
    """

    def __init__(self, kind: str, lr: float, size: int, dtype: np.dtype):
        if kind not in OPTIMIZERS:
            raise ConfigError(f"arw: unknown optimizer {kind!r}; known: {', '.join(OPTIMIZERS)}")
        self.kind = kind
        self.lr = float(lr)
        self.dtype = np.dtype(dtype)
        self.t = 0
        z = np.zeros(size, dtype=self.dtype)
        self.exp_avg = z.copy()  # adam/adamw first moment
        self.sq = z.copy()  # adam/adamw/rmsprop second moment, adagrad sum of squares
        self.buf: np.ndarray | None = None  # sgd momentum buffer

    def _c(self, x: float) -> np.generic:
        return self.dtype.type(x)

    def _fma(self, a: Any, b: np.ndarray, c: np.ndarray) -> np.ndarray:
        """a * b + c with one rounding (torch's vectorised CPU kernels fuse these); float32 is
        emulated through float64, where the product of two float32 values is exact."""
        if self.dtype == np.float32:
            return (np.float64(a) * b.astype(np.float64) + c).astype(np.float32)
        return a * b + c

    def _addcmul(self, acc: np.ndarray, vt1: np.ndarray, t2: np.ndarray) -> np.ndarray:
        """acc + (value * t1) * t2 with the last multiply-add fused, as torch's addcmul_."""
        if self.dtype == np.float32:
            return (vt1.astype(np.float64) * t2 + acc).astype(np.float32)
        return acc + vt1 * t2

    def step(self, p: np.ndarray, g: np.ndarray) -> None:
        """One update of ``p`` (in place) from gradient ``g``, as torch.optim's single-tensor code."""
        c, fma = self._c, self._fma
        self.t += 1
        k = self.kind
        if k in ("adam", "adamw"):
            beta1, beta2 = ADAM_BETAS
            if k == "adamw":
                p *= c(1 - self.lr * ADAMW_WEIGHT_DECAY)
            # exp_avg.lerp_(grad, 1 - beta1) = exp_avg + w * (grad - exp_avg), fused
            self.exp_avg[:] = fma(c(1 - beta1), g - self.exp_avg, self.exp_avg)
            # exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            self.sq *= c(beta2)
            self.sq[:] = self._addcmul(self.sq, c(1 - beta2) * g, g)
            bc1 = 1 - beta1**self.t
            bc2_sqrt = (1 - beta2**self.t) ** 0.5
            step_size = self.lr / bc1
            denom = np.sqrt(self.sq) / c(bc2_sqrt) + c(ADAM_EPS)
            # param.addcdiv_(exp_avg, denom, value=-step_size) = p + (v * exp_avg) / denom
            p += (c(-step_size) * self.exp_avg) / denom
        elif k == "rmsprop":
            self.sq *= c(RMSPROP_ALPHA)
            self.sq[:] = self._addcmul(self.sq, c(1 - RMSPROP_ALPHA) * g, g)
            avg = np.sqrt(self.sq) + c(RMSPROP_EPS)
            p += (c(-self.lr) * g) / avg
        elif k == "sgd":
            if self.buf is None:
                self.buf = g.copy()
            else:
                self.buf *= c(SGD_MOMENTUM)
                self.buf += g
            p[:] = fma(c(-self.lr), self.buf, p)
        else:  # adagrad, lr_decay 0: state_sum.addcmul_(grad, grad, value=1)
            self.sq[:] = self._addcmul(self.sq, g, g)
            std = np.sqrt(self.sq) + c(ADAGRAD_EPS)
            p += (c(-self.lr) * g) / std


class _FastEngine:
    """Running moments per verifier + closed-form optimizer; O(K * max_iter) per fit."""

    def __init__(self, k: int, optimizer: str, lr: float, init_log_var: float, eps_sq: float, dtype: np.dtype):
        self.dtype = np.dtype(dtype)
        self.s = np.full(k, init_log_var, dtype=self.dtype)
        self.opt = ClosedFormOptimizer(optimizer, lr, k, self.dtype)
        self.moments = [RunningMoments() for _ in range(k)]
        self.eps_sq = float(eps_sq)
        self._ve: np.ndarray | None = None

    def append(self, batches: Sequence[np.ndarray]) -> None:
        for m, x in zip(self.moments, batches):
            m.update(np.asarray(x, dtype=self.dtype))
        self._ve = None

    @property
    def history_n(self) -> int:
        return self.moments[0].n

    def _var_eps(self) -> np.ndarray:
        """var_k + eps_sq per verifier (float64), computed once per appended event."""
        if self._ve is None:
            self._ve = np.array([m.var_pop for m in self.moments], dtype=np.float64) + self.eps_sq
        return self._ve

    def loss(self) -> float:
        s = self.s.astype(np.float64)
        with np.errstate(over="ignore"):
            return float(np.sum(0.5 * np.exp(-s) * self._var_eps() + 0.5 * s))

    def fit(self, max_iter: int) -> None:
        ve = self._var_eps()
        dt = self.dtype
        with np.errstate(over="ignore", invalid="ignore"):
            if self.opt.kind in ("adam", "adamw"):
                self._fit_adam(max_iter, ve)
                return
            for _ in range(max_iter):
                g = (0.5 - 0.5 * np.exp(-self.s.astype(np.float64)) * ve).astype(dt)
                self.opt.step(self.s, g)

    def _fit_adam(self, max_iter: int, ve: np.ndarray) -> None:
        """``max_iter`` Adam/AdamW steps: the same floating-point operations, in the same order and
        dtypes, as the generic loop (gradient, then :meth:`ClosedFormOptimizer.step`), but on
        preallocated buffers with the constants converted once, so each step costs a dozen small
        ufunc calls. Bit-identical to the generic loop (checked by bench/bench_arw.py [4]); it makes
        a 50-step fit ~2x cheaper."""
        opt, s, dt = self.opt, self.s, self.dtype
        c = dt.type
        f32 = dt == np.float32
        beta1, beta2 = ADAM_BETAS
        a1 = np.float64(c(1 - beta1)) if f32 else c(1 - beta1)  # the fused lerp weight, widened once
        c_b2, c_1mb2, c_eps = c(beta2), c(1 - beta2), c(ADAM_EPS)
        decay = c(1 - opt.lr * ADAMW_WEIGHT_DECAY) if opt.kind == "adamw" else None
        m, v = opt.exp_avg, opt.sq
        k = s.shape[0]
        e64 = np.empty(k, dtype=np.float64)
        w64 = np.empty(k, dtype=np.float64)
        g = np.empty(k, dtype=dt)
        tmp = np.empty(k, dtype=dt)
        den = np.empty(k, dtype=dt)

        def fma_into(acc: np.ndarray, x: np.ndarray, w: Any) -> None:
            """acc = x * w + acc with one rounding (``x`` is scratch); float32 goes through float64."""
            if f32:
                w64[:] = x
                np.multiply(w64, w, out=w64)
                np.add(w64, acc, out=w64)
                acc[:] = w64
            else:
                x *= w
                x += acc
                acc[:] = x

        for _ in range(max_iter):
            # g = (0.5 - 0.5 * exp(-s) * ve) in float64, rounded once to dt
            e64[:] = s
            np.negative(e64, out=e64)
            np.exp(e64, out=e64)
            e64 *= 0.5
            e64 *= ve
            np.subtract(0.5, e64, out=e64)
            g[:] = e64
            opt.t += 1
            t = opt.t
            if decay is not None:
                s *= decay
            # exp_avg = lerp(exp_avg, g, 1 - beta1), fused multiply-add
            np.subtract(g, m, out=tmp)
            fma_into(m, tmp, a1)
            # exp_avg_sq = exp_avg_sq * beta2 + (1 - beta2) * g * g, last multiply-add fused
            v *= c_b2
            np.multiply(g, c_1mb2, out=tmp)
            fma_into(v, tmp, g)
            bc1 = 1 - beta1**t
            bc2_sqrt = (1 - beta2**t) ** 0.5
            step_size = opt.lr / bc1
            np.sqrt(v, out=den)
            den /= c(bc2_sqrt)
            den += c_eps
            np.multiply(m, c(-step_size), out=tmp)
            tmp /= den
            s += tmp

    def log_var(self) -> np.ndarray:
        return self.s.astype(np.float64)


class _TorchEngine:
    """The direct rule: full stored history, autograd and a real ``torch.optim`` optimizer."""

    def __init__(self, k: int, optimizer: str, lr: float, init_log_var: float, eps_sq: float, dtype: np.dtype):
        import torch  # reference only: the default fast path never imports torch

        self.torch = torch
        self.tdtype = torch.float32 if np.dtype(dtype) == np.float32 else torch.float64
        self.np_dtype = np.dtype(dtype)
        self.s = torch.full((k,), float(init_log_var), dtype=self.tdtype, requires_grad=True)
        factories = {
            "adam": lambda p: torch.optim.Adam(p, lr=lr),
            "adamw": lambda p: torch.optim.AdamW(p, lr=lr),
            "rmsprop": lambda p: torch.optim.RMSprop(p, lr=lr),
            "sgd": lambda p: torch.optim.SGD(p, lr=lr, momentum=SGD_MOMENTUM),
            "adagrad": lambda p: torch.optim.Adagrad(p, lr=lr),
        }
        if optimizer not in factories:
            raise ConfigError(f"arw: unknown optimizer {optimizer!r}; known: {', '.join(OPTIMIZERS)}")
        self.opt = factories[optimizer]([self.s])
        self.eps_sq = float(eps_sq)
        self._buf = [torch.empty(0, dtype=self.tdtype) for _ in range(k)]
        self.n = 0

    def append(self, batches: Sequence[np.ndarray]) -> None:
        torch = self.torch
        nb = int(np.asarray(batches[0]).size)
        need = self.n + nb
        for i, x in enumerate(batches):
            buf = self._buf[i]
            if need > buf.numel():  # grow by doubling: amortised O(1) per value
                new = torch.empty(max(need, 2 * buf.numel(), 64), dtype=self.tdtype)
                new[: self.n] = buf[: self.n]
                self._buf[i] = buf = new
            buf[self.n : need] = torch.from_numpy(np.asarray(x, dtype=self.np_dtype))
        self.n = need

    @property
    def history_n(self) -> int:
        return self.n

    def _loss(self) -> Any:
        total: Any = 0
        for i, buf in enumerate(self._buf):
            h = buf[: self.n]
            dev2 = (h - h.mean()) ** 2
            total = total + (0.5 * self.torch.exp(-self.s[i]) * (dev2 + self.eps_sq) + 0.5 * self.s[i]).mean()
        return total

    def loss(self) -> float:
        with self.torch.no_grad():
            return float(self._loss())

    def fit(self, max_iter: int) -> None:
        for _ in range(max_iter):
            self.opt.zero_grad()
            loss = self._loss()
            loss.backward()
            self.opt.step()

    def log_var(self) -> np.ndarray:
        return self.s.detach().numpy().astype(np.float64)


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
        cls = _FastEngine if p["impl"] == "fast" else _TorchEngine
        self.engine: _FastEngine | _TorchEngine = cls(
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
