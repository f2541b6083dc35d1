"""The native backend: whether it runs a model, which quantisation scheme runs here (with
its fallbacks), and the checkpoint read into a NativeDecoder."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from engine.config import Quantization
from engine.errors import ModelLoadFailed
from engine.loading.checkpoint import checkpoint_fetch, release_free_memory
from engine.loading.model_source import ModelSource
from engine.loading.native_weights import build_decoder
from engine.loading.packed_cache import cache_path, load_cached, save_cached
from engine.native.architecture import NativeConfig
from engine.native.linear import Scheme, kernel_problem
from engine.native.model import NativeDecoder
from engine.native.packed_linear import PackedLinear
from engine.native.parts import UnsupportedArchitecture

Fallback = Callable[[str, object, str], None]  # (what, why, instead)


class PackedCache(NamedTuple):
    """Where a model's packed weights may be kept: its identity and the folder's bound."""

    fingerprint: str
    limit_mb: int


# When a scheme's kernel cannot run here (not in this torch build, or no C compiler for ours),
# the next one that runs is used.
_SCHEME_CHAIN: dict[Scheme, tuple[Scheme, ...]] = {
    "int4": ("int4", "int8", "int8-torch", "none"),
    "int8-dynamic": ("int8-dynamic", "int8", "int8-torch", "none"),
    "int8": ("int8", "int8-torch", "none"),
    "int8-torch": ("int8-torch", "none"),
    "none": ("none",),
}
_SCHEME_NAMES: dict[Scheme, str] = {
    "int4": "compiled int4 kernel",
    "int8-dynamic": "fbgemm dynamic int8 kernel",
    "int8": "compiled int8 kernel",
    "int8-torch": "torch int8 weight-only kernel",
    "none": "dense",
}


def native_problem(device: torch.device, quantization: Quantization, config: Any) -> str | None:
    """Why the native decoder cannot run this model here, or None when it can."""
    if device.type != "cpu":
        return "it is built for CPUs"
    if quantization == "bnb8":
        return "bitsandbytes needs transformers' model classes"
    try:
        NativeConfig.from_transformers(config)
    except UnsupportedArchitecture as error:
        return f"unsupported {error}"
    return None


def choose_scheme(
    requested: Scheme, dtype: torch.dtype, reduce_range: bool, fallback: Fallback
) -> Scheme:
    """The first scheme in the requested one's chain whose kernel runs on this machine."""
    chain = _SCHEME_CHAIN[requested]
    for scheme, following in zip(chain, (*chain[1:], "none"), strict=True):
        problem = kernel_problem(scheme, dtype, reduce_range)
        if problem is None:
            return scheme
        fallback(_SCHEME_NAMES[scheme], problem, f"{_SCHEME_NAMES[following]} ({following})")
    return "none"


def load_native(
    source: ModelSource,
    config: Any,
    *,
    scheme: Scheme,
    dtype: torch.dtype,
    reduce_range: bool,
    keep_blocks: bool,
    progress: Callable[[float], None],
    cache: PackedCache | None = None,
) -> tuple[NativeDecoder, bool]:
    """Read the checkpoint into a NativeDecoder with the given (already checked) scheme; a
    GGUF file's quantised blocks are kept in their own precision when keep_blocks. With a
    cache, packed weights built before are mapped from it (or kept there once built).
    Returns the decoder and whether it came from the cache."""
    path = None
    if cache is not None and scheme in {"int8", "int4"}:
        path = cache_path(cache.fingerprint, f"{scheme} {dtype} {reduce_range} {keep_blocks}")
        decoder = load_cached(path, config)
        if decoder is not None:
            progress(1.0)
            return decoder, True
    fetch = checkpoint_fetch(source, config, dtype, keep_blocks=keep_blocks)

    def layer_done(fraction: float) -> None:
        release_free_memory()  # each layer's bf16 buffers go before the next is read
        progress(fraction)

    try:
        decoder = build_decoder(
            config,
            fetch,
            scheme=scheme,
            dtype=dtype,
            reduce_range=reduce_range,
            progress=layer_done,
        )
    except (KeyError, ValueError, RuntimeError, OSError) as error:
        message = f"cannot build the native decoder for {source.location}: {error}"
        raise ModelLoadFailed(message) from error
    del fetch
    release_free_memory()
    if path is not None and cache is not None:
        save_cached(path, decoder, cache.limit_mb)
    return decoder, False


def packed_widths(decoder: NativeDecoder) -> str:
    """The packed widths the decoder's matmuls use: "int8", "int4" or "int4+int8"."""
    linears = [getattr(layer, name) for layer in decoder.layers
               for name in ("qkv", "out", "gate_up", "down")] + [decoder.head]  # fmt: skip
    bits = sorted({linear.weight.bits for linear in linears if isinstance(linear, PackedLinear)})
    return "+".join(f"int{width}" for width in bits)
