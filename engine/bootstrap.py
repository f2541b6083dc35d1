"""Bring a model up: threads, load, quantise, compile, warm up, each with a fallback."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from engine.config import EngineSettings, Quantization
from engine.cpu_tuning import ThreadPlan, apply_threads, plan_threads
from engine.decode_loop import SamplingParams, decode_tokens
from engine.errors import ModelLoadFailed
from engine.fingerprint import model_fingerprint
from engine.loader import (
    load_tokenizer,
    load_weights,
    locate_on_hub,
    resolve_device,
    resolve_dtype,
)
from engine.model_source import ModelSource, resolve_source
from engine.prompt import stop_token_ids
from engine.quantize import bitsandbytes_config, convert_to_int8, int8_kernel_works
from engine.stats import EffectiveConfig

log = logging.getLogger(__name__)

ProgressCallback = Callable[[str, float], None]  # (stage, fraction done 0..1)


def no_progress(stage: str, fraction: float) -> None:
    """Default progress sink: nothing to show."""


@dataclass
class LoadedModel:
    """The model and everything the worker needs to run it."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    source: ModelSource
    device: torch.device
    dtype: torch.dtype
    quantization: Quantization
    compiled: bool
    threads: ThreadPlan
    fingerprint: str
    stop_ids: frozenset[int]
    fallbacks: list[str] = field(default_factory=list)

    def effective(self) -> EffectiveConfig:
        """What is in effect, for the start-up line and /stats."""
        return EffectiveConfig(
            model=self.source.display_name,
            device=self.device.type,
            dtype=str(self.dtype).removeprefix("torch."),
            quantization=self.quantization,
            compiled=self.compiled,
            threads=self.threads.intra_op,
            interop_threads=self.threads.inter_op,
            fallbacks=tuple(self.fallbacks),
        )


def _fall_back(fallbacks: list[str], what: str, why: object, instead: str) -> None:
    line = f"{what} unavailable ({why}); using {instead} instead"
    log.warning(line)
    fallbacks.append(line)


def _load_quantized(
    source: ModelSource,
    requested: Quantization,
    device: torch.device,
    dtype: torch.dtype,
    fallbacks: list[str],
) -> tuple[PreTrainedModel, Quantization]:
    """Walk the chain bnb8 -> int8 -> none, taking the first option that works here."""
    if requested == "bnb8":
        try:
            return load_weights(source, device, dtype, bitsandbytes_config()), "bnb8"
        except (ImportError, ModelLoadFailed, RuntimeError) as error:
            _fall_back(fallbacks, "bitsandbytes 8-bit", error, "int8")
            requested = "int8"
    model = load_weights(source, device, dtype)
    if requested == "int8":
        problem = int8_kernel_works(device, dtype)
        if problem is None:
            count = convert_to_int8(model)
            log.info("int8 weight-only quantisation applied to %d linear layers", count)
            return model, "int8"
        _fall_back(fallbacks, "int8 weight-only kernel", problem, "no quantisation")
    return model, "none"


def warm_up(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Run a few decode steps so lazy initialisation (and compilation) happens before users.

    Two prompt lengths and several steps each: a compiled forward pass sees prompt and cache
    lengths change, marks them dynamic and recompiles here, not in a user's first reply.
    """
    for text in ("Hello", "Hello, how are you today? Tell me about yourself."):
        prompt = tokenizer(text, add_special_tokens=False)["input_ids"] or [0]
        for _ in decode_tokens(model, prompt, SamplingParams(max_new_tokens=8), frozenset()):
            pass


def _compile_with_fallback(bundle: LoadedModel, fallbacks: list[str]) -> None:
    """Compile the forward pass and prove it with a warm-up; fall back to eager on failure."""
    eager_forward = bundle.model.forward
    try:
        # dynamic=True: the prompt length and KV length change every call.
        bundle.model.forward = torch.compile(eager_forward, dynamic=True)
        warm_up(bundle.model, bundle.tokenizer)
        bundle.compiled = True
    except Exception as error:  # noqa: BLE001  compile failures share no base class
        bundle.model.forward = eager_forward
        reason = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:160]}"
        _fall_back(fallbacks, "torch.compile", reason, "eager mode")


def bootstrap(settings: EngineSettings, progress: ProgressCallback = no_progress) -> LoadedModel:
    """Load and prepare the model described by settings; fallbacks are logged and recorded."""
    fallbacks: list[str] = []
    progress("Setting CPU threads", 0.0)
    threads = apply_threads(
        plan_threads(settings.threads, settings.max_threads, settings.interop_threads)
    )
    source = resolve_source(settings)
    if not source.is_local:
        progress(f"Looking for {source.location} (local cache, then the hub)", 0.02)
        source = locate_on_hub(source)
    device = resolve_device(settings.device)
    if settings.device == "cuda" and not torch.cuda.is_available():
        _fall_back(fallbacks, "CUDA", "no CUDA device", "the CPU")
        device = torch.device("cpu")
    dtype = resolve_dtype(settings.dtype, device)
    progress(f"Loading tokenizer of {source.display_name}", 0.05)
    tokenizer = load_tokenizer(source)
    progress(f"Loading weights ({str(dtype).removeprefix('torch.')})", 0.15)
    model, quantization = _load_quantized(source, settings.quantization, device, dtype, fallbacks)
    bundle = LoadedModel(
        model=model,
        tokenizer=tokenizer,
        source=source,
        device=device,
        dtype=dtype,
        quantization=quantization,
        compiled=False,
        threads=threads,
        fingerprint=model_fingerprint(source, getattr(model.config, "_commit_hash", None)),
        stop_ids=stop_token_ids(tokenizer, getattr(model, "generation_config", None)),
        fallbacks=fallbacks,
    )
    if settings.compile:
        progress("Compiling (torch.compile, can take a minute)", 0.7)
        _compile_with_fallback(bundle, fallbacks)
    if settings.warmup and not bundle.compiled:
        progress("Warming up", 0.9)
        warm_up(bundle.model, bundle.tokenizer)
    progress("Ready", 1.0)
    return bundle
