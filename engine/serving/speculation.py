"""Speculative decoding by prompt lookup: guess a greedy reply's next tokens from the
conversation itself, and let one batched step check them all.

Chat answers repeat their input (summaries, code fixes, lists, quoted names): when the last
few tokens already appeared in the prompt or the answer so far, the tokens that followed
them there are a good guess for what comes next. The native decoder's batched step computes
every row exactly as it would alone, so the model's own greedy choice after each guessed
token comes out of one step, bit for bit what one-by-one decoding gives: the longest run of
right guesses is kept, plus the model's next token. No draft model at all.

Only greedy replies are guessed for (a sampled reply would need the rejection rule to keep
its distribution; it is decoded one token at a time). A sequence whose guesses keep
failing backs off (fewer guesses, then none for a while), so open-ended chat pays for
almost no wasted rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

NGRAMS = (4, 3, 2)  # the tail lengths looked up, longest first (one token matches too often)
FIRST_GUESS = 4  # tokens guessed at first; grows by 2 after a fully right guess
COOLDOWN_CAP = 16  # steps without guessing, at most, after guesses that all failed


@dataclass
class DraftState:
    """One sequence's lookup index and how well its guesses have been doing."""

    context: list[int] = field(default_factory=list)  # prompt and reply so far
    index: dict[tuple[int, ...], int] = field(default_factory=dict)  # n-gram -> last start
    guess: int = FIRST_GUESS
    misses: int = 0  # consecutive steps whose guesses all failed
    resting: int = 0  # steps left without guessing

    def extend(self, tokens: list[int]) -> None:
        """Add tokens to the context; index every n-gram that now has a token after it."""
        for token in tokens:
            self.context.append(token)
            end = len(self.context) - 1  # the n-grams ending just before the new token
            for n in NGRAMS:
                if end >= n:
                    self.index[tuple(self.context[end - n : end])] = end - n

    def lookup(self, limit: int) -> list[int]:
        """Up to `limit` tokens that followed the latest earlier occurrence of the tail."""
        for n in NGRAMS:
            if len(self.context) <= n:
                continue
            start = self.index.get(tuple(self.context[-n:]))
            if start is not None:
                return self.context[start + n : start + n + limit]
        return []


class Speculator:
    """Guesses for a step's greedy sequences, within a budget of extra rows per step."""

    def __init__(self, max_guess: int, max_rows: int) -> None:
        self.max_guess = max_guess
        self.max_rows = max_rows  # rows in one step, the sequences' own included

    def drafts(self, sequences: list[tuple[DraftState | None, list[int], int]]) -> list[list[int]]:
        """For each (state, tokens new since last time, room left): the guessed tokens; a
        sequence without a state (a sampled reply) gets none."""
        budget = max(0, self.max_rows - len(sequences))
        guesses: list[list[int]] = []
        for state, new_tokens, room in sequences:
            if state is None:
                guesses.append([])
                continue
            state.extend(new_tokens)
            limit = min(state.guess, self.max_guess, room, budget)
            if state.resting > 0:
                state.resting -= 1
                limit = 0
            guess = state.lookup(limit) if limit > 0 else []
            budget -= len(guess)
            guesses.append(guess)
        return guesses

    def record(self, state: DraftState, proposed: int, accepted: int) -> None:
        """Adapt a sequence's next guess to how this one did."""
        if proposed == 0:
            return
        if accepted == proposed:
            state.guess = min(self.max_guess, state.guess + 2)
            state.misses = 0
        elif accepted == 0:
            state.misses += 1
            state.guess = max(1, state.guess // 2)
            state.resting = min(COOLDOWN_CAP, 2**state.misses - 1)
        else:
            state.guess = max(1, accepted + 1)
            state.misses = 0
