"""The native decoder against transformers' own forward pass, scheme by scheme."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers

from engine.loading.checkpoint import SafetensorsReader, safetensors_files
from engine.loading.native_weights import build_decoder
from engine.native.kv_cache import GROWTH_STEP, KVCache
from engine.native.linear import Scheme
from engine.native.model import NativeDecoder


def native(
    folder: Path, scheme: Scheme = "none", dtype: torch.dtype = torch.float32
) -> NativeDecoder:
    config = transformers.AutoConfig.from_pretrained(folder)
    reader = SafetensorsReader(safetensors_files(folder))
    return build_decoder(config, reader, scheme=scheme, dtype=dtype, reduce_range=True)


def reference_logits(folder: Path, ids: torch.Tensor) -> torch.Tensor:
    """transformers, fp32, whole sequence at once: logits [T, vocab]."""
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    with torch.inference_mode():
        return model.train(False)(input_ids=ids[None]).logits[0].float()


def stepwise_logits(decoder: NativeDecoder, ids: torch.Tensor, prompt: int) -> torch.Tensor:
    """Prefill `prompt` tokens, then decode the rest one by one: logits from position
    prompt-1 on, [T - prompt + 1, vocab]."""
    cache = decoder.new_cache(4096)
    with torch.inference_mode():
        rows = [decoder.forward(ids[:prompt], cache)]
        rows += [decoder.forward(ids[i : i + 1], cache) for i in range(prompt, len(ids))]
    return torch.stack(rows)


IDS = torch.tensor([151644, 872, 198, 9707, 11, 1246, 525, 498, 30, 151645, 198, 151644, 77091])


def test_fp32_matches_transformers_at_prefill_and_every_decode_step(tiny_model_dir: Path) -> None:
    expected = reference_logits(tiny_model_dir, IDS)[6:]
    got = stepwise_logits(native(tiny_model_dir), IDS, prompt=7)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)
    assert torch.equal(got.argmax(-1), expected.argmax(-1))


@pytest.mark.parametrize(
    ("scheme", "min_cosine"),
    [("int8-dynamic", 0.995), ("int8", 0.9995), ("int8-torch", 0.999), ("int4", 0.97)],
)
def test_quantised_schemes_track_fp32(
    tiny_model_dir: Path, scheme: Scheme, min_cosine: float
) -> None:
    expected = reference_logits(tiny_model_dir, IDS)[6:]
    got = stepwise_logits(native(tiny_model_dir, scheme, torch.bfloat16), IDS, prompt=7)
    cosine = torch.nn.functional.cosine_similarity(got, expected, dim=-1)
    assert cosine.min() > min_cosine


def test_a_cached_prefix_continues_exactly(tiny_model_dir: Path) -> None:
    decoder = native(tiny_model_dir)
    ids = torch.arange(1000, 1000 + GROWTH_STEP + 44)
    one_go = decoder.new_cache(4096)
    in_two = decoder.new_cache(4096)
    with torch.inference_mode():
        whole = decoder.forward(ids, one_go)
        decoder.forward(ids[:200], in_two)  # a reused prefix, then several new tokens at once
        continued = decoder.forward(ids[200:], in_two)
    assert in_two.capacity == 4096 and in_two.length == len(ids)  # its room, taken at once
    assert torch.allclose(whole, continued, atol=1e-4, rtol=1e-4)


def test_sharded_checkpoints_load_tensor_by_tensor(tiny_model_dir: Path, tmp_path: Path) -> None:
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model.save_pretrained(tmp_path, max_shard_size="8MB")
    assert len(safetensors_files(tmp_path)) > 1
    expected = stepwise_logits(native(tiny_model_dir), IDS, prompt=7)
    assert torch.equal(stepwise_logits(native(tmp_path), IDS, prompt=7), expected)


def test_tied_embeddings_share_one_int8_table(tmp_path: Path) -> None:
    from tests.support.tiny_qwen import build_tiny_qwen3

    folder = build_tiny_qwen3(tmp_path / "tied", tie_word_embeddings=True)
    decoder = native(folder, "int8", torch.float32)
    assert decoder.head.weight is decoder.embedding.packed  # type: ignore[attr-defined]
    expected = reference_logits(folder, IDS)[6:]
    got = stepwise_logits(decoder, IDS, prompt=7)
    assert torch.nn.functional.cosine_similarity(got, expected, dim=-1).min() > 0.999


@pytest.mark.parametrize("scheme", ["int8", "int8-torch"])
def test_int8_prompt_path_agrees_with_its_token_path(tiny_model_dir: Path, scheme: Scheme) -> None:
    from engine.native.packed_linear import PREFILL_ROWS as PACKED_PREFILL_ROWS

    decoder = native(tiny_model_dir, scheme, torch.bfloat16)
    ids = torch.arange(2000, 2000 + 2 * PACKED_PREFILL_ROWS)
    at_once, one_by_one = decoder.new_cache(64), decoder.new_cache(64)
    with torch.inference_mode():
        prompt_logits = decoder.forward(ids, at_once)  # de-quantised dense matmuls
        for token in ids:  # the packed int8 kernel, a row at a time
            token_logits = decoder.forward(token.view(1), one_by_one)
    cosine = torch.nn.functional.cosine_similarity(prompt_logits, token_logits, dim=0)
    assert cosine > 0.999


@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_fused_decode_step_equals_the_torch_ops_path(tiny_model_dir: Path, scheme: Scheme) -> None:
    decoder = native(tiny_model_dir, scheme, torch.bfloat16)
    assert decoder.fused is not None  # every matmul is on the compiled kernel
    # The prompt's attention in SDPA for both: the paths under test are the decode step's
    # (the C prompt kernel's bf16 tiles are compared with SDPA below).
    decoder.c_attention = False
    fused = stepwise_logits(decoder, IDS, prompt=3)
    decoder.fused = None
    assert torch.allclose(fused, stepwise_logits(decoder, IDS, prompt=3), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("scheme", "fused"), [("int8", True), ("int4", True), ("none", False)])
def test_a_decode_batch_row_equals_the_sequence_decoded_alone(
    tiny_model_dir: Path, scheme: Scheme, fused: bool
) -> None:
    decoder = native(tiny_model_dir, scheme)
    assert (decoder.fused is not None) == fused
    torch.manual_seed(0)
    prompts = [torch.randint(0, 1000, (n,)) for n in (20, 31, 17)]
    new = torch.tensor([7, 8, 9])

    def prefilled() -> list[KVCache]:
        caches = [decoder.new_cache(64) for _ in prompts]
        decoder.read_prompts(list(zip(prompts, caches, strict=True)))  # one pass for all three
        return caches

    with torch.inference_mode():
        alone = []
        for prompt, token in zip(prompts, new, strict=True):
            cache = decoder.new_cache(64)
            decoder.forward(prompt, cache)
            alone.append(decoder.decode(token.view(1), [cache])[0])
        together = decoder.decode(new, prefilled())
    for row, expected in enumerate(alone):
        # Bit-identical on the compiled kernel (each row alone); torch's matmuls may block
        # a batch differently.
        assert torch.allclose(together[row], expected, rtol=0, atol=0 if fused else 1e-5)


def test_both_prompt_attention_paths_read_a_prompt_alike(tiny_model_dir: Path) -> None:
    # Each CPU takes one path (torch's SDPA with AMX, our C kernel without): both must hold.
    decoder = native(tiny_model_dir, "int8")
    assert decoder.fused is not None
    logits = []
    for in_c in (True, False):
        decoder.c_attention = in_c
        logits.append(stepwise_logits(decoder, IDS, prompt=9))
    assert torch.allclose(logits[0], logits[1], atol=1e-2, rtol=0)
    assert torch.equal(logits[0].argmax(-1), logits[1].argmax(-1))


@pytest.mark.parametrize(("start", "count"), [(0, 19), (37, 21), (50, 1)])
def test_prompt_attention_in_c_equals_masked_attention(
    tiny_model_dir: Path, start: int, count: int
) -> None:
    decoder = native(tiny_model_dir, "int8")
    assert decoder.fused is not None
    c = decoder.config
    torch.manual_seed(0)
    cache = decoder.new_cache(start + count + 5)
    cache.reserve(start + count)
    cache.keys.normal_()
    cache.values.normal_()
    cache.length = start  # the chunk's own keys and values are already in the cache
    queries = torch.randn(count, c.heads, c.head_dim) / 4
    got = torch.full((count, c.heads * c.head_dim), float("nan"))
    decoder.fused.prompt_attention(0, queries, cache, got)
    end = start + count
    keys, values = cache.keys[0, :, :end].float(), cache.values[0, :, :end].float()
    visible = torch.arange(end)[None, :] <= torch.arange(count)[:, None] + start
    expected = torch.nn.functional.scaled_dot_product_attention(
        queries.bfloat16().float().transpose(0, 1)[None],  # the tiled kernel's bf16 queries
        keys[None],
        values[None],
        attn_mask=visible,
        scale=1.0,
        enable_gqa=True,
    )[0]
    assert got.shape == (count, c.heads * c.head_dim)
    # Where the CPU has bf16 dot products the weights are rounded to bf16 (2^-9 relative)
    # before they sum the values, as torch's bf16 attention does; else all is fp32.
    assert torch.allclose(got, expected.transpose(0, 1).reshape(count, -1), atol=1e-2)
