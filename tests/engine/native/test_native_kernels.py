"""Our compiled int8 kernels: their arithmetic, their portable twin, the fallback without cc."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from engine.loading.native_backend import choose_scheme
from engine.native import kernel_builder
from engine.native.kernel_builder import KernelUnavailable, pointer
from engine.native.linear import Int8WeightLinear, linear_factory
from engine.native.packed_linear import PREFILL_ROWS, Bits, PackedLinear, block_quantise, pack


def dequantised(weight: torch.Tensor, bits: Bits) -> torch.Tensor:
    codes, scales = block_quantise(weight, bits)
    blocks = codes.float().view(weight.shape[0], -1, 32)
    if bits == 8:
        return (blocks * scales.float()[..., None]).view_as(weight)
    d, m = scales.float().unbind(-1)
    return (blocks * d[..., None] + m[..., None]).view_as(weight)


def block_reference(weight: torch.Tensor, x: torch.Tensor, bits: Bits) -> torch.Tensor:
    """What the kernel computes, in plain torch: weights in blocks of 32, 15-bit activations
    with a scale per row."""
    weights = dequantised(weight, bits)
    x_scales = x.abs().amax(dim=-1, keepdim=True) / 16383.0
    return (torch.round(x / x_scales) * x_scales) @ weights.T


@pytest.fixture
def weight() -> torch.Tensor:
    torch.manual_seed(0)
    w = torch.randn(96, 192) * 0.02
    w[:, 7] *= 30  # an outlier input channel, as real checkpoints have
    return w


@pytest.mark.parametrize("rows", [1, 5, 15])
@pytest.mark.parametrize("bits", [8, 4])
def test_packed_linear_computes_the_block_quantised_product(
    weight: torch.Tensor, rows: int, bits: Bits
) -> None:
    x = torch.randn(rows, 192)
    x[:, 3] *= 50  # an outlier activation
    bias = torch.randn(96)
    got = PackedLinear(weight, bias, bits)(x)
    assert torch.allclose(got, block_reference(weight, x, bits) + bias, rtol=1e-5, atol=1e-5)
    exact = x @ weight.T + bias
    error = (got - exact).norm() / exact.norm()
    if bits == 8:  # per-row int8 (torch's kernel) loses the outlier's neighbours; blocks keep them
        per_row_error = (Int8WeightLinear(weight, bias)(x) - exact).norm() / exact.norm()
        assert error < 0.05 and error < per_row_error
    else:  # 15 levels per block: coarse beside the outlier column, never garbage
        assert error < 0.5


def test_four_bit_blocks_span_each_blocks_range() -> None:
    block = torch.linspace(-1.0, 0.5, 32)[None]  # Q4_1: 16 codes from the minimum up
    codes, scales = block_quantise(block, 4)
    assert codes.min() == 0 and codes.max() == 15
    d, m = scales.float()[0, 0]
    assert m.item() == pytest.approx(-1.0, rel=1e-3) and d.item() == pytest.approx(0.1, rel=1e-3)
    assert torch.allclose(dequantised(block, 4), block, atol=d.item() / 2 + 1e-3)


@pytest.mark.parametrize("bits", [8, 4])
def test_prompts_take_a_bf16_matmul_on_the_same_weights(weight: torch.Tensor, bits: Bits) -> None:
    layer = PackedLinear(weight, None, bits)
    x = torch.randn(PREFILL_ROWS, 192)
    by_kernel = torch.cat([layer(row[None]) for row in x])
    assert torch.allclose(layer(x), by_kernel, rtol=0.02, atol=0.02)
    every_row = layer.weight.rows(torch.arange(96))
    assert torch.equal(layer.bf16_weight(), every_row.bfloat16())


@pytest.mark.parametrize("bits", [8, 4])
def test_packed_rows_are_the_weights_the_kernel_multiplies(
    weight: torch.Tensor, bits: Bits
) -> None:
    layer = PackedLinear(weight, None, bits)
    ids = torch.tensor([0, 3, 4, 95])
    assert torch.equal(layer.weight.rows(ids), dequantised(weight[ids], bits))
    one_hot = torch.zeros(1, 192)
    one_hot[0, 10] = 1.0  # picks column 10 of every row
    column = layer.weight.rows(torch.arange(96))[:, 10]
    assert torch.allclose(layer(one_hot)[0], column, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("batch", [2, 8, 16, 17])
def test_a_batch_of_rows_sums_each_row_as_alone(bits: Bits, batch: int) -> None:
    # Batches of 2-16 take AMX tiles where the CPU has them (8 bits), one row takes VNNI:
    # both sum exactly in integers, so every row must come out the same to the bit.
    torch.manual_seed(batch)
    layer = PackedLinear(torch.randn(64, 1024) * 0.05, None, bits)
    x = torch.randn(batch, 1024)
    alone = torch.cat([layer.rows_kernel(x[i : i + 1]) for i in range(batch)])
    assert torch.equal(layer.rows_kernel(x), alone)


def test_portable_build_gives_the_same_results(weight: torch.Tensor) -> None:
    fast = kernel_builder.kernels()
    if not fast.qb_vnni():
        pytest.skip("this CPU has no AVX-512 VNNI: the default build is the portable one")
    portable = kernel_builder.load(kernel_builder.build(("-DQB_PORTABLE",)))
    assert portable.qb_vnni() == 0
    x = torch.randn(3, 192)
    for bits in (8, 4):
        packed = pack(weight, bits)
        outputs = []
        for library in (fast, portable):
            out = torch.empty(3, 96)
            status = library.qb_linear(
                pointer(packed.packed), pointer(packed.scales), bits, pointer(x), pointer(out),
                3, 96, 192, 2,
            )  # fmt: skip
            assert status == 0
            outputs.append(out)
        assert torch.allclose(outputs[0], outputs[1], rtol=1e-5, atol=1e-6)
        unpacked = []  # a prompt's bf16 weights: the same bits from both builds
        for library in (fast, portable):
            out = torch.empty(96, 192, dtype=torch.bfloat16)
            library.qb_unpack_bf16(
                pointer(packed.packed), pointer(packed.scales), bits, 96, 192, pointer(out), 2
            )
            unpacked.append(out)
        assert torch.equal(unpacked[0], unpacked[1])


def test_portable_build_decodes_like_the_fast_one(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.engine.native.test_native_decoder import IDS, native, stepwise_logits

    if not kernel_builder.kernels().qb_vnni():
        pytest.skip("this CPU has no AVX-512 VNNI: the default build is the portable one")
    # The prompt's attention takes torch's SDPA in both: with AVX512-BF16 the fast build's
    # C kernel rounds queries and probabilities to bf16 where the portable one stays in fp32
    # (test_native_decoder.py compares the C kernel with masked attention).
    fast_decoder = native(tiny_model_dir, "int8", torch.bfloat16)
    fast_decoder.c_attention = False
    fast = stepwise_logits(fast_decoder, IDS, prompt=3)
    portable = kernel_builder.load(kernel_builder.build(("-DQB_PORTABLE",)))
    monkeypatch.setattr(kernel_builder, "kernels", lambda: portable)
    decoder = native(tiny_model_dir, "int8", torch.bfloat16)
    assert decoder.fused is not None
    decoder.c_attention = False
    assert torch.allclose(stepwise_logits(decoder, IDS, prompt=3), fast, rtol=1e-4, atol=1e-4)


def test_shapes_the_layout_cannot_take_use_torchs_kernel() -> None:
    make = linear_factory("int8", torch.float32, reduce_range=False)
    assert isinstance(make(torch.randn(16, 64), None), PackedLinear)
    assert isinstance(make(torch.randn(8, 64), None), Int8WeightLinear)  # rows not in 16s
    assert isinstance(make(torch.randn(16, 48), None), Int8WeightLinear)  # K not in 32s


@pytest.fixture
def no_compiler(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """A machine whose C compiler fails (and with no kernel built yet)."""
    monkeypatch.setenv("CC", "/bin/false")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    kernel_builder.kernels.cache_clear()
    yield
    kernel_builder.kernels.cache_clear()


@pytest.mark.usefixtures("no_compiler")
def test_without_a_compiler_int8_falls_back_to_torchs_kernel(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with pytest.raises(KernelUnavailable, match="/bin/false failed"):
        kernel_builder.kernels()
    said: list[str] = []
    with caplog.at_level(logging.WARNING):
        scheme = choose_scheme(
            "int8", torch.bfloat16, False, lambda what, _, instead: said.append(f"{what}|{instead}")
        )
    assert scheme == "int8-torch"
    assert said == ["compiled int8 kernel|torch int8 weight-only kernel (int8-torch)"]


def test_an_unwritable_cache_folder_means_no_kernels(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    with pytest.raises(KernelUnavailable, match="cannot build into"):
        kernel_builder.build(("-DQB_PORTABLE",))
