"""Runs a step's plan on the model: prompt chunks in one pass, then one batched decode step.

The native decoder batches: all chunks of a step share one pass of dense matmuls, and every
decoding sequence advances in one call whose weights are read once for the whole batch.
transformers' models (other architectures, CUDA) run each sequence alone within the step,
reading a prompt whole: they still interleave, without the batching speed-up.
"""

from __future__ import annotations

import torch

from engine.loading.bootstrap import LoadedModel
from engine.loading.decode_loop import cache_argument, forward_last_logits, sample_token
from engine.native.model import NativeDecoder
from engine.serving.prefix_cache import PrefixCache
from engine.serving.sequence import Sequence


class ModelRunner:
    """Owns the model's per-sequence state; used by the worker thread only."""

    def __init__(
        self, bundle: LoadedModel, prefix_cache: PrefixCache | None, conversation_tokens: int
    ) -> None:
        self.bundle = bundle
        # A conversation's cache takes room for its longest turn at once (address space only
        # until written): a kept chat's next turns then never copy their history to grow.
        self.conversation_tokens = conversation_tokens
        self.model = bundle.model
        self.native = isinstance(self.model, NativeDecoder)
        self.prefix_cache = prefix_cache if self.native else None
        model = self.model
        self._cache_arg = None if isinstance(model, NativeDecoder) else cache_argument(model)

    def attach(self, sequence: Sequence) -> None:
        """Give an admitted sequence its state: a kept prefix when one matches, else empty."""
        params = sequence.job.params
        if params.temperature > 0.0:
            generator = torch.Generator(device=self.bundle.device)
            generator.manual_seed(params.seed if params.seed is not None else torch.seed())
            sequence.generator = generator
        if not isinstance(self.model, NativeDecoder):
            # Imported here: transformers' model code costs ~1 s that the native path skips.
            from transformers import DynamicCache  # noqa: PLC0415

            sequence.state = DynamicCache(config=self.model.config)
            return
        needed = len(sequence.prompt_ids) + params.max_new_tokens
        room = min(max(needed, self.conversation_tokens), self.model.config.max_positions)
        found = None
        if self.prefix_cache is not None:
            found = self.prefix_cache.take(sequence.prompt_ids, sequence.job.conversation)
        if found is None:
            sequence.state = self.model.new_cache(room)
            return
        cache, matched = found
        cache.allow(room)
        cache.reserve(min(needed, room))  # a copy only where the room could not be had at once
        sequence.state, sequence.computed = cache, matched
        sequence.output.reused_tokens = matched

    def prefill(self, chunks: list[tuple[Sequence, int]]) -> list[tuple[Sequence, int]]:
        """Read each sequence's next `count` prompt tokens; returns the first sampled token
        of every sequence whose prompt is now read."""
        with torch.inference_mode():
            if isinstance(self.model, NativeDecoder):
                batch = [
                    (_ids(seq.prompt_ids[seq.computed : seq.computed + count]), seq.state)
                    for seq, count in chunks
                ]
                hidden = self.model.read_prompts(batch)
                for seq, count in chunks:
                    seq.computed += count
                done = [row for row, (seq, _) in enumerate(chunks) if seq.unread == 0]
                if not done:
                    return []
                logits = self.model.logits(hidden[done])
                return [
                    (chunks[row][0], self._sample(chunks[row][0], logits[i]))
                    for i, row in enumerate(done)
                ]
            sampled = []
            for seq, count in chunks:  # whole prompts (the scheduler does not chunk these)
                ids = seq.prompt_ids[seq.computed : seq.computed + count]
                seq.computed += count
                sampled.append((seq, self._sample(seq, self._hf_logits(seq, ids))))
            return sampled

    def decode(self, sequences: list[Sequence]) -> list[int]:
        """Feed each sequence its last sampled token; returns the next one of each."""
        tokens = [seq.next_token for seq in sequences]
        with torch.inference_mode():
            if isinstance(self.model, NativeDecoder):
                ids = torch.tensor(tokens, dtype=torch.long)
                logits = self.model.decode(ids, [seq.state for seq in sequences])
                return [self._sample(seq, logits[row]) for row, seq in enumerate(sequences)]
            return [
                self._sample(seq, self._hf_logits(seq, [token]))
                for seq, token in zip(sequences, tokens, strict=True)
            ]

    def release(self, sequence: Sequence) -> None:
        """A finished sequence gives its state back: kept for the chat's next turn, or freed."""
        state, sequence.state = sequence.state, None
        if self.prefix_cache is not None and state is not None:
            tokens = sequence.tokens_in_state()
            self.prefix_cache.keep(tokens, state, sequence.job.conversation)

    def _sample(self, sequence: Sequence, logits: torch.Tensor) -> int:
        return sample_token(logits, sequence.job.params, sequence.generator)

    def _hf_logits(self, sequence: Sequence, ids: list[int]) -> torch.Tensor:
        assert self._cache_arg is not None and not isinstance(self.model, NativeDecoder)
        tensor = torch.tensor([ids], dtype=torch.long, device=self.model.device)
        return forward_last_logits(self.model, tensor, sequence.state, self._cache_arg)


def _ids(ids: list[int]) -> torch.Tensor:
    return torch.tensor(ids, dtype=torch.long)
