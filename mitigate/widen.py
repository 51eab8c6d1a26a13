"""Function-preserving widening of a Linear or Conv2d layer (Net2Net's WiderNet).

Widening layer L from w to w' output units copies w' - w randomly chosen
existing units and divides the consumer's incoming weights of every copied
unit by its number of copies. With only elementwise layers (ReLU, GELU, Tanh,
Sigmoid, Dropout, Identity) between L and its consumer, the widened network
computes the same function (Chen, Goodfellow and Shlens, "Net2Net:
Accelerating Learning via Knowledge Transfer", ICLR 2016). Optional noise on
the copies breaks their symmetry so that retraining can separate them.

Copies inherit what their originals do, dead units included: a layer whose
units are all zero on some inputs stays zero there however often they are
copied. The "fresh" form therefore adds w' - w newly initialised units whose
outgoing weights in the consumer are zero. The function is again unchanged,
and the first gradient step gives the new units outgoing weights, after which
they learn directions that the old units never had.
"""

from __future__ import annotations

import torch
from torch import nn

ELEMENTWISE = (nn.ReLU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.Dropout, nn.Identity, nn.LeakyReLU, nn.SiLU,
               # Pooling acts on each channel separately, so it commutes with copying channels.
               nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def resolve_widenable(model: nn.Module, layer: str) -> str:
    """Return the name of the Linear or Conv2d to widen for ``layer``.

    A container (for example ``nn.Sequential(Linear, ReLU)``) resolves to the
    last Linear or Conv2d inside it.
    """
    modules = dict(model.named_modules())
    if layer not in modules:
        raise ValueError(f"layer {layer!r} not found in {type(model).__name__}")
    target = modules[layer]
    if isinstance(target, (nn.Linear, nn.Conv2d)):
        return layer
    inner = [name for name, module in target.named_modules() if isinstance(module, (nn.Linear, nn.Conv2d))]
    if not inner:
        raise ValueError(f"layer {layer!r} ({type(target).__name__}) contains no Linear or Conv2d to widen")
    return f"{layer}.{inner[-1]}" if layer else inner[-1]


def layer_width(model: nn.Module, layer: str) -> int:
    """Return the output units or channels of the Linear or Conv2d behind ``layer``."""
    return _width(model.get_submodule(resolve_widenable(model, layer)))


def find_consumer(model: nn.Module, layer: str, example_input: torch.Tensor) -> str:
    """Return the name of the first Linear or Conv2d that runs after ``layer`` and reads its width.

    Raises ValueError when a module that is not elementwise runs in between,
    because the copy-and-divide rule would then change the function.
    """
    order: list[str] = []
    handles = []
    for name, module in model.named_modules():
        if len(list(module.children())) == 0:
            handles.append(module.register_forward_hook(lambda m, i, o, name=name: order.append(name)))
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        for handle in handles:
            handle.remove()
    if layer not in order:
        raise ValueError(f"layer {layer!r} did not run in the forward pass")

    modules = dict(model.named_modules())
    width = _width(modules[layer])
    flattened = False
    for name in order[order.index(layer) + 1:]:
        module = modules[name]
        if isinstance(module, nn.Flatten) and isinstance(modules[layer], nn.Conv2d):
            flattened = True
            continue
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            fits = _fan_in(module) % width == 0 if flattened else _fan_in(module) == width
            if not fits:
                raise ValueError(
                    f"the layer after {layer!r} is {name!r} with {_fan_in(module)} inputs, not the "
                    f"{width} outputs of {layer!r}; widening needs a direct consumer"
                )
            return name
        if not isinstance(module, ELEMENTWISE):
            raise ValueError(
                f"cannot widen {layer!r}: {name!r} ({type(module).__name__}) runs between it and its "
                "consumer and is not elementwise"
            )
    raise ValueError(f"no Linear or Conv2d consumes the output of {layer!r}")


WIDEN_INITS = ("copy", "fresh")


def widen(model: nn.Module, layer: str, *, new_width: int, example_input: torch.Tensor,
          noise: float = 0.0, seed: int = 0, init: str = "copy") -> dict:
    """Widen ``layer`` of ``model`` in place to ``new_width`` units; return what changed.

    Parameters
    ----------
    model : nn.Module
    layer : str
        Name of a Linear or Conv2d, or of a container resolved by
        :func:`resolve_widenable`.
    new_width : int
        Output units (Linear) or channels (Conv2d) after widening; larger
        than the current width.
    example_input : Tensor
        One input batch, to find the consumer layer by running the model.
    noise : float
        Standard deviation of noise added to the copied units' weights,
        relative to their scale. 0 keeps the function exactly. Only for
        ``init="copy"``.
    init : {"copy", "fresh"}
        "copy": the new units copy existing ones (Net2Net). "fresh": the new
        units are initialised like a new layer and their outgoing weights
        are zero.
    """
    if init not in WIDEN_INITS:
        raise ValueError(f"init must be one of {list(WIDEN_INITS)}, got {init!r}")
    name = resolve_widenable(model, layer)
    consumer_name = find_consumer(model, name, example_input)
    modules = dict(model.named_modules())
    producer, consumer = modules[name], modules[consumer_name]
    width = _width(producer)
    if new_width <= width:
        raise ValueError(f"new_width must exceed the current width {width} of {name!r}, got {new_width}")

    if init == "copy":
        generator = torch.Generator().manual_seed(seed)
        extra = torch.randint(0, width, (new_width - width,), generator=generator)
        mapping = torch.cat([torch.arange(width), extra])
        copies = torch.bincount(mapping, minlength=width).float()
        new_producer = _widen_producer(producer, mapping, width, noise, generator)
        new_consumer = _widen_consumer(consumer, mapping, copies, width)
    else:
        new_producer = _fresh_producer(producer, new_width, seed)
        new_consumer = _zero_extended_consumer(consumer, width, new_width)
    _set_module(model, name, new_producer)
    _set_module(model, consumer_name, new_consumer)
    return {"layer": name, "consumer": consumer_name, "old_width": width, "new_width": new_width,
            "init": init}


def _width(module) -> int:
    return module.out_features if isinstance(module, nn.Linear) else module.out_channels


def _fan_in(module) -> int:
    return module.in_features if isinstance(module, nn.Linear) else module.in_channels


def _producer_like(module, out_units: int) -> nn.Module:
    """Return a new, randomly initialised copy of ``module`` with ``out_units`` outputs."""
    if isinstance(module, nn.Linear):
        return nn.Linear(module.in_features, out_units, bias=module.bias is not None)
    return nn.Conv2d(module.in_channels, out_units, module.kernel_size, stride=module.stride,
                     padding=module.padding, dilation=module.dilation, groups=module.groups,
                     bias=module.bias is not None)


def _consumer_like(module, in_units: int) -> nn.Module:
    """Return a new copy of ``module`` with ``in_units`` inputs, its bias carried over."""
    if isinstance(module, nn.Linear):
        new = nn.Linear(in_units, module.out_features, bias=module.bias is not None)
    else:
        if module.groups != 1:
            raise ValueError("widening into a grouped convolution is not supported")
        new = nn.Conv2d(in_units, module.out_channels, module.kernel_size, stride=module.stride,
                        padding=module.padding, dilation=module.dilation, bias=module.bias is not None)
    if module.bias is not None:
        new.bias.data.copy_(module.bias.detach())
    return new


def _widen_producer(module, mapping, width, noise, generator):
    weight = module.weight.detach()[mapping].clone()
    if noise > 0:
        # Only the new copies get noise; the original units stay as trained.
        scale = weight.abs().mean()
        weight[width:] += noise * scale * torch.randn(weight[width:].shape, generator=generator)
    new = _producer_like(module, len(mapping))
    new.weight.data.copy_(weight)
    if module.bias is not None:
        new.bias.data.copy_(module.bias.detach()[mapping])
    return new.to(module.weight.device, module.weight.dtype)


def _fresh_producer(module, new_width, seed):
    """Return ``module`` with ``new_width`` outputs: its own rows first, then freshly initialised ones."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        new = _producer_like(module, new_width)
    new = new.to(module.weight.device, module.weight.dtype)
    width = _width(module)
    new.weight.data[:width] = module.weight.detach()
    if module.bias is not None:
        new.bias.data[:width] = module.bias.detach()
    return new


def _widen_consumer(module, mapping, copies, width):
    """Rebuild the consumer so that input j reads old unit ``mapping[j]``, divided by its ``copies``."""
    divisor = copies[mapping]
    if isinstance(module, nn.Linear):
        # After a Flatten, each channel owns `spatial` consecutive inputs.
        spatial = module.in_features // width
        columns = (mapping[:, None] * spatial + torch.arange(spatial)[None, :]).reshape(-1)
        weight = module.weight.detach()[:, columns] / divisor.repeat_interleave(spatial)[None, :]
        new = _consumer_like(module, len(columns))
    else:
        new = _consumer_like(module, len(mapping))
        weight = module.weight.detach()[:, mapping] / divisor[None, :, None, None]
    new.weight.data.copy_(weight)
    return new.to(module.weight.device, module.weight.dtype)


def _zero_extended_consumer(module, width, new_width):
    """Rebuild the consumer with zero weights on the inputs of the ``new_width - width`` new units."""
    old = module.weight.detach()
    if isinstance(module, nn.Linear):
        # After a Flatten, the old channels own the first width * spatial inputs.
        spatial = module.in_features // width
        weight = old.new_zeros(module.out_features, new_width * spatial)
        weight[:, :width * spatial] = old
    else:
        if module.groups != 1:
            raise ValueError("widening into a grouped convolution is not supported")
        weight = old.new_zeros(old.shape[0], new_width, *old.shape[2:])
        weight[:, :width] = old
    new = _consumer_like(module, weight.shape[1])
    new.weight.data.copy_(weight)
    return new.to(module.weight.device, module.weight.dtype)


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)
