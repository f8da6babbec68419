"Chapter 04: rotary position embeddings in both conventions."
import pytest
import torch

from wakea_edu.text.attention import MultiHeadAttention
from wakea_edu.text.rope import (RotaryEmbedding, apply_rope_half, apply_rope_interleaved, half_to_interleaved,
                                 interleaved_to_half, rope_angles, rope_frequencies, rope_score)

STYLES = ["half", "interleaved"]


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("head_dim", [2, 16, 64, 128])
def test_score_depends_only_on_relative_position(style, head_dim):
    gen = torch.Generator().manual_seed(head_dim)
    q, k = torch.randn(300, head_dim, generator=gen), torch.randn(300, head_dim, generator=gen)
    m, n = torch.randint(0, 4096, (300,), generator=gen), torch.randint(0, 4096, (300,), generator=gen)
    score = rope_score(q, k, m, n, style=style)
    scale = q.norm(dim=-1) * k.norm(dim=-1)
    for m2, n2 in ((m - n, torch.zeros_like(n)), (m + 777, n + 777), (torch.zeros_like(m), n - m)):
        assert ((score - rope_score(q, k, m2, n2, style=style)).abs() / scale).max() <= 1e-5


@pytest.mark.parametrize("style", STYLES)
def test_position_zero_is_identity_and_norms_are_kept(style):
    rope = RotaryEmbedding(32, style=style)
    x = torch.randn(2, 3, 7, 32)
    assert torch.equal(rope(x, torch.zeros(7, dtype=torch.long)), x)
    rotated = rope(x, torch.tensor([0, 1, 5, 100, 1000, 5000, 65000]))
    assert torch.allclose(rotated.norm(dim=-1), x.norm(dim=-1), rtol=1e-5)
    assert not torch.allclose(rotated[..., 1:, :], x[..., 1:, :], atol=1e-3)


def test_conventions_agree_after_permutation():
    head_dim = 64
    P = interleaved_to_half(head_dim)
    assert sorted(P.tolist()) == list(range(head_dim)) and torch.equal(P[half_to_interleaved(head_dim)], torch.arange(head_dim))
    x, angles = torch.randn(4, 9, head_dim), rope_angles(torch.arange(9) * 31, head_dim)
    assert (apply_rope_half(x[..., P], angles) - apply_rope_interleaved(x, angles)[..., P]).abs().max() <= 1e-5
    # permuting the rows of W_q and W_k per head (as the Hugging Face LLaMA conversion does) keeps scores
    q, k, m, n = torch.randn(50, head_dim), torch.randn(50, head_dim), torch.randint(0, 999, (50,)), torch.randint(0, 999, (50,))
    assert torch.allclose(rope_score(q, k, m, n, style="interleaved"), rope_score(q[:, P], k[:, P], m, n, style="half"), atol=1e-4)


def test_rotation_of_one_pair():
    angle = torch.tensor([0.3])
    expected = torch.tensor([torch.cos(angle), torch.sin(angle)]).flatten()
    assert torch.allclose(apply_rope_interleaved(torch.tensor([1.0, 0.0]), angle), expected)
    assert torch.allclose(apply_rope_half(torch.tensor([1.0, 0.0]), angle), expected)
    assert torch.allclose(rope_frequencies(8), torch.tensor([1.0, 0.1, 0.01, 0.001], dtype=torch.float64))


def test_batched_positions_dtype_and_errors():
    rope = RotaryEmbedding(16)
    x = torch.randn(2, 4, 5, 16)
    positions = torch.tensor([[0, 1, 2, 3, 4], [10, 11, 12, 13, 14]])
    out = rope(x, positions)
    assert torch.allclose(out[0], rope(x[:1], positions[0])[0]) and torch.allclose(out[1], rope(x[1:], positions[1])[0])
    assert rope(x.to(torch.bfloat16), positions).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="even"): rope_frequencies(7)
    with pytest.raises(ValueError, match="style"): RotaryEmbedding(16, style="neox")


def test_attention_with_rope_sees_relative_positions_only():
    torch.manual_seed(0)
    mha = MultiHeadAttention(64, n_heads=4, rotary=RotaryEmbedding(16))
    x = torch.randn(2, 12, 64)
    assert (mha(x) - mha(x, offset=1234)).abs().max() <= 1e-5
    assert (mha(x, need_weights=True)[0] - mha(x)).abs().max() <= 1e-5


@pytest.mark.parametrize("style", STYLES)
def test_module_tables_match_the_functions(style):
    "The cached cos/sin tables give what apply_rope_* computes from angles, for (T,) and (batch, T) positions, and the same gradient."
    rope, reference = RotaryEmbedding(32, style=style), apply_rope_half if style == "half" else apply_rope_interleaved
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 9, 32, generator=gen, requires_grad=True)
    positions, batched = torch.randint(0, 3000, (9,), generator=gen), torch.randint(0, 3000, (2, 9), generator=gen)
    assert torch.allclose(rope(x, positions), reference(x, rope_angles(positions, 32)), atol=1e-6)
    assert torch.allclose(rope(x, batched), reference(x, rope_angles(batched, 32)[:, None]), atol=1e-6)
    grad, = torch.autograd.grad(rope(x, positions).square().sum(), x)
    expected, = torch.autograd.grad(reference(x, rope_angles(positions, 32)).square().sum(), x)
    assert torch.allclose(grad, expected, atol=1e-5)


def test_tables_are_cached_grown_and_not_saved():
    rope = RotaryEmbedding(16)
    x = torch.randn(1, 2, 4, 16)
    rope(x, torch.arange(4))
    rows, table = len(rope.cos), rope.cos
    assert rows >= 4 and rope.cos.dtype == torch.float32 and not rope.state_dict()
    rope(x, torch.arange(4).flip(0))
    assert rope.cos is table                                  # no rebuild while the table is long enough
    rope(x, torch.tensor([0, 1, 2, 5000]))
    assert len(rope.cos) > 5000
    rope.to(torch.bfloat16)                                   # model.to(dtype) casts buffers: rebuilt in fp32
    assert rope(x.bfloat16(), torch.arange(4)).dtype == torch.bfloat16 and rope.cos.dtype == torch.float32
    with pytest.raises(IndexError): rope(x, torch.tensor([0, 1, -1, 2]))


def test_lookup_is_shared_but_notices_changed_positions():
    rope = RotaryEmbedding(16)
    x, positions = torch.randn(1, 2, 3, 16), torch.arange(3)
    first = rope(x, positions)
    positions += 10                                           # an in-place change of the same tensor must not reuse the rows
    assert torch.allclose(rope(x, positions), apply_rope_half(x, rope_angles(torch.arange(10, 13), 16)), atol=1e-6)
    assert not torch.allclose(first, rope(x, positions))
    with torch.inference_mode():                              # inference tensors have no version counter: looked up each time
        p = torch.arange(3)
        assert torch.allclose(rope(x, p), first, atol=1e-6)
