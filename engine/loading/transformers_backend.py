"""The transformers backend: any causal LM through the library's own forward pass.

Loads the weights with the dtype and device chosen for this machine, walks the
quantisation chain (bitsandbytes 8-bit -> int8 weight-only on torch's kernel -> none) and
compiles the forward pass, each step with its fallback.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from engine.config import Quantization
from engine.errors import ModelLoadFailed
from engine.loading.decode_loop import warm_up
from engine.loading.fallbacks import Fallbacks
from engine.loading.model_source import ModelSource, not_found, source_kwargs
from engine.loading.quantize import bitsandbytes_config, convert_to_int8, int8_kernel_works

if TYPE_CHECKING:
    from engine.text.tokenizing import TextTokenizer

log = logging.getLogger(__name__)


def load_weights(
    source: ModelSource,
    device: torch.device,
    dtype: torch.dtype,
    quantization_config: Any = None,
) -> PreTrainedModel:
    """Load the causal LM in eval mode; low_cpu_mem_usage avoids a second full copy in RAM."""
    kwargs = source_kwargs(source)
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source.location, dtype=dtype, low_cpu_mem_usage=True, **kwargs
        )
    except OSError as error:
        if source.is_local:
            raise ModelLoadFailed(f"cannot read model {source.location}: {error}") from error
        raise not_found(source, error) from error
    except (ValueError, KeyError, RuntimeError, ImportError) as error:
        raise ModelLoadFailed(f"cannot load model {source.location}: {error}") from error
    if quantization_config is None:
        model.to(device)  # type: ignore[arg-type]  # transformers wraps .to with a narrower stub
    model.train(False)  # eval mode: no dropout
    # No requires_grad_(False): inference_mode already skips autograd, and frozen bf16 weights
    # sent prefill down a 3x slower CPU path (0.41 s -> 1.19 s for 92 tokens of Qwen3-0.6B).
    return model


def load_transformers(
    source: ModelSource,
    requested: Quantization,
    device: torch.device,
    dtype: torch.dtype,
    fallbacks: Fallbacks,
) -> tuple[PreTrainedModel, str]:
    """(model, quantisation in effect): walk bnb8 -> int8 weight-only (torch's kernel) -> none."""
    if requested == "bnb8":
        try:
            return load_weights(source, device, dtype, bitsandbytes_config()), "bnb8"
        except (ImportError, ModelLoadFailed, RuntimeError) as error:
            fallbacks.note("bitsandbytes 8-bit", error, "int8-torch")
            requested = "int8-torch"
    # int8 here means the same int8 weights on torch's kernel: the model is unchanged.
    if requested in {"int4", "int8-dynamic"}:
        fallbacks.note(requested, "needs the native decoder", "int8-torch")
    model = load_weights(source, device, dtype)
    if requested in {"int8", "int8-torch", "int8-dynamic", "int4"}:
        problem = int8_kernel_works(device, dtype)
        if problem is None:
            count = convert_to_int8(model)
            log.info("int8 weight-only quantisation applied to %d linear layers", count)
            return model, "int8-torch"
        fallbacks.note("int8 weight-only kernel", problem, "no quantisation")
    return model, "none"


def compile_with_fallback(
    model: PreTrainedModel, tokenizer: TextTokenizer, fallbacks: Fallbacks
) -> bool:
    """Compile the forward pass and prove it with a warm-up; eager again on failure.
    True when the compiled forward pass is in use (and warmed up)."""
    eager_forward = model.forward
    try:
        # dynamic=True: the prompt length and KV length change every call.
        model.forward = torch.compile(eager_forward, dynamic=True)
        warm_up(model, tokenizer)
    except Exception as error:  # noqa: BLE001  compile failures share no base class
        model.forward = eager_forward
        reason = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:160]}"
        fallbacks.note("torch.compile", reason, "eager mode")
        return False
    return True
