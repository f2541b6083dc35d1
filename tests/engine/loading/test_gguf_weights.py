"""GGUF files read straight into the packed kernel's blocks, against the `gguf` package's
reference de-quantisation and against the same weights loaded from safetensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
import transformers
from gguf import GGMLQuantizationType as Kind
from gguf import quants

from engine.errors import ModelLoadFailed
from engine.loading.checkpoint import SafetensorsReader, state_dict_fetch
from engine.loading.gguf_blocks import exact_blocks
from engine.loading.gguf_tensors import GGUFMatrix, GGUFWeights
from engine.loading.kept_tokenizers import tokenizer_and_config
from engine.loading.model_source import ModelSource
from engine.loading.native_weights import build_decoder
from engine.native.linear import Scheme
from engine.native.model import NativeDecoder
from engine.native.packed_linear import BlockQuantized, PackedLinear, dequantise
from tests.support.gguf_files import random_k_quant, write_gguf
from tests.support.tiny_qwen import build_tiny_qwen3

IDS = torch.tensor([5, 17, 3, 99, 42, 7, 250, 1, 64, 128, 33])


@pytest.mark.parametrize(("kind", "bits"), [(Kind.Q8_0, 8), (Kind.Q4_0, 4), (Kind.Q4_1, 4)])
def test_block_formats_map_onto_ours_exactly(kind: Kind, bits: int) -> None:
    weights = np.random.default_rng(1).normal(size=(48, 256)).astype(np.float32)
    raw = quants.quantize(weights, kind)
    codes, scales = exact_blocks(raw, kind, 256)
    expected = torch.from_numpy(quants.dequantize(raw, kind))
    got = dequantise(codes, scales, bits)  # type: ignore[arg-type]
    assert torch.allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_q4_k_maps_onto_4_bit_blocks_with_fp16_scales() -> None:
    raw = random_k_quant(Kind.Q4_K, rows=32, k=512)
    codes, scales = exact_blocks(raw, Kind.Q4_K, 512)
    expected = torch.from_numpy(quants.dequantize(raw, Kind.Q4_K))
    got = dequantise(codes, scales, 4)
    assert codes.min() >= 0 and codes.max() <= 15
    # Each 32's d and m are rounded to fp16: a relative 2^-11 of the largest term.
    assert torch.allclose(got, expected, rtol=2e-3, atol=2e-3 * float(expected.abs().max()))


@pytest.mark.parametrize("kind", [Kind.Q5_K, Kind.Q6_K, Kind.Q5_0, Kind.Q3_K])
def test_other_formats_convert_within_half_a_step(tmp_path: Path, kind: Kind) -> None:
    shape = (32, 512)
    if kind in {Kind.Q5_K, Kind.Q6_K}:
        raw = {"model.embed_tokens.weight": (kind, random_k_quant(kind, *shape))}
        source = {"model.embed_tokens.weight": torch.zeros(shape)}
        held = write_gguf(tmp_path / "m.gguf", source, "qwen3", lambda *_: kind, raw_blocks=raw)
    else:  # quantisers exist for these: quantise normal weights
        weights = {"model.embed_tokens.weight": torch.randn(shape)}
        if kind == Kind.Q3_K:
            raw = {"model.embed_tokens.weight": (kind, _random_q3_k(*shape))}
            held = write_gguf(
                tmp_path / "m.gguf", weights, "qwen3", lambda *_: kind, raw_blocks=raw
            )
        else:
            held = write_gguf(tmp_path / "m.gguf", weights, "qwen3", lambda *_: kind)
    matrix = GGUFWeights(tmp_path / "m.gguf", "qwen3", 4, 2, keep_blocks=True)(
        "model.embed_tokens.weight"
    )
    assert isinstance(matrix, GGUFMatrix)
    expected = held["model.embed_tokens.weight"]
    assert matrix.bits == (4 if kind == Kind.Q3_K else 8)
    got = dequantise(*matrix.blocks(0, shape[0]), matrix.bits)
    block_range = expected.reshape(32, -1, 32).abs().amax(-1).repeat_interleave(32, -1)
    levels = 127 if matrix.bits == 8 else 7.5
    assert bool(((got - expected).abs() <= block_range / levels / 2 * 1.01 + 1e-6).all())


def _random_q3_k(rows: int, k: int) -> np.ndarray:
    """Random Q3_K blocks (110 bytes: 32 high bits, 64 low, 12 scales, fp16 d last)."""
    rng = np.random.default_rng(3)
    raw = rng.integers(0, 256, size=(rows * k // 256, 110), dtype=np.uint8)
    raw[:, -2:] = (
        rng.uniform(0.001, 0.004, size=(raw.shape[0], 1)).astype(np.float16).view(np.uint8)
    )
    return raw.reshape(rows, -1)


def _tiny_llama(folder: Path) -> Path:
    """A 2-layer random Llama in safetensors (SmolLM2's architecture, small)."""
    config = transformers.LlamaConfig(
        vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def _decoder(config: object, fetch: object, scheme: Scheme = "int8") -> NativeDecoder:
    """The decoder in a scheme (dense: in fp32, the reference; bf16 drifts on SmolLM2)."""
    dtype = torch.float32 if scheme == "none" else torch.bfloat16
    return build_decoder(config, fetch, scheme=scheme, dtype=dtype, reduce_range=True)  # type: ignore[arg-type]


def _logits(decoder: NativeDecoder) -> torch.Tensor:
    """Prefill 6 tokens, then decode the rest one by one (both paths of the decoder)."""
    cache = decoder.new_cache(64)
    rows = [decoder.forward(IDS[:6], cache)]
    rows += [decoder.forward(IDS[i : i + 1], cache) for i in range(6, len(IDS))]
    return torch.stack(rows)


def _as_gguf_and_safetensors(
    folder: Path, tmp_path: Path, architecture: str, kind_of: object, **raw: object
) -> tuple[object, GGUFWeights, SafetensorsReader]:
    """The model written as GGUF, and what that file holds written back as safetensors."""
    config = transformers.AutoConfig.from_pretrained(folder)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tensors = {name: t for name, t in model.state_dict().items() if name != "lm_head.weight"
               or not config.tie_word_embeddings}  # fmt: skip
    held = write_gguf(
        tmp_path / "model.gguf", tensors, architecture, kind_of,  # type: ignore[arg-type]
        heads=config.num_attention_heads, kv_heads=config.num_key_value_heads, **raw,  # type: ignore[arg-type]
    )  # fmt: skip
    safetensors.torch.save_file(
        {n: t.contiguous() for n, t in held.items()}, tmp_path / "held.safetensors"
    )
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    weights = GGUFWeights(
        tmp_path / "model.gguf", config.model_type, heads, kv_heads, keep_blocks=True
    )
    return config, weights, SafetensorsReader([tmp_path / "held.safetensors"])


@pytest.mark.parametrize("architecture", ["qwen3", "llama"])
def test_q8_0_file_gives_exactly_the_safetensors_logits(
    tiny_model_dir: Path, tmp_path: Path, architecture: str
) -> None:
    """Q8_0 blocks are our 8-bit blocks: packing them must give what quantising their
    values does, bit for bit; for Llama the converter's q/k row order is undone."""
    folder = tiny_model_dir if architecture == "qwen3" else _tiny_llama(tmp_path / "llama")
    config, weights, reader = _as_gguf_and_safetensors(
        folder, tmp_path, architecture, lambda *_: Kind.Q8_0
    )
    from_gguf, from_safetensors = _decoder(config, weights), _decoder(config, reader)
    assert torch.equal(_logits(from_gguf), _logits(from_safetensors))


def test_q4_files_give_the_safetensors_greedy_tokens(tiny_model_dir: Path, tmp_path: Path) -> None:
    kinds = {"q_proj": Kind.Q4_0, "k_proj": Kind.Q4_0}
    config, weights, reader = _as_gguf_and_safetensors(
        tiny_model_dir, tmp_path, "qwen3",
        lambda name, _: next((k for part, k in kinds.items() if part in name), Kind.Q4_1),
    )  # fmt: skip
    from_gguf, from_safetensors = _decoder(config, weights), _decoder(config, reader, "int4")
    assert torch.equal(_logits(from_gguf).argmax(-1), _logits(from_safetensors).argmax(-1))
    assert all(layer.qkv.weight.bits == 4 for layer in from_gguf.layers)  # type: ignore[attr-defined]


def test_a_q4_k_m_mix_keeps_each_width_and_follows_the_file(tmp_path: Path) -> None:
    """q, k in Q4_K and v in Q6_K fuse into one 8-bit matrix; gate/up stay 4 bits; the
    decoder (fused decode step included) follows the file's own values closely."""
    folder = build_tiny_qwen3(tmp_path / "wide", hidden_size=256)  # K-quant rows: 256 wide
    model = transformers.AutoModelForCausalLM.from_pretrained(folder)
    raw = {}
    for index, (name, tensor) in enumerate(model.state_dict().items()):
        if tensor.ndim == 2 and "embed" not in name and "lm_head" not in name:
            kind = Kind.Q6_K if "v_proj" in name or "down_proj" in name else Kind.Q4_K
            rows, k = tensor.shape
            if k % 256 == 0:
                raw[name] = (kind, random_k_quant(kind, rows, k, seed=index))
    assert raw
    config, weights, reader = _as_gguf_and_safetensors(
        folder, tmp_path, "qwen3", lambda *_: Kind.Q8_0, raw_blocks=raw
    )
    from_gguf = _decoder(config, weights)
    layer = from_gguf.layers[0]
    assert isinstance(layer.qkv, PackedLinear) and isinstance(layer.gate_up, PackedLinear)
    assert (layer.qkv.weight.bits, layer.gate_up.weight.bits) == (8, 4)
    assert layer.out.weight.bits == 4 and layer.down.weight.bits == 8  # type: ignore[attr-defined]
    dense = _logits(_decoder(config, reader, "none"))
    got = _logits(from_gguf)
    cosine = torch.nn.functional.cosine_similarity(got, dense, dim=-1)
    assert float(cosine.min()) > 0.998  # bf16 prompt matmuls, 15-bit activations, Q6_K in 8 bits


def test_real_smollm2_gguf_answers_like_its_dequantised_weights() -> None:
    """The real file from llama.cpp's converter (Llama architecture, Q4_1 and Q8_0): our
    blocks greedy-decode as transformers' de-quantisation of the same file does."""
    from tests.support.smollm2 import smollm2_gguf

    path = smollm2_gguf()
    files = tokenizer_and_config(ModelSource(str(path.parent), path.name, True, None))
    tokenizer, config = files.tokenizer, files.config
    reference = transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    )
    dense = _decoder(config, state_dict_fetch(reference), "none")
    weights = GGUFWeights(path, "llama", config.num_attention_heads, config.num_key_value_heads,
                          keep_blocks=True)  # fmt: skip
    ours = _decoder(config, weights)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt = torch.tensor(tokenizer(text)["input_ids"])

    def greedy(decoder: NativeDecoder) -> list[int]:
        cache, out = decoder.new_cache(128), []
        logits = decoder.forward(prompt, cache)
        for _ in range(10):
            out.append(int(logits.argmax()))
            logits = decoder.forward(torch.tensor(out[-1:]), cache)
        return out

    assert greedy(ours) == greedy(dense)


def test_a_format_we_cannot_read_is_refused_in_one_line(tmp_path: Path) -> None:
    write_gguf(tmp_path / "m.gguf", {"model.embed_tokens.weight": torch.zeros(4, 4)}, "qwen3",
               lambda *_: Kind.F32)  # fmt: skip
    data = bytearray((tmp_path / "m.gguf").read_bytes())
    # Re-label the one tensor as I32 (the gguf package cannot de-quantise it): 4x4 I32 is
    # as many bytes as 4x4 F32, so the file stays consistent.
    tail = data.rfind(b"token_embd.weight") + len(b"token_embd.weight")
    dims_end = tail + 4 + 2 * 8
    data[dims_end : dims_end + 4] = int(Kind.I32).to_bytes(4, "little")
    (tmp_path / "m.gguf").write_bytes(bytes(data))
    with pytest.raises(ModelLoadFailed, match=r"I32, which qwenbot cannot read; use a Q8_0"):
        GGUFWeights(tmp_path / "m.gguf", "qwen3", 4, 2, keep_blocks=True)


def test_explicit_scheme_gets_floats(tmp_path: Path) -> None:
    write_gguf(tmp_path / "m.gguf", {"model.embed_tokens.weight": torch.randn(32, 64)}, "qwen3",
               lambda *_: Kind.Q8_0)  # fmt: skip
    floats = GGUFWeights(tmp_path / "m.gguf", "qwen3", 4, 2, keep_blocks=False)(
        "model.embed_tokens.weight"
    )
    assert isinstance(floats, torch.Tensor) and not isinstance(floats, BlockQuantized)
    assert floats.shape == (32, 64)
