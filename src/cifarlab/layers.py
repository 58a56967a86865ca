"""Hand-written BatchNorm and Dropout, drop-in compatible with torch's layers.

The study requires these layers to be written by hand. They use the same constructor
arguments, parameter and buffer names as ``torch.nn.BatchNorm1d/2d`` and
``torch.nn.Dropout/Dropout2d``, so state dicts move freely between ours and torch's.

Speed matters (the layers run on every step of 29 training runs), so:

* BatchNorm's training forward takes mean and variance in one pass (``torch.var_mean``)
  and applies the affine map as a single fused ``addcmul`` (one full-size output, no
  ``x_hat`` temporary); its backward is derived by hand and saves only ``x`` and two
  per-channel vectors, where autograd would keep several full-size intermediates.
* Dropout draws its mask with ``bernoulli_`` into the buffer that becomes the scaled mask,
  so one full-size tensor is allocated besides the output, and autograd saves only it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["BatchNorm1d", "BatchNorm2d", "Dropout", "Dropout2d"]


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
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float):
        dims = _reduce_dims(x)
        shape = _channel_shape(x)
        xf = x if x.dtype in (torch.float32, torch.float64) else x.float()
        var, mean = torch.var_mean(xf, dim=dims, correction=0)  # (C,), (C,)
        invstd = torch.rsqrt(var + eps)
        scale = invstd if weight is None else invstd * weight
        shift = -mean * scale if bias is None else torch.addcmul(bias, mean, scale, value=-1)
        y = torch.addcmul(shift.view(shape), xf, scale.view(shape)).to(x.dtype)
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.dims = dims
        ctx.has_bias = bias is not None
        return y, mean, var

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
        # sum(dy * (x - mean)) = sum(dy * x) - mean * sum(dy): no (x - mean) temporary.
        sum_dy_xmu = (dyf * xf).sum(dims) - mean * sum_dy
        dweight = sum_dy_xmu * invstd if weight is not None else None
        dbias = sum_dy if ctx.has_bias else None
        dx = None
        if ctx.needs_input_grad[0]:
            a = invstd if weight is None else invstd * weight
            b = -a * invstd * invstd * sum_dy_xmu / n
            c = -a * sum_dy / n - mean * b
            dx = torch.addcmul(c.view(shape), dyf, a.view(shape))
            dx.addcmul_(xf, b.view(shape))
            dx = dx.to(x.dtype)
        return dx, dweight, dbias, None


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
        y, mean, var = _BatchNormTrain.apply(x, self.weight, self.bias, self.eps)
        if self.training and self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                if self.momentum is None:  # cumulative moving average, as torch does
                    factor = 1.0 / float(self.num_batches_tracked)
                else:
                    factor = self.momentum
                # The running variance is the unbiased estimate (n / (n - 1)), as in torch.
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
                self.running_var.lerp_((var * (n / (n - 1))).to(self.running_var.dtype), factor)
        return y

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

    def _mask_shape(self, x: Tensor) -> tuple[int, ...]:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        # Keep-mask drawn in place, then scaled in place: mask holds 0 or 1 / (1 - p).
        mask = torch.empty(self._mask_shape(x), dtype=x.dtype, device=x.device)
        mask.bernoulli_(1.0 - self.p).mul_(1.0 / (1.0 - self.p))
        return x * mask

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
