"""Conversation state kept between turns, so a chat's next prompt reads only its new tokens.

After a reply, its sequence's KV cache (system prompt, history, the new question and the
answer so far) is kept here under a memory budget, least recently used first out. The next
prompt that begins with the same tokens continues from it: its own chat takes the state,
another chat (one sharing the system prompt, say) gets a copy of the shared prefix. Matching
is by tokens, so an edited or trimmed history simply matches less, and a chat's reset
forgets its state at once.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from dataclasses import dataclass

import torch

from engine.native.kv_cache import KVCache

MIN_MATCH = 16  # shorter shared prefixes are not worth a lookup's copy


@dataclass(eq=False)
class Kept:
    """One conversation's state: the tokens whose keys and values `cache` holds."""

    conversation: str | None
    ids: torch.Tensor  # int64 [cache.length]
    cache: KVCache


@dataclass(frozen=True)
class PrefixUsage:
    """Counters for /stats."""

    lookups: int
    hits: int
    tokens_saved: int
    bytes_in_use: int
    entries: int


class PrefixCache:
    """Kept conversation states, bounded by budget_bytes (0 keeps nothing)."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._kept: OrderedDict[int, Kept] = OrderedDict()  # least recently used first
        self._keys = itertools.count()
        self._lookups = self._hits = self._saved = 0
        self._lock = threading.Lock()  # the worker uses it; a chat's reset and /stats too

    def take(self, ids: list[int], conversation: str | None) -> tuple[KVCache, int] | None:
        """The longest kept prefix of ids (leaving one token to read for the logits), as a
        cache to extend and its length; None when nothing useful is kept."""
        with self._lock:
            return self._take(ids, conversation)

    def _take(self, ids: list[int], conversation: str | None) -> tuple[KVCache, int] | None:
        self._lookups += 1
        wanted = torch.tensor(ids, dtype=torch.int64)
        best: tuple[int, int] | None = None  # (matched, key)
        for key, kept in self._kept.items():
            matched = _common_prefix(kept.ids, wanted)
            if (
                best is None
                or matched > best[0]
                or (matched == best[0] and kept.conversation == conversation)
            ):
                best = (matched, key)
        if best is None:
            return None
        matched, key = min(best[0], len(ids) - 1), best[1]
        if matched < MIN_MATCH:
            return None
        kept = self._kept[key]
        if kept.conversation == conversation and conversation is not None:
            del self._kept[key]  # its own chat moves on: the state is extended in place
            cache = kept.cache
            cache.truncate(matched)
        else:
            self._kept.move_to_end(key)
            cache = kept.cache.copy_prefix(matched)
        self._hits += 1
        self._saved += matched
        return cache, matched

    def keep(self, ids: list[int], cache: KVCache, conversation: str | None) -> None:
        """Keep a finished sequence's state (ids: the tokens its cache holds)."""
        with self._lock:
            if conversation is not None:
                self._forget(conversation)  # a chat's newest turn supersedes its older state
            if cache.length < MIN_MATCH or cache.nbytes > self.budget_bytes:
                return
            ids_tensor = torch.tensor(ids[: cache.length], dtype=torch.int64)
            self._kept[next(self._keys)] = Kept(conversation, ids_tensor, cache)
            while self._bytes() > self.budget_bytes:
                self._kept.popitem(last=False)

    def forget(self, conversation: str) -> None:
        """Drop what a conversation keeps (its history was reset)."""
        with self._lock:
            self._forget(conversation)

    def usage(self) -> PrefixUsage:
        """Hit counters and memory, for /stats."""
        with self._lock:
            return PrefixUsage(
                self._lookups, self._hits, self._saved, self._bytes(), len(self._kept)
            )

    def _forget(self, conversation: str) -> None:
        for key in [k for k, kept in self._kept.items() if kept.conversation == conversation]:
            del self._kept[key]

    def _bytes(self) -> int:
        return sum(kept.cache.nbytes for kept in self._kept.values())


def _common_prefix(a: torch.Tensor, b: torch.Tensor) -> int:
    """How many leading tokens a and b share."""
    n = min(a.shape[0], b.shape[0])
    differ = torch.nonzero(a[:n] != b[:n])
    return int(differ[0, 0]) if differ.numel() else n
