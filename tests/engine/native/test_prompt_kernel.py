"""The prompt kernel: integer activations in blocks of 32 against packed weights, on AMX,
AVX-512 VNNI and plain C alike, and the plan that picks it per CPU."""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import pytest
import torch

from engine.native import kernel_builder
from engine.native.cpu_features import AMX_FLAGS, cpu_flags
from engine.native.kernel_builder import pointer
from engine.native.packed_linear import (
    AMX_INT_ROWS,
    ActivationBits,
    Bits,
    PackedLinear,
    PackedWeights,
    PromptPlan,
    block_quantise,
    dequantise,
    prompt_plan,
)


def block_activations(x: torch.Tensor, bits: ActivationBits) -> torch.Tensor:
    """x as the kernel sees it: each block of 32 rounded to 127 or 16383 steps of its max."""
    top = 127.0 if bits == 8 else 16383.0
    blocks = x.float().reshape(x.shape[0], -1, 32)
    scales = blocks.abs().amax(dim=-1, keepdim=True) / top
    steps = torch.where(scales > 0, torch.round(blocks / scales.clamp(min=1e-30)), 0.0)
    return (steps * scales).reshape(x.shape)


def run_kernel(
    library: ctypes.CDLL, weights: PackedWeights, x: torch.Tensor, bits: ActivationBits, path: int
) -> torch.Tensor:
    """qb_prompt_linear through one library on one path (2 AMX, 1 VNNI, 0 plain C); the
    output in x's dtype."""
    out = torch.empty(x.shape[0], weights.out_features, dtype=x.dtype)
    status = library.qb_prompt_linear(
        pointer(weights.packed), pointer(weights.scales), weights.bits, pointer(x),
        x.dtype == torch.bfloat16, pointer(out), out.dtype == torch.bfloat16, x.shape[0],
        weights.out_features, weights.in_features, bits == 16, 2, path,
    )  # fmt: skip
    assert status == 0
    return out


@pytest.fixture
def layer() -> PackedLinear:
    torch.manual_seed(0)
    weight = torch.randn(96, 256) * 0.02
    weight[:, 7] *= 30  # an outlier input channel, as real checkpoints have
    return PackedLinear(weight, None, 8)


@pytest.mark.parametrize("weight_bits", [8, 4])
@pytest.mark.parametrize("bits", [16, 8])
def test_the_kernel_computes_block_quantised_activations_times_the_weights(
    weight_bits: Bits, bits: ActivationBits
) -> None:
    torch.manual_seed(1)
    weight = torch.randn(64, 256) * 0.02
    bias = torch.randn(64)
    layer = PackedLinear(weight, bias, weight_bits)
    x = torch.randn(21, 256)
    x[:, 3] *= 50  # an outlier activation: its block's neighbours lose precision, no others
    got = layer.prompt(x, torch.float32, bits)
    weights = dequantise(*block_quantise(weight, weight_bits), weight_bits)
    expected = block_activations(x, bits) @ weights.T + bias
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_sixteen_bits_follow_the_exact_product_closer_than_eight(layer: PackedLinear) -> None:
    x = torch.randn(40, 256)
    exact = x @ layer.weight.rows(torch.arange(96)).T
    error = {
        bits: ((layer.prompt(x, torch.float32, bits) - exact).norm() / exact.norm()).item()
        for bits in (16, 8)
    }
    assert error[16] < error[8] / 10 and error[8] < 0.02


@pytest.mark.parametrize("bits", [16, 8])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_path_and_the_portable_build_agree_to_the_bit(
    layer: PackedLinear, bits: ActivationBits, dtype: torch.dtype
) -> None:
    fast = kernel_builder.kernels()
    portable = kernel_builder.load(kernel_builder.build(("-DQB_PORTABLE",)))
    assert portable.qb_prompt_path() == 0
    x = torch.randn(37, 256).to(dtype)  # two groups of 16 and a part
    # A path this CPU lacks falls back to the next one down: the call still runs.
    outputs = [run_kernel(fast, layer.weight, x, bits, path) for path in (2, 1, 0)]
    outputs.append(run_kernel(portable, layer.weight, x, bits, 2))
    for other in outputs[1:]:
        assert torch.equal(outputs[0], other)


@pytest.mark.parametrize("bits", [16, 8])
def test_a_row_comes_out_the_same_whatever_rows_share_its_pass(bits: ActivationBits) -> None:
    # A prompt read whole or in chunks, alone or beside other chats' prompts, must fill
    # the cache alike. K = 4096 makes the kernel's chunks of rows 64 rows long: 150 rows
    # cross two chunk boundaries.
    torch.manual_seed(2)
    layer = PackedLinear(torch.randn(32, 4096) * 0.02, None, 8)
    x = torch.randn(150, 4096).bfloat16()
    whole = layer.prompt(x, torch.bfloat16, bits)
    for start, stop in ((0, 1), (5, 9), (60, 70), (131, 150)):
        assert torch.equal(layer.prompt(x[start:stop], torch.bfloat16, bits), whole[start:stop])


def test_zero_rows_and_zero_blocks_give_zeros(layer: PackedLinear) -> None:
    x = torch.zeros(3, 256)
    x[1, :32] = 1.0  # one block with values, the rest all zero
    got = layer.prompt(x, torch.float32, 16)
    assert torch.equal(got[0], torch.zeros(96)) and torch.equal(got[2], torch.zeros(96))
    assert torch.allclose(got[1], layer.weight.rows(torch.arange(96))[:, :32].sum(1), atol=1e-4)


def test_the_plan_reads_the_setting_and_the_cpu() -> None:
    assert prompt_plan("bf16") == PromptPlan(0, 0)
    assert prompt_plan("int8") == PromptPlan(8, sys.maxsize)
    assert prompt_plan("int16").name() == "int16"
    auto = prompt_plan("auto")
    library = kernel_builder.kernels()
    if not library.qb_vnni():
        assert auto == PromptPlan(0, 0)  # the plain C path: torch's bf16 is faster
    elif library.qb_prompt_path() == 2:
        assert auto == PromptPlan(16, AMX_INT_ROWS)  # AMX: long passes on bf16 tiles
        assert auto.bits_for(AMX_INT_ROWS - 1) == 16 and auto.bits_for(AMX_INT_ROWS) == 0
        assert auto.name() == f"int16 below {AMX_INT_ROWS} rows, else bf16"
    else:
        assert auto == PromptPlan(16, sys.maxsize)


def test_limiting_onednn_below_amx_hides_amx_from_our_kernels_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    every = cpu_flags()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
    assert cpu_flags() == every
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")  # as a Zen 4 or 5 runs
    assert cpu_flags() == every - AMX_FLAGS


def test_a_decoder_reads_its_prompts_by_its_plan(tiny_model_dir: Path) -> None:
    from tests.engine.native.test_native_decoder import IDS, native

    decoder = native(tiny_model_dir, "int8", torch.bfloat16)
    logits = {}
    with torch.inference_mode():
        for plan in (PromptPlan(0, 0), PromptPlan(16, sys.maxsize), PromptPlan(8, sys.maxsize)):
            decoder.prompt_plan = plan
            logits[plan.bits] = decoder.forward(IDS, decoder.new_cache(64))
        decoder.prompt_plan = PromptPlan(16, len(IDS))  # this prompt is too long for it
        too_long = decoder.forward(IDS, decoder.new_cache(64))
    assert torch.equal(too_long, logits[0])  # read on bf16
    assert not torch.equal(logits[16], logits[0])  # the integer path ran
    bf16_error = (logits[0] - logits[16]).abs().max()
    assert bf16_error < 0.05 * logits[0].abs().max()
    assert (logits[8] - logits[0]).abs().max() > bf16_error  # 8 bits stray further
