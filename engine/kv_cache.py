"""A pre-allocated KV cache that grows in steps, so a token's keys are written, never copied.

transformers' DynamicCache concatenates a new tensor every token (a full copy of the cache
per step); here each step writes one slot in place and attention reads a view.
"""

from __future__ import annotations

import torch

GROWTH_STEP = 256  # tokens; a chat turn rarely needs a second allocation


class KVCache:
    """Keys and values of every layer: [layers, kv_heads, capacity, head_dim] each."""

    def __init__(
        self, layers: int, kv_heads: int, head_dim: int, dtype: torch.dtype, max_tokens: int
    ) -> None:
        self.max_tokens = max_tokens
        self.length = 0  # tokens whose keys and values are stored
        self._shape = (layers, kv_heads, 0, head_dim)
        self._dtype = dtype
        self.keys = torch.empty(self._shape, dtype=dtype)
        self.values = torch.empty(self._shape, dtype=dtype)

    @property
    def capacity(self) -> int:
        """Tokens that fit before the next allocation."""
        return self.keys.shape[2]

    @property
    def nbytes(self) -> int:
        """Memory held by keys and values."""
        return self.keys.nbytes + self.values.nbytes

    def allow(self, tokens: int) -> None:
        """Raise the limit to `tokens` (a kept conversation taking its next turn)."""
        self.max_tokens = max(self.max_tokens, tokens)

    def copy_prefix(self, length: int) -> KVCache:
        """A new cache holding a copy of the first `length` tokens (a prefix another
        conversation keeps, such as a shared system prompt)."""
        length = min(length, self.length)
        layers, kv_heads, _, head_dim = self._shape
        copy = KVCache(layers, kv_heads, head_dim, self._dtype, self.max_tokens)
        copy.keys = self.keys[:, :, :length].clone()
        copy.values = self.values[:, :, :length].clone()
        copy.length = length
        return copy

    def reset(self) -> None:
        """Forget every token but keep the memory for the next conversation."""
        self.length = 0

    def truncate(self, length: int) -> None:
        """Keep only the first `length` tokens (a shared prompt prefix)."""
        self.length = min(self.length, length)

    def reserve(self, tokens: int) -> None:
        """Make room for `tokens` in total, growing in GROWTH_STEP steps up to max_tokens."""
        if tokens > self.max_tokens:
            raise ValueError(f"{tokens} tokens exceed the cache limit of {self.max_tokens}")
        if tokens <= self.capacity:
            return
        capacity = min(self.max_tokens, -(-tokens // GROWTH_STEP) * GROWTH_STEP)
        layers, kv_heads, _, head_dim = self._shape
        for name in ("keys", "values"):
            old = getattr(self, name)
            new = torch.empty((layers, kv_heads, capacity, head_dim), dtype=self._dtype)
            new[:, :, : self.length] = old[:, :, : self.length]
            setattr(self, name, new)

    def write(
        self, layer: int, keys: torch.Tensor, values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store keys/values [kv_heads, T, head_dim] after the cached tokens of this layer;
        returns every key and value so far as [1, kv_heads, length + T, head_dim] views."""
        end = self.length + keys.shape[1]
        self.keys[layer, :, self.length : end] = keys
        self.values[layer, :, self.length : end] = values
        return self.keys[layer, None, :, :end], self.values[layer, None, :, :end]
