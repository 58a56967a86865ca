"""The study's two networks, built from the hand-written layers, and the model registry.

``MLP()`` and ``CNN()`` with no arguments are exactly the study's networks
(3,159,050 and 3,268,874 trainable parameters). Their arguments switch BatchNorm off,
set the dropout rate, choose channel-wise dropout in the CNN, and scale the sizes so a
small variant trains on a CPU.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from .layers import BatchNorm1d, BatchNorm2d, Dropout, Dropout2d

__all__ = ["MLP", "CNN", "MODELS", "ModelEntry", "register_model", "model_entry", "display_name",
           "model_order", "build_model", "model_arguments", "count_parameters", "shown_units",
           "first_layer_weights"]

IMAGE_SHAPE = (3, 32, 32)
NUM_CLASSES = 10


def _dropout_or_identity(p: float, channelwise: bool = False) -> nn.Module:
    # p = 0 is "no dropout": an Identity, so the ablation and the p = 0 sweep point agree.
    if p == 0:
        return nn.Identity()
    return Dropout2d(p) if channelwise else Dropout(p)


class _MaxPoolChannelsLastForward(torch.autograd.Function):
    """torch's max pooling, forward in channels_last and backward in NCHW (CPU speed only).

    On a CPU the NCHW forward kernel walks each window element by element, while the
    channels_last one vectorises over channels; for the backward it is the other way round
    (a scatter by the saved indices is cheap in NCHW). The indices are positions within each
    (H, W) plane, the same in both layouts, so the NCHW backward takes the channels_last
    forward's indices. Values and gradients equal ``F.max_pool2d``'s (tested).
    """

    @staticmethod
    def forward(ctx, x: Tensor, kernel: list[int], stride: list[int], padding: list[int],
                dilation: list[int], ceil_mode: bool) -> Tensor:
        out, idx = torch.ops.aten.max_pool2d_with_indices(
            x.contiguous(memory_format=torch.channels_last), kernel, stride, padding,
            dilation, ceil_mode)
        idx = idx.contiguous()  # (N, C, H_out, W_out), NCHW like the gradient will be
        ctx.save_for_backward(x, idx)
        ctx.args = (kernel, stride, padding, dilation, ceil_mode)
        return out.contiguous()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        x, idx = ctx.saved_tensors
        dx = torch.ops.aten.max_pool2d_with_indices_backward(grad.contiguous(), x, *ctx.args, idx)
        return dx, None, None, None, None, None


class MaxPool2d(nn.MaxPool2d):
    """torch's MaxPool2d; on a CPU, NCHW input is pooled by the faster kernel of each pass.

    Forward + backward on the 2-core machine of docs/performance.md (medians, 2 threads):
    the CNN's first pool, k5 s3 p2 on (100, 128, 32, 32): 90.7 -> 34.4 ms; its second,
    k5 s4 p2 on (100, 512, 11, 11): 29.5 -> 13.9 ms; the quick profile's (100, 16, 32, 32):
    11.7 -> 4.3 ms.
    """

    def forward(self, x: Tensor) -> Tensor:
        if (x.device.type != "cpu" or self.return_indices or x.dim() != 4
                or x.is_contiguous(memory_format=torch.channels_last)):
            return super().forward(x)
        return _MaxPoolChannelsLastForward.apply(
            x, list(_pair(self.kernel_size)), list(_pair(self.stride)),
            list(_pair(self.padding)), list(_pair(self.dilation)), self.ceil_mode)


class MLP(nn.Module):
    """Linear(3072, hidden) -> BN1d -> ReLU -> Dropout -> Linear(hidden, 10)."""

    def __init__(
        self, hidden: int = 1024, bn: bool = True, dropout: float = 0.6,
        num_classes: int = NUM_CLASSES,
    ) -> None:
        super().__init__()
        if hidden <= 0:
            raise ValueError(f"hidden must be a positive integer, got {hidden}")
        in_features = IMAGE_SHAPE[0] * IMAGE_SHAPE[1] * IMAGE_SHAPE[2]
        self.fc1 = nn.Linear(in_features, hidden)
        self.bn = BatchNorm1d(hidden) if bn else nn.Identity()
        self.act = nn.ReLU()
        self.dropout = _dropout_or_identity(dropout)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        # (N, 3, 32, 32) -> (N, 3072) -> (N, hidden) -> (N, 10)
        x = self.fc1(x.flatten(1))
        return self.fc2(self.dropout(self.act(self.bn(x))))


def _pair_list(value: Sequence[int] | int, n: int, name: str) -> list[int]:
    if isinstance(value, int):
        return [value] * n
    value = list(value)
    if len(value) != n:
        raise ValueError(f"{name} needs {n} values (one per conv block), got {value}")
    return value


def _pool_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class CNN(nn.Module):
    """Two blocks [Conv -> BN2d -> ReLU -> Dropout -> MaxPool] and a linear classifier.

    Defaults: Conv(3->128, k5, p2), MaxPool(k5, s3, p2); Conv(128->512, k7, p3),
    MaxPool(k5, s4, p2); Linear(512 * 3 * 3, 10). ``paddings=None`` keeps the spatial
    size through each convolution (kernel // 2).
    """

    def __init__(
        self,
        channels: Sequence[int] = (128, 512),
        kernels: Sequence[int] = (5, 7),
        paddings: Sequence[int] | None = None,
        pool_kernels: Sequence[int] = (5, 5),
        pool_strides: Sequence[int] = (3, 4),
        pool_paddings: Sequence[int] = (2, 2),
        bn: bool = True,
        dropout: float = 0.4,
        dropout2d: bool = False,
        num_classes: int = NUM_CLASSES,
    ) -> None:
        super().__init__()
        channels = list(channels)
        if not channels or any(c <= 0 for c in channels):
            raise ValueError(f"channels must be positive integers, got {channels}")
        n = len(channels)
        kernels = _pair_list(kernels, n, "kernels")
        paddings = [k // 2 for k in kernels] if paddings is None else _pair_list(
            paddings, n, "paddings")
        pool_kernels = _pair_list(pool_kernels, n, "pool_kernels")
        pool_strides = _pair_list(pool_strides, n, "pool_strides")
        pool_paddings = _pair_list(pool_paddings, n, "pool_paddings")
        blocks: list[nn.Module] = []
        size, in_ch = IMAGE_SHAPE[1], IMAGE_SHAPE[0]
        for i, out_ch in enumerate(channels):
            if 2 * pool_paddings[i] > pool_kernels[i]:
                raise ValueError(
                    f"pool_paddings[{i}]={pool_paddings[i]} must be at most half of "
                    f"pool_kernels[{i}]={pool_kernels[i]} (a MaxPool2d rule)"
                )
            blocks.append(nn.Sequential(
                nn.Conv2d(in_ch, out_ch, kernels[i], padding=paddings[i]),
                BatchNorm2d(out_ch) if bn else nn.Identity(),
                nn.ReLU(),
                _dropout_or_identity(dropout, channelwise=dropout2d),
                MaxPool2d(pool_kernels[i], stride=pool_strides[i], padding=pool_paddings[i]),
            ))
            size = _pool_out(size + 2 * paddings[i] - kernels[i] + 1, pool_kernels[i],
                             pool_strides[i], pool_paddings[i])
            if size <= 0:
                raise ValueError(f"block {i} shrinks the 32x32 image to nothing; "
                                 "use smaller kernels/strides")
            in_ch = out_ch
        self.features = nn.Sequential(*blocks)
        self.fc = nn.Linear(in_ch * size * size, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        # (N, 3, 32, 32) -> (N, 128, 11, 11) -> (N, 512, 3, 3) -> (N, 4608) -> (N, 10)
        return self.fc(self.features(x).flatten(1))


@dataclass(frozen=True)
class ModelEntry:
    """Everything cifarlab knows about one registered network: the one owner of model facts.

    ``cls`` builds it (its keyword arguments are the config's ``arch`` keys); ``display``
    names it in tables, figures and the report; ``channels_last`` asks for that memory
    format on CUDA and CPUs; ``first_layer`` returns its first-layer weights as images
    (units, 3, H, W) for the feature figure, or is None when it has no image-shaped first
    layer; ``published`` holds the study's train/val/test accuracy in % where the study has
    them (None: the report says there are none); ``inductive_bias`` is a sentence on what
    the architecture assumes about images, used where the report contrasts two models.
    """

    name: str
    cls: Callable[..., nn.Module]
    display: str
    channels_last: bool = False
    first_layer: Callable[[nn.Module], Tensor] | None = None
    published: dict[str, float] | None = None
    inductive_bias: str = ""


MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, display: str | None = None, *, channels_last: bool = False,
                   first_layer: Callable[[nn.Module], Tensor] | None = None,
                   published: dict[str, float] | None = None,
                   inductive_bias: str = "") -> Callable[[type], type]:
    """Class decorator: make ``cls`` buildable as ``name`` from the config.

    A new model is one file in ``cifarlab/zoo/`` with a decorated ``nn.Module`` class
    (imported automatically), plus a ``models: {name: ...}`` entry in the config.
    """
    def decorate(cls: type) -> type:
        if name in MODELS and MODELS[name].cls is not cls:
            raise ValueError(f"model name {name!r} is registered twice ({MODELS[name].cls} "
                             f"and {cls}); pick another name")
        MODELS[name] = ModelEntry(name, cls, display or name, channels_last, first_layer,
                                  published, inductive_bias)
        return cls
    return decorate


def _mlp_first_layer(model: nn.Module) -> Tensor:
    return model.fc1.weight.detach().reshape(-1, *IMAGE_SHAPE)


def _cnn_first_layer(model: nn.Module) -> Tensor:
    return model.features[0][0].weight.detach()


# Best-validation checkpoint, 100 epochs on a GPU: train / val / test accuracy in %.
register_model("mlp", "MLP", first_layer=_mlp_first_layer,
               published={"train_acc": 80.33, "val_acc": 57.23, "test_acc": 56.09},
               inductive_bias="The MLP flattens the image and spends its parameters on "
               "connections to fixed pixel positions, so it cannot reuse what it learns at "
               "one position at another.")(MLP)
register_model("cnn", "CNN", channels_last=True, first_layer=_cnn_first_layer,
               published={"train_acc": 96.10, "val_acc": 81.49, "test_acc": 80.66},
               inductive_bias="The CNN shares each filter over all image positions and pools "
               "nearby activations, so it uses the spatial structure of the image.")(CNN)


def model_entry(name: str) -> ModelEntry:
    """The registry entry of ``name``; an unknown name lists the valid ones."""
    _check_name(name)
    return MODELS[name]


def display_name(name: str) -> str:
    """How tables, figures and the report name a model (its own name if unregistered)."""
    return MODELS[name].display if name in MODELS else name


def model_order(names: Iterable[str]) -> list[str]:
    """``names`` in registry order (mlp, cnn, then added models), unknown ones last."""
    names = set(names)
    return [m for m in MODELS if m in names] + sorted(names - set(MODELS))


def model_arguments(name: str) -> list[str]:
    """The keyword arguments a registered model accepts."""
    _check_name(name)
    return [p for p in inspect.signature(MODELS[name].cls).parameters if p != "num_classes"]


def _check_name(name: str) -> None:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(sorted(MODELS))}")


def build_model(name: str, **kwargs: object) -> nn.Module:
    """Build a registered model; unknown names or arguments list the valid ones."""
    _check_name(name)
    valid = model_arguments(name)
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown argument(s) {unknown} for model {name!r}; valid: {', '.join(valid)}"
        )
    return MODELS[name].cls(**kwargs)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def shown_units(n_units: int, height: int, width: int) -> int:
    """How many first-layer units the feature figure draws (and a run keeps in
    first_layer.pt): up to 64 small filters (a CNN's) or 32 image-sized units (an MLP's,
    each a whole 32x32 image), never more than the layer has."""
    cap = 64 if height * width < 100 else 32
    return min(cap, int(n_units))


def first_layer_weights(model: nn.Module) -> Tensor:
    """First-layer weights as images (units, 3, H, W), through the model's registry entry."""
    for entry in MODELS.values():
        if type(model) is entry.cls and entry.first_layer is not None:
            return entry.first_layer(model)
    raise TypeError(f"no first layer known for {type(model).__name__}")


def _load_zoo() -> None:
    # Every module in cifarlab/zoo/ registers its models on import: adding a model is
    # adding a file there. Imported last, so the modules can use register_model.
    import importlib
    import pkgutil

    from . import zoo

    for info in pkgutil.iter_modules(zoo.__path__):
        importlib.import_module(f"{zoo.__name__}.{info.name}")


_load_zoo()
