"""Weight quantisation: int8 weight-only on torch's packed kernel, or bitsandbytes 8-bit."""

from __future__ import annotations

import importlib.util
from typing import Any

import torch
from torch import nn

from engine.native.linear import per_channel_int8


class Int8WeightOnlyLinear(nn.Module):
    """A Linear whose weights are int8; activations stay in the model dtype.

    Decoding reads every weight once per token, so halving the bytes read is what speeds
    it up; `aten._weight_int8pack_mm` dequantises inside the kernel.
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        quantized, scales = per_channel_int8(linear.weight.detach())
        dtype = linear.weight.dtype
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.register_buffer("weight_int8", quantized)
        self.register_buffer("scales", scales.to(dtype))
        self.weight_int8: torch.Tensor
        self.scales: torch.Tensor
        self.bias: torch.Tensor | None
        if linear.bias is not None:
            self.register_buffer("bias", linear.bias.detach().clone())
        else:
            self.bias = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., K] -> [..., N]."""
        flat = x.reshape(-1, x.shape[-1]).to(self.scales.dtype)
        out: torch.Tensor = torch.ops.aten._weight_int8pack_mm(flat, self.weight_int8, self.scales)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        """Shown by print(model)."""
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def convert_to_int8(model: nn.Module) -> int:
    """Replace every nn.Linear (the output head included) in place; returns how many."""
    targets = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, nn.Linear)
    ]
    for parent, name, child in targets:
        setattr(parent, name, Int8WeightOnlyLinear(child))
    # A tied head is now its own int8 copy; stop transformers from re-tying it on save/resize.
    config = getattr(model, "config", None)
    if config is not None and targets:
        config.tie_word_embeddings = False
    return len(targets)


def int8_kernel_works(device: torch.device, dtype: torch.dtype) -> str | None:
    """Run the packed kernel once; returns why it cannot be used here, or None if it works."""
    probe = nn.Linear(64, 32, bias=False).to(device=device, dtype=dtype)
    try:
        with torch.inference_mode():
            Int8WeightOnlyLinear(probe)(torch.ones(1, 64, device=device, dtype=dtype))
    except (RuntimeError, NotImplementedError, AttributeError) as error:
        return f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"
    return None


def bitsandbytes_config() -> Any:
    """A BitsAndBytesConfig for 8-bit loading; raises ImportError when bitsandbytes is absent."""
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ImportError("bitsandbytes is not installed (pip install 'qwenbot[quantization]')")
    from transformers import BitsAndBytesConfig  # noqa: PLC0415  (only when asked for)

    return BitsAndBytesConfig(load_in_8bit=True)  # type: ignore[no-untyped-call]
