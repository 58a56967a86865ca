"""Hand-written BatchNorm and Dropout, drop-in compatible with torch's layers.

The study requires these layers to be written by hand. They use the same constructor
arguments, parameter and buffer names as ``torch.nn.BatchNorm1d/2d`` and
``torch.nn.Dropout/Dropout2d``, so state dicts move freely between ours and torch's.

Speed matters (the layers run on every step of 29 training runs; see docs/performance.md
and ``cifarlab bench --only layers``), so:

* BatchNorm's training forward is an exact two-pass computation (mean, then the mean of
  squared deviations, as torch's kernel does) whose squared deviations live in the buffer
  that becomes the output, so it allocates no full-size temporary; the affine map is one
  fused ``addcmul``. Its backward is derived by hand (an ``autograd.Function``), saves only
  ``x`` and two per-channel vectors, and computes ``dy * x`` into the buffer that becomes
  ``dx``: one full-size allocation, where autograd would keep several.
* Dropout draws its mask from random 16-bit integers (int64 ``random_`` draws split into
  lanes) compared with a threshold into a float mask: 2-3x cheaper forward + backward
  than torch's ``bernoulli_``-based Dropout on this CPU. p is rounded to a multiple of
  2**-16 (error <= 2**-17).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn

__all__ = ["BatchNorm1d", "BatchNorm2d", "Dropout", "Dropout2d", "reestimated_copy"]


def _reduce_dims(x: Tensor) -> tuple[int, ...]:
    # (N, C) -> statistics over N; (N, C, L) or (N, C, H, W) -> over N and the spatial axes.
    return (0,) + tuple(range(2, x.dim()))


def _channel_shape(x: Tensor) -> tuple[int, ...]:
    # Per-channel vectors (C,) broadcast against x as (1, C, 1, ...).
    return (1, x.shape[1]) + (1,) * (x.dim() - 2)


class _BatchNormTrain(torch.autograd.Function):
    """y = (x - mean) / sqrt(var + eps) * weight + bias with batch statistics.

    Backward (N = elements per channel, xhat = (x - mean) * invstd):
        dbias   = sum(dy)
        dweight = sum(dy * xhat)
        dx      = weight * invstd / N * (N * dy - sum(dy) - xhat * sum(dy * xhat))
    written as dx = dy * a + x * b + c with per-channel a, b, c, i.e. two fused
    full-size operations.

    Precision: the forward is exact (two-pass). The backward uses
    sum(dy * (x - mean)) = sum(dy * x) - mean * sum(dy) and x * b + c, whose float32
    rounding grows like 1e-7 * |mean| / std: negligible for activations (|mean| ~ std), but
    e.g. 3e-4 relative error in dweight (torch: 2e-5) for a channel with mean 1000, std 1.
    Centring x first would cost one more full-size buffer per layer (~3% of a CNN step).
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float):
        dims = _reduce_dims(x)
        shape = _channel_shape(x)
        xf = x if x.dtype in (torch.float32, torch.float64) else x.float()
        n = x.numel() // x.shape[1]
        # Two passes, exact like torch's kernel: the mean, then the mean of squared deviations.
        # The squares go into the buffer that becomes the output, so no full-size temporary
        # is allocated (a fresh 52 MB buffer costs ~2.4 ns/element in page faults here).
        # (sum then divide: measured 2x faster than .mean() over (0, 2, 3) here)
        mean = xf.sum(dims).div_(n)  # (C,)
        out = torch.sub(xf, mean.view(shape))  # (N, C, ...): x - mean
        var = out.square_().sum(dims).div_(n)  # (C,), biased, as used for normalising
        invstd = var.add(eps).rsqrt_()
        scale = invstd if weight is None else invstd * weight
        shift = -mean * scale if bias is None else torch.addcmul(bias, mean, scale, value=-1)
        # y = x * scale + shift in one fused pass over the output buffer (as torch's CPU kernel)
        torch.addcmul(shift.view(shape), xf, scale.view(shape), out=out)
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.dims = dims
        ctx.has_bias = bias is not None
        return out.to(x.dtype), mean, var

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy: Tensor, _dmean: Tensor | None, _dvar: Tensor | None):
        x, weight, mean, invstd = ctx.saved_tensors
        dims = ctx.dims
        shape = _channel_shape(x)
        xf = x if x.dtype in (torch.float32, torch.float64) else x.float()
        dyf = dy if dy.dtype == xf.dtype else dy.to(xf.dtype)
        n = x.numel() // x.shape[1]
        sum_dy = dyf.sum(dims)  # (C,)
        # dy * x goes into the buffer that becomes dx: one full-size allocation in all.
        dx = torch.mul(dyf, xf)  # (N, C, ...)
        # sum(dy * (x - mean)) = sum(dy * x) - mean * sum(dy): no (x - mean) temporary.
        sum_dy_xmu = torch.addcmul(dx.sum(dims), mean, sum_dy, value=-1)  # (C,)
        sum_dy_xhat = sum_dy_xmu * invstd  # (C,), = dweight
        dweight = sum_dy_xhat if weight is not None else None
        dbias = sum_dy if ctx.has_bias else None
        if not ctx.needs_input_grad[0]:
            return None, dweight, dbias, None
        # Per-channel coefficients in few small ops (each costs ~5 us on (C,) vectors).
        a = invstd if weight is None else invstd * weight
        b = (a * sum_dy_xhat).mul_(invstd).mul_(-1.0 / n)  # -a * invstd^2 * sum_dy_xmu / n
        c = torch.addcmul((a * sum_dy).mul_(-1.0 / n), mean, b, value=-1)  # -a sum_dy/n - mean b
        torch.addcmul(c.view(shape), dyf, a.view(shape), out=dx)
        dx.addcmul_(xf, b.view(shape))
        return dx.to(x.dtype), dweight, dbias, None


def _batch_norm_traceable(x: Tensor, weight: Tensor | None, bias: Tensor | None,
                          eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """Training-mode BatchNorm from plain tensor operations, for ``torch.compile``.

    The same function as ``_BatchNormTrain`` (biased variance for normalising, returned
    with the mean), but written so that the compiler traces it and derives and fuses the
    backward itself: under ``torch.compile`` the hand-written autograd.Function, whose
    speed tricks are for eager CPU execution, would only hide the arithmetic from the fuser.
    Statistics are in float32 even when autocast hands it bf16 activations.
    """
    dims = _reduce_dims(x)
    shape = _channel_shape(x)
    xf = x.float()
    var, mean = torch.var_mean(xf, dims, correction=0)  # (C,), (C,)
    scale = torch.rsqrt(var + eps)
    if weight is not None:
        scale = scale * weight
    shift = -mean * scale if bias is None else bias - mean * scale
    y = xf * scale.view(shape) + shift.view(shape)
    return y.to(x.dtype), mean, var


class _BatchNorm(nn.Module):
    """Shared code of BatchNorm1d and BatchNorm2d; subclasses check the input rank."""

    _valid_dims: tuple[int, ...] = ()

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if num_features <= 0:
            raise ValueError(f"num_features must be a positive integer, got {num_features}")
        if momentum is not None and not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1] or None, got {momentum}")
        factory = {"device": device, "dtype": dtype}
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features, **factory))
            self.bias = nn.Parameter(torch.zeros(num_features, **factory))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory))
            self.register_buffer("running_var", torch.ones(num_features, **factory))
            self.register_buffer(
                "num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device)
            )
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def _check_input(self, x: Tensor) -> None:
        if x.dim() not in self._valid_dims:
            raise ValueError(
                f"{type(self).__name__} expects a {' or '.join(map(str, self._valid_dims))}D "
                f"input, got shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"{type(self).__name__}({self.num_features}) got {x.shape[1]} channels "
                f"(input shape {tuple(x.shape)})"
            )

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        use_batch_stats = self.training or not self.track_running_stats
        if not use_batch_stats:
            # Eval: a fixed per-channel affine map from the running statistics.
            shape = _channel_shape(x)
            scale = torch.rsqrt(self.running_var + self.eps)
            if self.weight is not None:
                scale = scale * self.weight
            shift = -self.running_mean * scale
            if self.bias is not None:
                shift = shift + self.bias
            return torch.addcmul(shift.view(shape), x, scale.view(shape))

        n = x.numel() // x.shape[1]
        if n <= 1:
            raise ValueError(
                f"{type(self).__name__} needs more than one value per channel in training, "
                f"got input shape {tuple(x.shape)}"
            )
        if torch.compiler.is_compiling():
            y, mean, var = _batch_norm_traceable(x, self.weight, self.bias, self.eps)
        else:
            y, mean, var = _BatchNormTrain.apply(x, self.weight, self.bias, self.eps)
        if self.training and self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach(), n)
        return y

    @torch.no_grad()
    def _update_running_stats(self, mean: Tensor, var: Tensor, n: int) -> None:
        # Every buffer is updated in place and nothing waits for the host, so a CUDA graph
        # that captured this step keeps updating the same memory on every replay (rebinding
        # a buffer would leave the graph writing a stale address: pytorch#70444).
        self.num_batches_tracked.add_(1)
        if self.momentum is None:  # cumulative moving average, as torch does: 1 / batches
            factor: Tensor | float = self.num_batches_tracked.reciprocal().to(
                self.running_mean.dtype)
        else:
            factor = self.momentum
        # The running variance is the unbiased estimate (n / (n - 1)), as in torch.
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        self.running_var.lerp_((var * (n / (n - 1))).to(self.running_var.dtype), factor)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, track_running_stats={self.track_running_stats}"
        )


class BatchNorm1d(_BatchNorm):
    """Batch normalisation over (N, C) or (N, C, L) inputs, per feature C."""

    _valid_dims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalisation over (N, C, H, W) inputs, per channel over (N, H, W)."""

    _valid_dims = (4,)


# Keep-masks come from uniform random integers compared against a threshold: int64 draws
# from ``random_`` (~1.2 ns per 16 bits here) split into 16-bit lanes cost far less than
# ``bernoulli_`` (12-27 ns per element on this CPU). A lane keeps its unit when
# lane < threshold, so the keep probability is a multiple of 2**-bits: p is rounded to the
# nearest multiple of 2**-16 (absolute error <= 2**-17 ~ 7.6e-6, far below the sampling
# noise of any mask). Rates within 2**-8 of 0 or 1 use 32-bit lanes (error <= 2**-32).
_LANE_DTYPES = {16: torch.int16, 32: torch.int32}


def _lane_bits(p: float) -> int:
    return 16 if min(p, 1.0 - p) >= 2.0**-8 else 32


def _keep_threshold(p: float, bits: int) -> int:
    # Lanes are uniform over [-2**(bits-1), 2**(bits-1)), so
    # P(lane < t) = (t + 2**(bits-1)) / 2**bits. The clamp keeps t inside the lane's range
    # (a p below 2**-32 still drops with probability 2**-32).
    keep = round((1.0 - p) * 2**bits)
    return min(keep, 2**bits - 1) - 2 ** (bits - 1)


class _DropoutBase(nn.Module):
    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 <= p < 1.0:
            raise ValueError(
                f"dropout probability must be a number in [0, 1), got {p!r} "
                "(p = 0 keeps every unit; p = 1 would drop all of them)"
            )
        self.p = float(p)
        self.inplace = inplace  # accepted for torch compatibility; the output is always new
        # Scratch int64 buffer the random lanes are drawn into, reused between steps (it is
        # not saved for backward): a fresh one each step would pay its page faults again.
        self._bits: Tensor | None = None

    def _mask_shape(self, x: Tensor) -> tuple[int, ...]:
        raise NotImplementedError

    def _scaled_mask(self, shape: tuple[int, ...], like: Tensor) -> Tensor:
        """A ``like.dtype`` tensor of ``shape`` holding 1/(1-p) (kept) or 0 (dropped)."""
        bits = _lane_bits(self.p)
        numel = math.prod(shape)
        words = -(-numel * bits // 64)  # int64 draws needed, rounded up
        if self._bits is None or self._bits.device != like.device or self._bits.numel() < words:
            self._bits = torch.empty(words, dtype=torch.int64, device=like.device)
        draws = self._bits[:words]
        draws.random_(-(2**63), None)  # every bit uniform (the default leaves the sign bit 0)
        lanes = draws.view(_LANE_DTYPES[bits])[:numel].view(shape)
        # 0/1 from the comparison into a float buffer (measured faster than a bool mask
        # converted with .to(), torch.mul(bool, scale) or torch.where), scaled in place.
        # Same layout as the input when the shapes match (channels_last stays channels_last).
        mask = (torch.empty_like(like) if tuple(like.shape) == shape else
                torch.empty(shape, dtype=like.dtype, device=like.device))
        torch.lt(lanes, _keep_threshold(self.p, bits), out=mask)
        return mask.mul_(1.0 / (1.0 - self.p))

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if torch.compiler.is_compiling():
            # Under torch.compile: uniform draws the compiler generates inside the fused
            # kernel (its own random stream), compared with p: no mask buffer in memory.
            keep = torch.rand(self._mask_shape(x), device=x.device) >= self.p
            return x * keep.to(x.dtype) * (1.0 / (1.0 - self.p))
        # Autograd's multiply saves only the mask (it needs no gradient), so backward is a
        # single dy * mask, as in torch's own Dropout.
        return x * self._scaled_mask(self._mask_shape(x), x)

    def __getstate__(self) -> dict:
        # The scratch buffer is not state: keep it out of pickles and deep copies.
        state = super().__getstate__()  # a copy of __dict__
        state["_bits"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("_bits", None)  # modules pickled before the buffer existed

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"


class Dropout(_DropoutBase):
    """Zeroes each element with probability p in training and scales the rest by 1/(1-p)."""

    def _mask_shape(self, x: Tensor) -> tuple[int, ...]:
        return tuple(x.shape)


class Dropout2d(_DropoutBase):
    """Zeroes whole channels of an (N, C, H, W) input with probability p in training."""

    def _mask_shape(self, x: Tensor) -> tuple[int, ...]:
        if x.dim() != 4:
            raise ValueError(f"Dropout2d expects an (N, C, H, W) input, got shape {tuple(x.shape)}")
        # (N, C, 1, 1): one draw per sample and channel, broadcast over H and W.
        return (x.shape[0], x.shape[1], 1, 1)


def demonstrate_training_flag(seed: int = 0) -> dict[str, float]:
    """What ``.train()`` / ``.eval()`` change in BatchNorm1d and Dropout, measured now.

    BatchNorm1d(4) sees 21 batches of N(2, 3^2) data in training mode, then one batch of 8
    in eval mode; Dropout(0.5) sees 10,000 ones in each mode. The report quotes these numbers.
    """
    gen = torch.Generator().manual_seed(seed)
    bn, do = BatchNorm1d(4), Dropout(0.5)
    x = torch.randn(256, 4, generator=gen) * 3 + 2
    for _ in range(20):
        bn(torch.randn(256, 4, generator=gen) * 3 + 2)
    y_train = bn(x)
    bn.eval()
    y_eval = bn(x[:8])
    torch.manual_seed(seed)
    z = torch.ones(1, 10000)
    zt = do(z)
    do.eval()
    ze = do(z)
    return {"bn_train_mean": y_train.mean().item(), "bn_train_std": y_train.std().item(),
            "running_mean": bn.running_mean.mean().item(),
            "running_var": bn.running_var.mean().item(), "bn_eval_mean": y_eval.mean().item(),
            "dropout_zero_fraction": (zt == 0).float().mean().item(),
            "dropout_scale": zt.max().item(), "dropout_train_mean": zt.mean().item(),
            "dropout_eval_mean": ze.mean().item()}


@torch.no_grad()
def reestimated_copy(model: nn.Module, images: Tensor, batch: int = 1000) -> nn.Module | None:
    """A copy of ``model`` in eval mode whose BatchNorm layers' running statistics are
    re-estimated on ``images`` (a cumulative average over batches) with every Dropout off;
    None when the model has no BatchNorm layer. ``model`` itself is not changed.

    A diagnostic, not part of the study's method: the running statistics a model is
    evaluated with were gathered while Dropout was on. When Dropout comes before a MaxPool
    and a later BatchNorm (the study's CNN), the max picks survivors scaled by 1 / (1 - p),
    so those statistics describe larger activations than eval mode produces; the accuracy
    of this copy shows how much that costs.
    """
    if not any(isinstance(m, _BatchNorm) for m in model.modules()):
        return None
    twin = copy.deepcopy(model).train()
    for m in twin.modules():
        if isinstance(m, _BatchNorm):
            m.reset_running_stats()
            m.momentum = None
        elif isinstance(m, _DropoutBase):
            m.eval()
    for i in range(0, len(images) - 1, batch):  # every batch >= 2 images (BatchNorm1d)
        twin(images[i:i + batch])
    return twin.eval()
