"""Bring a model up, stage by stage: source -> threads -> tokenizer -> weights -> model -> warm-up.

Each stage shows on the progress bar and logs one line with its duration; each fallback is
taken, logged and recorded right where it happens below.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from engine.config import EffectiveConfig, EngineSettings, Quantization
from engine.loading.checkpoint import release_free_memory
from engine.loading.decode_loop import warm_up
from engine.loading.fallbacks import Fallbacks
from engine.loading.fingerprint import model_fingerprint
from engine.loading.kept_tokenizers import tokenizer_and_config
from engine.loading.machine import (
    ThreadPlan,
    apply_threads,
    plan_threads,
    resolve_device,
    resolve_dtype,
)
from engine.loading.model_files import load_generation_config
from engine.loading.model_source import ModelSource, find_model
from engine.loading.native_backend import (
    PackedCache,
    choose_scheme,
    load_native,
    native_problem,
    packed_widths,
)
from engine.loading.plain_entry import end_ids_of
from engine.loading.stages import ProgressCallback, Stages, no_progress
from engine.native.cpu_features import cpu_has_vnni
from engine.native.model import NativeDecoder
from engine.native.packed_linear import prompt_plan
from engine.text.prompt import stop_token_ids

if TYPE_CHECKING:
    # transformers' model classes cost ~1 s to import: only the transformers backend
    # (imported where it is chosen) needs them, not the native decoder's start-up.
    from transformers import PreTrainedModel

    from engine.text.tokenizing import TextTokenizer


@dataclass
class LoadedModel:
    """The model and everything the worker needs to run it."""

    model: PreTrainedModel | NativeDecoder
    config: Any  # transformers' config, or a PlainConfig with its attributes
    tokenizer: TextTokenizer
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
            dtype=_name(self.dtype),
            backend=self.backend,
            quantization=self.quantization,
            compiled=self.compiled,
            threads=self.threads.intra_op,
            interop_threads=self.threads.inter_op,
            fallbacks=tuple(self.fallbacks),
            prompts=self._prompts(),
        )

    def _prompts(self) -> str:
        """How the packed weights read prompts ("" where the weights are not packed)."""
        if not isinstance(self.model, NativeDecoder) or not packed_widths(self.model):
            return ""
        return self.model.prompt_plan.name()


def bootstrap(settings: EngineSettings, progress: ProgressCallback = no_progress) -> LoadedModel:
    """Load and prepare the model described by settings; fallbacks are logged and recorded."""
    stages, fallbacks = Stages(progress), Fallbacks()

    # 1. Source: a local folder or .gguf, else the hub's cache, else one quick look at the hub.
    with stages.stage(f"Looking for {settings.model}", (0.0, 0.02)) as stage:
        source = find_model(settings)
        where = "local" if source.is_local else "cached" if source.cached else "on the hub"
        stage.done = f"found model {source.display_name} ({where})"

    # 2. Threads, device and dtype: torch's thread pools are fixed before any parallel work.
    with stages.stage("Setting CPU threads", (0.02, 0.05)) as stage:
        threads = apply_threads(
            plan_threads(settings.threads, settings.max_threads, settings.interop_threads)
        )
        device = resolve_device(settings.device)
        if settings.device == "cuda" and not torch.cuda.is_available():
            fallbacks.note("CUDA", "no CUDA device", "the CPU")
            device = torch.device("cpu")
        dtype = resolve_dtype(settings.dtype, device)
        stage.done = f"torch threads: {threads.describe()}; {device.type}, {_name(dtype)}"

    # 3. Tokenizer and config (a GGUF file carries both).
    with stages.stage(f"Loading tokenizer of {source.display_name}", (0.05, 0.15)) as stage:
        # Where the native decoder will run, a kept tokenizer is read without transformers.
        plain = settings.backend != "transformers" and settings.quantization != "bnb8"
        files = tokenizer_and_config(source, plain=plain and device.type == "cpu")
        tokenizer, config = files.tokenizer, files.config
        release_free_memory()  # parsing tokenizer.json leaves ~150 MB freed but resident
        stage.done = "loaded the tokenizer and config"

    # 4. Weights: on the native decoder where it runs, else transformers' model.
    model, backend, quantization = _load_weights(
        settings, source, config, device, dtype, stages, fallbacks
    )

    # 5. Model: compiled where it gains something, proven by its own warm-up.
    compiled = False
    if settings.compile and isinstance(model, NativeDecoder):
        # Measured on 2 cores: dynamo cannot trace fbgemm's packed weights; compiling the ops
        # between matmuls made a Qwen3-0.6B step slower (41 ms against 35 ms eager), and
        # inductor's own int8 weight-only GEMV ran 5x slower than `_weight_int8pack_mm`.
        fallbacks.note("torch.compile", "no gain for the native decoder", "eager mode")
    elif settings.compile and not isinstance(model, NativeDecoder):  # transformers
        from engine.loading.transformers_backend import compile_with_fallback  # noqa: PLC0415

        with stages.stage("Compiling (torch.compile, can take a minute)", (0.7, 0.9)) as stage:
            compiled = compile_with_fallback(model, tokenizer, fallbacks)
            stage.done = "compiled and warmed up" if compiled else "compile failed (eager mode)"

    # 6. Warm-up: lazy initialisation happens here, not in a user's first reply.
    if settings.warmup and not compiled:
        with stages.stage("Warming up", (0.9, 1.0)) as stage:
            warm_up(model, tokenizer)
            release_free_memory()  # the prompt pass's de-quantised layers, freed but resident
            stage.done = "warmed up"

    generation_config = getattr(model, "generation_config", None)  # transformers' model's
    if generation_config is not None:
        end_ids = end_ids_of(generation_config.eos_token_id)
    elif files.end_ids is not None:  # kept with the tokenizer
        end_ids = files.end_ids
    else:
        end_ids = end_ids_of(load_generation_config(source, config).eos_token_id)
    stages.ready()
    return LoadedModel(
        model=model,
        config=config,
        tokenizer=tokenizer,
        source=source,
        device=device,
        dtype=dtype,
        backend=backend,
        quantization=quantization,
        compiled=compiled,
        threads=threads,
        fingerprint=model_fingerprint(source, getattr(config, "_commit_hash", None)),
        stop_ids=stop_token_ids(tokenizer, end_ids),
        fallbacks=fallbacks.lines,
    )


def _load_weights(  # noqa: PLR0917  (bootstrap's stage 4, one call site)
    settings: EngineSettings,
    source: ModelSource,
    config: Any,
    device: torch.device,
    dtype: torch.dtype,
    stages: Stages,
    fallbacks: Fallbacks,
) -> tuple[PreTrainedModel | NativeDecoder, str, str]:
    """(model, backend, quantisation in effect): the native decoder with the first scheme whose
    kernel works here, else transformers' model with its own quantisation chain."""
    quantization: Quantization = settings.quantization
    if quantization == "auto":
        quantization = "int8" if device.type == "cpu" else "none"
    backend = "transformers" if settings.backend == "transformers" else "native"
    if backend == "native" and (problem := native_problem(device, quantization, config)):
        fallbacks.note("native decoder", problem, "transformers")
        backend = "transformers"
    if backend == "native" and quantization != "bnb8":  # (never bnb8: for the type checker)
        reduce_range = not cpu_has_vnni()
        scheme = choose_scheme(quantization, dtype, reduce_range, fallbacks.note)
        # A quantised GGUF file keeps its own precision unless a scheme was asked for.
        keep_blocks = settings.quantization == "auto" and scheme in {"int8", "int4"}
        cache = None
        if settings.packed_cache_mb > 0:
            fingerprint = model_fingerprint(source, getattr(config, "_commit_hash", None))
            cache = PackedCache(fingerprint, settings.packed_cache_mb)
        with stages.stage(f"Loading weights ({scheme}, native decoder)", (0.15, 0.7)) as stage:
            decoder, kept = load_native(
                source,
                config,
                scheme=scheme,
                dtype=dtype,
                reduce_range=reduce_range,
                keep_blocks=keep_blocks,
                progress=stage.advance,
                cache=cache,
            )
            if keep_blocks and source.gguf_file:
                scheme_name = f"{packed_widths(decoder)} (as in the GGUF file)"
            else:
                scheme_name = scheme
            if scheme in {"int8", "int4"}:  # the packed kernels' prompt path
                decoder.prompt_plan = prompt_plan(settings.prompt_matmul)
            where = ", mapped from the packed cache" if kept else ""
            stage.done = f"loaded weights ({scheme_name}, native decoder{where})"
        return decoder, "native", scheme_name
    with stages.stage(f"Loading weights ({_name(dtype)})", (0.15, 0.7)) as stage:
        from engine.loading.transformers_backend import load_transformers  # noqa: PLC0415

        model, effective = load_transformers(source, quantization, device, dtype, fallbacks)
        stage.done = f"loaded weights ({effective}, transformers)"
    return model, "transformers", effective


def _name(dtype: torch.dtype) -> str:
    """torch.bfloat16 -> "bfloat16", for the log lines and the start-up line."""
    return str(dtype).removeprefix("torch.")
