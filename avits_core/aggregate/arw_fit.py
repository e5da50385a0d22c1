"""The two ways ARW fits its log-variances (the rule and the agreement between them are in
:mod:`avits_core.aggregate.arw`): :class:`FastEngine` (running moments and :class:`ClosedFormOptimizer`,
torch.optim's updates written out with numpy, O(K * max_iter) per fit) and :class:`TorchEngine`
(the full history with autograd and a real ``torch.optim`` optimizer: the reference)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from avits_core.aggregate.simple import RunningMoments
from avits_core.errors import ConfigError

OPTIMIZERS: tuple[str, ...] = ("adam", "adamw", "rmsprop", "sgd", "adagrad")

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


class FastEngine:
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


class TorchEngine:
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
