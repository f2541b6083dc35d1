"""Load a model into the native decoder: config, checkpoint, quantisation scheme fallbacks."""

from __future__ import annotations

import ctypes
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import huggingface_hub
import torch
from transformers import AutoConfig, GenerationConfig

from engine.errors import ModelLoadFailed
from engine.loading.model_source import ModelSource
from engine.loading.native_weights import (
    SafetensorsReader,
    TensorFetch,
    build_decoder,
    safetensors_files,
    state_dict_fetch,
)
from engine.loading.transformers_backend import load_weights, source_kwargs
from engine.native.linear import Scheme, kernel_problem
from engine.native.model import NativeConfig, NativeDecoder
from engine.native.parts import UnsupportedArchitecture

log = logging.getLogger(__name__)

Fallback = Callable[[str, object, str], None]  # (what, why, instead)

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


def load_config(source: ModelSource) -> Any:
    """The transformers config (GGUF files carry theirs in their metadata)."""
    try:
        return AutoConfig.from_pretrained(source.location, **source_kwargs(source))
    except (OSError, ValueError, KeyError) as error:
        raise ModelLoadFailed(f"cannot read the config of {source.location}: {error}") from error


def load_generation_config(source: ModelSource, config: Any) -> GenerationConfig:
    """generation_config.json when the model has one, else what its config implies."""
    try:
        return GenerationConfig.from_pretrained(source.location, **source_kwargs(source))
    except (OSError, ValueError):
        return GenerationConfig.from_model_config(config)


def native_support(config: Any) -> str | None:
    """Why the native decoder cannot run this model, or None when it can."""
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


def _checkpoint_folder(source: ModelSource) -> Path | None:
    """A local folder with the safetensors checkpoint, downloading a hub model if needed."""
    if source.gguf_file:
        return None
    if source.is_local:
        return Path(source.location)
    try:
        folder = huggingface_hub.snapshot_download(
            source.location,
            revision=source.revision,
            allow_patterns=["*.json", "*.safetensors"],
            local_files_only=source.cached,
        )
    except OSError as error:  # hub HTTP and cache errors derive from OSError
        message = f"cannot download the weights of {source.location}: {error}"
        raise ModelLoadFailed(message.splitlines()[0]) from error
    return Path(folder)


def checkpoint_fetch(source: ModelSource, dtype: torch.dtype) -> TensorFetch:
    """Stream tensors from safetensors when the checkpoint has them, else via transformers."""
    folder = _checkpoint_folder(source)
    files = safetensors_files(folder) if folder is not None else []
    if files:
        return SafetensorsReader(files)
    model = load_weights(source, torch.device("cpu"), dtype)
    return state_dict_fetch(model)


def load_native(
    source: ModelSource,
    config: Any,
    *,
    scheme: Scheme,
    dtype: torch.dtype,
    reduce_range: bool,
    progress: Callable[[float], None],
) -> NativeDecoder:
    """Read the checkpoint into a NativeDecoder with the given (already checked) scheme."""
    fetch = checkpoint_fetch(source, dtype)

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
    return decoder


def release_free_memory() -> None:
    """Hand the checkpoint's freed buffers back to the OS (glibc keeps them otherwise).

    Without this the process keeps ~0.7 GB of freed bf16 tensors resident after loading.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to trim with
        log.debug("malloc_trim unavailable")
