"""Bring a model up: threads, load, quantise, compile, warm up, each with a fallback."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from engine.config import EngineSettings, Quantization
from engine.errors import ModelLoadFailed
from engine.loading.decode_loop import SamplingParams, decode_tokens
from engine.loading.fingerprint import model_fingerprint
from engine.loading.machine import ThreadPlan, apply_threads, plan_threads
from engine.loading.model_source import ModelSource, resolve_source
from engine.loading.native_backend import (
    choose_scheme,
    load_config,
    load_generation_config,
    load_native,
    native_support,
)
from engine.loading.quantize import bitsandbytes_config, convert_to_int8, int8_kernel_works
from engine.loading.transformers_backend import (
    cpu_has_vnni,
    load_tokenizer,
    load_weights,
    locate_on_hub,
    resolve_device,
    resolve_dtype,
)
from engine.native.model import NativeDecoder
from engine.serving.stats import EffectiveConfig
from engine.text.prompt import stop_token_ids

log = logging.getLogger(__name__)

ProgressCallback = Callable[[str, float], None]  # (stage, fraction done 0..1)


def no_progress(stage: str, fraction: float) -> None:
    """Default progress sink: nothing to show."""


@dataclass
class LoadedModel:
    """The model and everything the worker needs to run it."""

    model: PreTrainedModel | NativeDecoder
    config: Any  # the transformers config
    tokenizer: PreTrainedTokenizerBase
    source: ModelSource
    device: torch.device
    dtype: torch.dtype
    backend: str  # "native" or "transformers"
    quantization: str
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
            backend=self.backend,
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


def _load_transformers(
    source: ModelSource,
    requested: Quantization,
    device: torch.device,
    dtype: torch.dtype,
    fallbacks: list[str],
) -> tuple[PreTrainedModel, str]:
    """The transformers backend: walk bnb8 -> int8 weight-only (torch's kernel) -> none."""
    if requested == "bnb8":
        try:
            return load_weights(source, device, dtype, bitsandbytes_config()), "bnb8"
        except (ImportError, ModelLoadFailed, RuntimeError) as error:
            _fall_back(fallbacks, "bitsandbytes 8-bit", error, "int8-torch")
            requested = "int8-torch"
    # int8 here means the same int8 weights on torch's kernel: the model is unchanged.
    if requested in {"int4", "int8-dynamic"}:
        _fall_back(fallbacks, requested, "needs the native decoder", "int8-torch")
    model = load_weights(source, device, dtype)
    if requested in {"int8", "int8-torch", "int8-dynamic", "int4"}:
        problem = int8_kernel_works(device, dtype)
        if problem is None:
            count = convert_to_int8(model)
            log.info("int8 weight-only quantisation applied to %d linear layers", count)
            return model, "int8-torch"
        _fall_back(fallbacks, "int8 weight-only kernel", problem, "no quantisation")
    return model, "none"


def _choose_backend(
    settings: EngineSettings,
    device: torch.device,
    quantization: Quantization,
    config: Any,
    fallbacks: list[str],
) -> str:
    """native where it can run (CPU, a Llama/Qwen-family model, not bnb8), else transformers."""
    if settings.backend == "transformers":
        return "transformers"
    reason: str | None
    if device.type != "cpu":
        reason = "it is built for CPUs"
    elif quantization == "bnb8":
        reason = "bitsandbytes needs transformers' model classes"
    else:
        reason = native_support(config)
    if reason is None:
        return "native"
    _fall_back(fallbacks, "native decoder", reason, "transformers")
    return "transformers"


def warm_up(bundle: LoadedModel) -> None:
    """Run a few decode steps so lazy initialisation (and compilation) happens before users.

    Two prompt lengths and several steps each: a compiled forward pass sees prompt and cache
    lengths change, marks them dynamic and recompiles here, not in a user's first reply.
    """
    for text in ("Hello", "Hello, how are you today? Tell me about yourself."):
        prompt = bundle.tokenizer(text, add_special_tokens=False)["input_ids"] or [0]
        params = SamplingParams(max_new_tokens=8)
        for _ in decode_tokens(bundle.model, prompt, params, frozenset()):
            pass


def _compile_with_fallback(bundle: LoadedModel, fallbacks: list[str]) -> None:
    """Compile the forward pass and prove it with a warm-up; fall back to eager on failure."""
    model = bundle.model
    if isinstance(model, NativeDecoder):
        # Measured on 2 cores: dynamo cannot trace fbgemm's packed weights; compiling the ops
        # between matmuls made a Qwen3-0.6B step slower (41 ms against 35 ms eager), and
        # inductor's own int8 weight-only GEMV ran 5x slower than `_weight_int8pack_mm`.
        _fall_back(fallbacks, "torch.compile", "no gain for the native decoder", "eager mode")
        return
    eager_forward = model.forward
    try:
        # dynamic=True: the prompt length and KV length change every call.
        model.forward = torch.compile(eager_forward, dynamic=True)
        warm_up(bundle)
        bundle.compiled = True
    except Exception as error:  # noqa: BLE001  compile failures share no base class
        model.forward = eager_forward
        reason = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:160]}"
        _fall_back(fallbacks, "torch.compile", reason, "eager mode")


def _load_model(
    settings: EngineSettings,
    source: ModelSource,
    config: Any,
    *,
    device: torch.device,
    dtype: torch.dtype,
    fallbacks: list[str],
    progress: ProgressCallback,
) -> tuple[PreTrainedModel | NativeDecoder, str, str]:
    """(model, backend, quantization in effect) for the settings on this machine."""
    quantization = settings.quantization
    if quantization == "auto":
        quantization = "int8" if device.type == "cpu" else "none"
    backend = _choose_backend(settings, device, quantization, config, fallbacks)
    if backend == "native" and quantization != "bnb8":  # (bnb8 never chooses native)

        def fall_back(what: str, why: object, instead: str) -> None:
            _fall_back(fallbacks, what, why, instead)

        reduce_range = not cpu_has_vnni()
        scheme = choose_scheme(quantization, dtype, reduce_range, fall_back)
        label = f"Loading weights ({scheme}, native decoder)"
        progress(label, 0.15)
        decoder = load_native(
            source,
            config,
            scheme=scheme,
            dtype=dtype,
            reduce_range=reduce_range,
            progress=lambda done: progress(label, 0.15 + 0.55 * done),
        )
        return decoder, "native", scheme
    progress(f"Loading weights ({str(dtype).removeprefix('torch.')})", 0.15)
    model, effective = _load_transformers(source, quantization, device, dtype, fallbacks)
    return model, "transformers", effective


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
    config = load_config(source)
    model, backend, quantization = _load_model(
        settings,
        source,
        config,
        device=device,
        dtype=dtype,
        fallbacks=fallbacks,
        progress=progress,
    )
    generation_config = getattr(model, "generation_config", None)
    if generation_config is None:
        generation_config = load_generation_config(source, config)
    bundle = LoadedModel(
        model=model,
        config=config,
        tokenizer=tokenizer,
        source=source,
        device=device,
        dtype=dtype,
        backend=backend,
        quantization=quantization,
        compiled=False,
        threads=threads,
        fingerprint=model_fingerprint(source, getattr(config, "_commit_hash", None)),
        stop_ids=stop_token_ids(tokenizer, generation_config),
        fallbacks=fallbacks,
    )
    if settings.compile:
        progress("Compiling (torch.compile, can take a minute)", 0.7)
        _compile_with_fallback(bundle, fallbacks)
    if settings.warmup and not bundle.compiled:
        progress("Warming up", 0.9)
        warm_up(bundle)
    progress("Ready", 1.0)
    return bundle
