"""Our own forward pass for Llama-family decoders (Llama, SmolLM, Mistral, Qwen2, Qwen3).

transformers' forward is written for every model and every device; at batch 1 on a CPU
its per-token Python work and its growing cache cost as much as the weights. This is the
gpt-fast shape: fused q/k/v and gate/up projections, a cache written in place, SDPA with
grouped-query attention, and the output head run for the last position only.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence

import torch
from torch.nn import functional

from engine.native.architecture import NativeConfig, NativeLayer
from engine.native.cpu_features import cpu_flags
from engine.native.fused_step import KV_DTYPE, fused_decode_step
from engine.native.kv_cache import KVCache
from engine.native.linear import LinearKernel
from engine.native.packed_linear import PackedLinear, PromptPlan
from engine.native.parts import Embedding, RMSNorm, RotaryTable, apply_rotary


class NativeDecoder:
    """Forward pass over a KV cache: token ids in, logits of the last position out."""

    def __init__(  # noqa: PLR0917  (the parts of a decoder, built in one place)
        self,
        config: NativeConfig,
        embedding: Embedding,
        layers: list[NativeLayer],
        final_norm: RMSNorm,
        head: LinearKernel,
        rotary: RotaryTable,
        dtype: torch.dtype,
    ) -> None:
        self.config = config
        self.embedding = embedding
        self.layers = layers
        self.final_norm = final_norm
        self.head = head
        self.rotary = rotary
        self.dtype = dtype  # activations and norms
        self.fused = fused_decode_step(config, layers, dtype)  # None: torch ops per layer
        self.kv_dtype = KV_DTYPE if self.fused is not None else dtype
        self.c_attention = self.fused is not None and prompt_attention_in_c()
        # How prompt passes read packed weights; the loader sets it from
        # ENGINE__PROMPT_MATMUL (packed_linear.prompt_plan). bf16 until then.
        self.prompt_plan = PromptPlan(0, 0)

    def new_cache(self, max_tokens: int) -> KVCache:
        """An empty cache for one conversation of up to max_tokens tokens."""
        c = self.config
        limit = min(max_tokens, c.max_positions)
        return KVCache(c.layers, c.kv_heads, c.head_dim, self.kv_dtype, limit)

    def forward(self, ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """ids [T] after cache.length cached tokens -> fp32 logits [vocab] of the last one."""
        return self.logits(self.read_prompts([(ids, cache)]))[0]

    def read_prompts(self, chunks: Sequence[tuple[torch.Tensor, KVCache]]) -> torch.Tensor:
        """Prompt chunks of several sequences ([(ids [T_i], cache_i)]) in one pass: the
        matmuls see every row at once, attention runs per sequence. Each chunk's keys and
        values join its cache; returns each chunk's last hidden state [n, hidden]."""
        c = self.config
        counts = [ids.shape[0] for ids, _ in chunks]
        starts = [cache.length for _, cache in chunks]
        if sum(counts) == len(chunks):  # one token each: the decode step's path
            return self._decode_hidden(
                torch.cat([ids for ids, _ in chunks]), [c for _, c in chunks]
            )
        for (_, cache), start, count in zip(chunks, starts, counts, strict=True):
            cache.reserve(start + count)
        positions = [
            p for start, n in zip(starts, counts, strict=True) for p in range(start, start + n)
        ]
        cos, sin = (table.float().contiguous() for table in self.rotary.rows(positions))  # [N, D]
        x = self.embedding(torch.cat([ids for ids, _ in chunks]))  # [N, hidden]
        rows = x.shape[0]
        q_size, kv_size = c.heads * c.head_dim, c.kv_heads * c.head_dim
        offsets = [0, *itertools.accumulate(counts)]
        for index, layer in enumerate(self.layers):
            h = self._prompt_norm(index, "attn_norm", x)
            qk, v = torch.split(self._prompt(layer.qkv, h), [q_size + kv_size, kv_size], dim=-1)
            # Queries and keys share one norm call and one rotation: half the small ops.
            qk = qk.view(rows, c.heads + c.kv_heads, c.head_dim)
            if self.fused is not None:
                qk = self.fused.position_heads(index, qk, cos, sin)
            else:
                if layer.qk_norm is not None:
                    qk = layer.qk_norm(qk)
                qk = apply_rotary(qk, cos[:, None], sin[:, None])
            v = v.view(rows, c.kv_heads, c.head_dim)
            made = qk.dtype if self.c_attention else self.kv_dtype  # C: fp32; SDPA: the cache's
            attended = torch.empty(rows, q_size, dtype=made)  # each chunk fills its rows
            for (_, cache), lo, hi in zip(chunks, offsets, offsets[1:], strict=False):
                self._attend(index, qk[lo:hi], v[lo:hi], cache, attended[lo:hi])
            x = x + self._prompt(layer.out, attended)
            normed = self._prompt_norm(index, "mlp_norm", x)
            gate, up = self._prompt(layer.gate_up, normed).chunk(2, dim=-1)
            x = x + self._prompt(layer.down, functional.silu(gate) * up)
        for (_, cache), count in zip(chunks, counts, strict=True):
            cache.length += count
        return x[[end - 1 for end in offsets[1:]]]

    def _prompt(self, linear: LinearKernel, x: torch.Tensor) -> torch.Tensor:
        """A prompt pass's matmul on the packed weights: integer activations, or torch's bf16
        GEMM on them de-quantised (whose rows round alike whatever their count on AVX-512,
        not with AMX); bf16 out, as the next matmul reads it (fp32 round trips cost a
        quarter of an 800-token pass)."""
        if isinstance(linear, PackedLinear):
            return linear.prompt(x, torch.bfloat16, self.prompt_plan.bits_for(x.shape[0]))
        return linear(x)

    def _prompt_norm(self, index: int, norm: str, x: torch.Tensor) -> torch.Tensor:
        """A prompt pass's "attn_norm" or "mlp_norm": in C to bf16 when fused, else in torch."""
        if self.fused is not None:
            return self.fused.norm_rows(index, norm, x)
        module: RMSNorm = getattr(self.layers[index], norm)
        return module(x)

    def _attend(
        self, index: int, qk: torch.Tensor, v: torch.Tensor, cache: KVCache, out: torch.Tensor
    ) -> None:
        """One sequence's chunk: rotated qk [T, heads + kv_heads, D] and v [T, kv_heads, D]
        after its cached tokens -> attended into out [T, heads * D]; k and v join the cache."""
        c = self.config
        count, start = qk.shape[0], cache.length
        keys, values = cache.write(index, qk[:, c.heads :].transpose(0, 1), v.transpose(0, 1))
        if self.c_attention and self.fused is not None:
            self.fused.prompt_attention(index, qk[:, : c.heads], cache, out)
            return
        queries = qk[:, : c.heads].transpose(0, 1).to(keys.dtype)  # bf16 with the fused step
        attended = functional.scaled_dot_product_attention(
            queries[None],
            keys,
            values,
            attn_mask=_causal_mask(start, count, queries.dtype),
            is_causal=start == 0,  # else the mask (or, for one token, every cached key)
            scale=1.0,  # folded into the query projection
            enable_gqa=c.heads != c.kv_heads,
        )[0]
        out.copy_(attended.transpose(0, 1).reshape(count, c.heads * c.head_dim))

    def decode(self, ids: torch.Tensor, caches: Sequence[KVCache]) -> torch.Tensor:
        """ids [B], one new token for each of B sequences -> fp32 logits [B, vocab]; each
        cache advances by one. A row's result does not depend on the others (the fused
        step and the packed head compute each row alone)."""
        return self.logits(self._decode_hidden(ids, caches))

    def _decode_hidden(self, ids: torch.Tensor, caches: Sequence[KVCache]) -> torch.Tensor:
        """decode() up to the last hidden states [B, hidden], before the final norm."""
        positions = [cache.length for cache in caches]
        for cache in caches:
            cache.reserve(cache.length + 1)
        cos, sin = self.rotary.rows(positions)  # [B, D]
        x = self.embedding(ids)  # [B, hidden]
        if self.fused is not None:
            x = self.fused(x, caches, cos, sin)
        else:
            x = self._decode_layers(x, caches, positions, cos, sin)
        for cache in caches:
            cache.length += 1
        return x

    @property
    def verifies(self) -> bool:
        """Whether verify() can run: the fused step, whose rows are computed as alone."""
        return self.fused is not None

    def verify(
        self, ids: torch.Tensor, caches: Sequence[KVCache], positions: Sequence[int]
    ) -> torch.Tensor:
        """ids [R], each row at its position of its cache (a sequence's last token and the
        tokens guessed after it share its cache, at consecutive positions) -> fp32 logits
        [R, vocab]. Keys and values are written at every position; which of them count
        (the cache's length) is the caller's to set. Each row's arithmetic is the same as
        alone, so a guessed token that is right gives exactly one-by-one decoding's logits."""
        if self.fused is None:
            raise RuntimeError("verifying guessed tokens needs the fused decode step")
        for cache, position in zip(caches, positions, strict=True):
            cache.reserve(position + 1)
        cos, sin = self.rotary.rows(positions)
        x = self.fused(self.embedding(ids), caches, cos, sin, positions)
        return self.logits(x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Last hidden states [B, hidden] -> fp32 logits [B, vocab]."""
        normed = self.final_norm(x)
        if isinstance(self.head, PackedLinear):
            return self.head.rows_kernel(normed)  # a batch of rows, never a prompt GEMM
        return self.head(normed).float()

    def _decode_layers(
        self,
        x: torch.Tensor,
        caches: Sequence[KVCache],
        positions: Sequence[int],
        cos: torch.Tensor,
        sin: torch.Tensor,
    ) -> torch.Tensor:
        """The decode step in torch ops (schemes off the compiled kernel), written for the
        fewest ops: this runs once per token."""
        c = self.config
        batch = x.shape[0]
        qk_rows = c.heads + c.kv_heads
        split = qk_rows * c.head_dim
        roll = c.head_dim // 2
        fp32_softmax = self.dtype != torch.float32
        cos, sin = cos[:, None], sin[:, None]  # [B, 1, D]
        attended = torch.empty(batch, c.heads * c.head_dim, dtype=self.dtype)
        for index, layer in enumerate(self.layers):
            qkv = layer.qkv(layer.attn_norm(x))
            qk = qkv[:, :split].view(batch, qk_rows, c.head_dim)
            if layer.qk_norm is not None:
                qk = layer.qk_norm(qk)
            qk = torch.addcmul(qk * cos, qk.roll(roll, dims=-1), sin)  # see apply_rotary
            new_values = qkv[:, split:].view(batch, c.kv_heads, c.head_dim)
            for row, (cache, position) in enumerate(zip(caches, positions, strict=True)):
                length = position + 1
                keys, values = cache.keys[index], cache.values[index]  # [kv, capacity, D]
                keys[:, position] = qk[row, c.heads :]
                values[:, position] = new_values[row]
                # Grouped-query attention as two batched matmuls: a group of query heads
                # shares one K/V head. SDPA costs the same here with more ops around it.
                # (A cache made for the fused step is bf16: widened here as it does.)
                grouped = qk[row, : c.heads].view(c.kv_heads, -1, c.head_dim)
                past_keys = keys[:, :length].to(self.dtype).transpose(1, 2)
                scores = torch.bmm(grouped, past_keys)  # [kv, g, L]
                weights = torch.softmax(scores, dim=-1, dtype=torch.float32)
                if fp32_softmax:
                    weights = weights.to(self.dtype)
                attended[row] = torch.bmm(weights, values[:, :length].to(self.dtype)).view(-1)
            x = x + layer.out(attended)
            gate, up = layer.gate_up(layer.mlp_norm(x)).chunk(2, dim=-1)
            x = x + layer.down(functional.silu(gate) * up)
        return x


def prompt_attention_in_c() -> bool:
    """Whether prompt chunks attend in our C kernel rather than torch's bf16 SDPA: where the
    CPU has AMX, oneDNN's kernels behind SDPA beat ours 2-3x (2.3-3.8 ms a layer against 8.5
    for 133 tokens over 1,459 on a 2-core Xeon); without, ours beat torch's 2x (Zen 5).
    benchmarks/prompt_attention.py compares them on any CPU."""
    return "amx_bf16" not in cpu_flags()


@functools.lru_cache(maxsize=8)
def _causal_mask(start: int, count: int, dtype: torch.dtype) -> torch.Tensor | None:
    """Needed only when several new tokens follow cached ones (a reused prefix or a chunk):
    0 where a token may look, -inf where not, [T, start + T]. Made once for a pass's layers,
    and additive in the queries' dtype (SDPA converted a boolean one in every layer)."""
    if start == 0 or count == 1:
        return None
    new = torch.arange(count)[:, None] + start
    hidden = torch.arange(start + count)[None, :] > new
    return torch.zeros(hidden.shape, dtype=dtype).masked_fill_(hidden, float("-inf"))
