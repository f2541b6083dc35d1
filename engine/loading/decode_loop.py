"""Prefill and per-token decode as small plain functions (the gpt-fast shape), over either
backend's model: the warm-up runs them first, the worker's model runner steps them."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from engine.native.kv_cache import KVCache
from engine.native.model import NativeDecoder

if TYPE_CHECKING:  # transformers' model classes cost ~1 s to import; the native path needs none
    from transformers import DynamicCache, PreTrainedModel

    from engine.text.tokenizing import TextTokenizer


@dataclass(frozen=True)
class SamplingParams:
    """How the next token is chosen; temperature 0 means greedy."""

    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    ignore_stop: bool = False  # benchmarks: always generate max_new_tokens
    stop: tuple[str, ...] = ()  # text that ends the reply, itself not shown

    @property
    def deterministic(self) -> bool:
        """Greedy, or sampling with a fixed seed: the same prompt always gives the same reply."""
        return self.temperature == 0.0 or self.seed is not None


def cache_argument(model: PreTrainedModel) -> str:
    """transformers 5.x names the KV-cache argument `cache`; 4.x called it `past_key_values`."""
    parameters = inspect.signature(type(model).forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def forward_last_logits(
    model: PreTrainedModel, input_ids: torch.Tensor, cache: DynamicCache, cache_arg: str
) -> torch.Tensor:
    """input_ids [1, T] -> logits of the last position [vocab], extending the KV cache."""
    # logits_to_keep=1 skips the vocab-sized head for every prompt position but the last.
    kv = {cache_arg: cache}
    output = model(input_ids=input_ids, use_cache=True, logits_to_keep=1, **kv)
    return output.logits[0, -1, :]  # type: ignore[no-any-return]


def sample_token(
    logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None
) -> int:
    """logits [vocab] -> token id (argmax, or temperature + nucleus sampling)."""
    if params.temperature == 0.0:
        return int(torch.argmax(logits).item())
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, sorted_ids = torch.sort(probs, descending=True)
        cumulative = torch.cumsum(sorted_probs, dim=-1)
        # Keep the smallest set whose mass reaches top_p (the first token is always kept).
        sorted_probs[(cumulative - sorted_probs) > params.top_p] = 0.0
        choice = torch.multinomial(sorted_probs, 1, generator=generator)
        return int(sorted_ids[choice].item())
    return int(torch.multinomial(probs, 1, generator=generator).item())


def token_stepper(
    model: PreTrainedModel | NativeDecoder, cache: KVCache | None, needed: int
) -> Callable[[list[int]], torch.Tensor]:
    """A function from the next token ids to the logits after them, over a fresh cache."""
    if isinstance(model, NativeDecoder):
        native_cache = cache if cache is not None else model.new_cache(needed)
        native_cache.reset()
        return lambda ids: model.forward(torch.tensor(ids, dtype=torch.long), native_cache)
    from transformers import DynamicCache  # noqa: PLC0415  (see TYPE_CHECKING above)

    hf_cache = DynamicCache(config=model.config)
    cache_arg = cache_argument(model)
    device = model.device
    return lambda ids: forward_last_logits(
        model, torch.tensor([ids], dtype=torch.long, device=device), hf_cache, cache_arg
    )


def decode_tokens(
    model: PreTrainedModel | NativeDecoder,
    prompt_ids: list[int],
    params: SamplingParams,
    stop_ids: frozenset[int],
    should_stop: Callable[[], bool] = lambda: False,
    *,
    cache: KVCache | None = None,
) -> Iterator[int]:
    """Yield generated token ids one by one; a stop token is yielded and ends the stream.

    should_stop is checked before each decode step, so cancelling costs at most one step.
    A native decoder reuses `cache` (cleared first) when given one.
    """
    generator: torch.Generator | None = None
    if params.temperature > 0.0:
        device = torch.device("cpu") if isinstance(model, NativeDecoder) else model.device
        generator = torch.Generator(device=device)
        generator.manual_seed(params.seed if params.seed is not None else torch.seed())
    with torch.inference_mode():
        step = token_stepper(model, cache, len(prompt_ids) + params.max_new_tokens)
        logits = step(prompt_ids)
        for index in range(params.max_new_tokens):
            token = sample_token(logits, params, generator)
            yield token
            if token in stop_ids or index + 1 == params.max_new_tokens or should_stop():
                return
            logits = step([token])


def warm_up(model: PreTrainedModel | NativeDecoder, tokenizer: TextTokenizer) -> None:
    """Run a few decode steps so lazy initialisation (and compilation) happens before users.

    Two prompt lengths and several steps each: a compiled forward pass sees prompt and cache
    lengths change, marks them dynamic and recompiles here, not in a user's first reply.
    """
    if isinstance(model, NativeDecoder):
        # Nothing compiles: one prompt long enough for the prompt path's GEMM (oneDNN sets up
        # on its first call) and two decode steps (OpenMP's threads, every weight paged in)
        # do it all; the compiled model's sixteen steps cost 0.4 s more at every start.
        text = "Hello, how are you today? Tell me about yourself, and about the weather. " * 2
        prompt = tokenizer(text, add_special_tokens=False)["input_ids"] or [0]
        for _ in decode_tokens(model, prompt, SamplingParams(max_new_tokens=3), frozenset()):
            pass
        return
    for text in ("Hello", "Hello, how are you today? Tell me about yourself."):
        prompt = tokenizer(text, add_special_tokens=False)["input_ids"] or [0]
        params = SamplingParams(max_new_tokens=8)
        for _ in decode_tokens(model, prompt, params, frozenset()):
            pass
