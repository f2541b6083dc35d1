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
from engine.serving.speculation import DraftState, Speculator


class ModelRunner:
    """Owns the model's per-sequence state; used by the worker thread only."""

    def __init__(
        self,
        bundle: LoadedModel,
        prefix_cache: PrefixCache | None,
        conversation_tokens: int,
        speculator: Speculator | None = None,
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
        verifies = isinstance(model, NativeDecoder) and model.verifies
        self.speculator = speculator if verifies else None
        self.last_drafts = (0, 0)  # tokens guessed and confirmed in the last decode step

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

    def decode(self, sequences: list[Sequence]) -> list[list[int]]:
        """Feed each sequence its last sampled token; returns each one's next tokens: one,
        or (speculating) the guessed tokens the model confirmed and its own next one."""
        tokens = [seq.next_token for seq in sequences]
        self.last_drafts = (0, 0)
        with torch.inference_mode():
            if isinstance(self.model, NativeDecoder):
                drafts = self._drafts(sequences)
                if any(drafts):
                    return self._verify(self.model, sequences, drafts)
                ids = torch.tensor(tokens, dtype=torch.long)
                logits = self.model.decode(ids, [seq.state for seq in sequences])
                return [[self._sample(seq, logits[row])] for row, seq in enumerate(sequences)]
            return [
                [self._sample(seq, self._hf_logits(seq, [token]))]
                for seq, token in zip(sequences, tokens, strict=True)
            ]

    def _drafts(self, sequences: list[Sequence]) -> list[list[int]]:
        """Guessed tokens for each greedy sequence (none for sampled ones)."""
        if self.speculator is None:
            return [[] for _ in sequences]
        asked: list[tuple[DraftState | None, list[int], int]] = []
        for seq in sequences:
            if seq.job.params.temperature > 0:
                asked.append((None, [], 0))  # sampled: decoded one by one
                continue
            if seq.draft is None:
                seq.draft = DraftState()
            known = len(seq.draft.context) - len(seq.prompt_ids)
            new = [*seq.prompt_ids, *seq.generated] if known < 0 else seq.generated[known:]
            room = min(
                seq.job.params.max_new_tokens - len(seq.output.token_ids) - 1,
                seq.state.max_tokens - seq.state.length - 1,
            )
            asked.append((seq.draft, new, room))
        return self.speculator.drafts(asked)

    def _verify(
        self, model: NativeDecoder, sequences: list[Sequence], drafts: list[list[int]]
    ) -> list[list[int]]:
        """One step over every sequence's last token and guesses; keep what the model
        confirms. The cache keeps the rows that were right; the rest are overwritten later."""
        ids, caches, positions = [], [], []
        for seq, draft in zip(sequences, drafts, strict=True):
            for offset, token in enumerate([seq.next_token, *draft]):
                ids.append(token)
                caches.append(seq.state)
                positions.append(seq.state.length + offset)
        logits = model.verify(torch.tensor(ids, dtype=torch.long), caches, positions)
        row, out, proposed, confirmed = 0, [], 0, 0
        for seq, draft in zip(sequences, drafts, strict=True):
            kept = []
            for offset in range(len(draft) + 1):
                kept.append(self._sample(seq, logits[row + offset]))
                if offset == len(draft) or kept[-1] != draft[offset]:
                    break
            row += len(draft) + 1
            seq.state.length += len(kept)  # the last token read, and the guesses confirmed
            if self.speculator is not None and seq.draft is not None:
                self.speculator.record(seq.draft, len(draft), len(kept) - 1)
            proposed, confirmed = proposed + len(draft), confirmed + len(kept) - 1
            out.append(kept)
        self.last_drafts = (proposed, confirmed)
        return out

    def release(self, sequence: Sequence) -> None:
        """A finished sequence gives its state back: kept for the chat's next turn, or freed."""
        state, sequence.state = sequence.state, None
        if self.prefix_cache is not None and state is not None:
            tokens = sequence.tokens_in_state()
            # A reply that stopped inside confirmed guesses holds rows past its last token.
            state.truncate(len(tokens))
            self.prefix_cache.keep(tokens, state, sequence.job.conversation)

    def _sample(self, sequence: Sequence, logits: torch.Tensor) -> int:
        return sample_token(logits, sequence.job.params, sequence.generator)

    def _hf_logits(self, sequence: Sequence, ids: list[int]) -> torch.Tensor:
        assert self._cache_arg is not None and not isinstance(self.model, NativeDecoder)
        tensor = torch.tensor([ids], dtype=torch.long, device=self.model.device)
        return forward_last_logits(self.model, tensor, sequence.state, self._cache_arg)


def _ids(ids: list[int]) -> torch.Tensor:
    return torch.tensor(ids, dtype=torch.long)
