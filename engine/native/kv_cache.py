"""A KV cache with room for a whole conversation, so a token's keys are written, never copied.

transformers' DynamicCache concatenates a new tensor every token (a full copy of the cache
per step); here each step writes one slot in place and attention reads a view. The room for
every token the conversation may reach is taken in one allocation: the OS maps a page only
when it is first written, so room never written costs address space, not memory. A long
chat's cache then never grows by copying (growing a 1,326-token history for its sixth turn
copied it into fresh pages: 0.11-0.14 s of that turn's TTFT). Where the OS refuses so much
address space (a ulimit, strict overcommit), room is taken in steps instead.
"""

from __future__ import annotations

import torch

GROWTH_STEP = 256  # tokens: the step when the whole room cannot be had at once
PAGE = 4096  # bytes the OS maps at a time


class KVCache:
    """Keys and values of every layer: [layers, kv_heads, capacity, head_dim] each."""

    def __init__(
        self, layers: int, kv_heads: int, head_dim: int, dtype: torch.dtype, max_tokens: int
    ) -> None:
        self.max_tokens = max_tokens
        self.written = 0  # the most tokens ever stored: the pages they touched are mapped
        self._length = 0
        self._shape = (layers, kv_heads, 0, head_dim)
        self._dtype = dtype
        self.keys = torch.empty(self._shape, dtype=dtype)
        self.values = torch.empty(self._shape, dtype=dtype)

    @property
    def length(self) -> int:
        """Tokens whose keys and values are stored."""
        return self._length

    @length.setter
    def length(self, tokens: int) -> None:
        self._length = tokens
        self.written = max(self.written, tokens)

    @property
    def capacity(self) -> int:
        """Tokens that fit before the next allocation."""
        return self.keys.shape[2]

    @property
    def nbytes(self) -> int:
        """Memory the cache holds: about the pages its written tokens touched, in each
        layer's and head's row of keys and of values (unwritten room is not memory)."""
        layers, kv_heads, _, head_dim = self._shape
        row = min(self.written, self.capacity) * head_dim * self.keys.element_size()
        return 2 * layers * kv_heads * -(-row // PAGE) * PAGE

    def allow(self, tokens: int) -> None:
        """Raise the limit to `tokens` (a kept conversation taking its next turn)."""
        self.max_tokens = max(self.max_tokens, tokens)

    def copy_prefix(self, length: int) -> KVCache:
        """A new cache holding a copy of the first `length` tokens (a prefix another
        conversation keeps, such as a shared system prompt)."""
        length = min(length, self.length)
        layers, kv_heads, _, head_dim = self._shape
        copy = KVCache(layers, kv_heads, head_dim, self._dtype, self.max_tokens)
        copy.reserve(length)
        copy.keys[:, :, :length] = self.keys[:, :, :length]
        copy.values[:, :, :length] = self.values[:, :, :length]
        copy.length = length
        return copy

    def reset(self) -> None:
        """Forget every token but keep the memory for the next conversation."""
        self.length = 0

    def truncate(self, length: int) -> None:
        """Keep only the first `length` tokens (a shared prompt prefix)."""
        self.length = min(self.length, length)

    def reserve(self, tokens: int) -> None:
        """Make room for `tokens` in total: the whole limit at once where the OS allows,
        else in GROWTH_STEP steps."""
        if tokens > self.max_tokens:
            raise ValueError(f"{tokens} tokens exceed the cache limit of {self.max_tokens}")
        if tokens <= self.capacity:
            return
        try:
            self._move_to(self.max_tokens)
        except RuntimeError:  # torch's "can't allocate memory": address space is limited
            self._move_to(min(self.max_tokens, -(-tokens // GROWTH_STEP) * GROWTH_STEP))

    def _move_to(self, capacity: int) -> None:
        """New tensors of `capacity` tokens holding the stored ones (a copy, when any)."""
        layers, kv_heads, _, head_dim = self._shape
        shape = (layers, kv_heads, capacity, head_dim)
        keys = torch.empty(shape, dtype=self._dtype)
        values = torch.empty(shape, dtype=self._dtype)
        keys[:, :, : self.length] = self.keys[:, :, : self.length]
        values[:, :, : self.length] = self.values[:, :, : self.length]
        self.keys, self.values = keys, values
        self.written = self.length  # the new tensors' other pages are untouched

    def write(
        self, layer: int, keys: torch.Tensor, values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store keys/values [kv_heads, T, head_dim] after the cached tokens of this layer;
        returns every key and value so far as [1, kv_heads, length + T, head_dim] views."""
        end = self.length + keys.shape[1]
        self.keys[layer, :, self.length : end] = keys
        self.values[layer, :, self.length : end] = values
        return self.keys[layer, None, :, :end], self.values[layer, None, :, :end]
