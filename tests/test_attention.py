"Chapter 03: written-out attention equals PyTorch's SDPA; masks and the library layer behave."
import pytest
import torch
import torch.nn.functional as F

from wakea_edu.text.attention import (KVCache, MultiHeadAttention, attention, attention_weights, causal_mask,
                                      merge_heads, multi_head_attention, padding_mask, split_heads)

TOL = 1e-5


def random_qkv(gen, b, h, n_q, n_k, d):
    return (torch.randn(b, h, n, d, generator=gen) for n in (n_q, n_k, n_k))


@pytest.mark.parametrize("seed", range(8))
def test_matches_sdpa_without_and_with_causal_mask(seed):
    gen = torch.Generator().manual_seed(seed)
    b, h, n, d = (int(torch.randint(lo, hi, (1,), generator=gen)) for lo, hi in ((1, 4), (1, 5), (1, 33), (1, 65)))
    q, k, v = random_qkv(gen, b, h, n, n, d)
    assert (attention(q, k, v) - F.scaled_dot_product_attention(q, k, v)).abs().max() <= TOL
    ours = attention(q, k, v, causal_mask(n))
    assert (ours - F.scaled_dot_product_attention(q, k, v, is_causal=True)).abs().max() <= TOL
    assert (ours - F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(n))).abs().max() <= TOL


@pytest.mark.parametrize("n_q,n_k", [(1, 5), (3, 5), (4, 17), (16, 16), (7, 40)])
def test_fewer_queries_than_keys_is_bottom_right(n_q, n_k):
    mask = causal_mask(n_q, n_k)
    for i in range(n_q):  # query i sits at position i + n_k - n_q
        assert mask[i].tolist() == [j <= i + n_k - n_q for j in range(n_k)]
    gen = torch.Generator().manual_seed(n_q * 100 + n_k)
    q, k, v = random_qkv(gen, 2, 3, n_q, n_k, 16)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert (attention(q, k, v, mask) - ref).abs().max() <= TOL
    # the last n_q rows of full causal attention over n_k queries are the same thing
    q_full = torch.cat([torch.randn(2, 3, n_k - n_q, 16, generator=gen), q], dim=2)
    assert (attention(q_full, k, v, causal_mask(n_k))[:, :, -n_q:] - attention(q, k, v, mask)).abs().max() <= TOL


def test_causal_mask_refuses_more_queries_than_keys():
    with pytest.raises(ValueError, match="at least as many keys"): causal_mask(5, 3)


def test_padding_mask_matches_sdpa_and_zeroes_padded_keys():
    gen = torch.Generator().manual_seed(1)
    lengths = torch.tensor([5, 2, 7])
    real = torch.arange(7)[None] < lengths[:, None]
    q, k, v = random_qkv(gen, 3, 2, 7, 7, 8)
    for mask in (padding_mask(real), padding_mask(real) & causal_mask(7)):
        w = attention_weights(q, k, mask)
        assert torch.all(w.masked_select(~mask.expand_as(w)) == 0)
        assert torch.allclose(w.sum(-1), torch.ones(3, 2, 7))
        assert (attention(q, k, v, mask) - F.scaled_dot_product_attention(q, k, v, attn_mask=mask)).abs().max() <= TOL
    # a padded sequence gives its real rows the same output as the unpadded one
    short = attention(q[1:2, :, :2], k[1:2, :, :2], v[1:2, :, :2])
    assert torch.allclose(attention(q, k, v, padding_mask(real))[1:2, :, :2], short, atol=TOL)


def test_multi_head_written_out_matches_layer():
    torch.manual_seed(0)
    mha = MultiHeadAttention(24, n_heads=3, causal=True, bias=True)
    x = torch.randn(2, 9, 24)
    w_q, w_k, w_v = (w.T for w in mha.qkv.weight.chunk(3))
    b_q, b_k, b_v = mha.qkv.bias.chunk(3)
    q, k, v = split_heads(x @ w_q + b_q, 3), split_heads(x @ w_k + b_k, 3), split_heads(x @ w_v + b_v, 3)
    expected = mha.proj(merge_heads(attention(q, k, v, causal_mask(9))))
    assert (mha(x) - expected).abs().max() <= TOL
    out, weights = mha(x, need_weights=True)
    assert weights.shape == (2, 3, 9, 9) and (out - expected).abs().max() <= TOL
    out2, _ = multi_head_attention(x, x, torch.eye(24), torch.eye(24), torch.eye(24), torch.eye(24), 3, causal_mask(9))
    assert torch.allclose(out2, merge_heads(attention(*(split_heads(x, 3),) * 3, causal_mask(9))), atol=TOL)


@pytest.mark.parametrize("need_weights", [False, True])
def test_causal_output_unaffected_by_future_tokens(need_weights):
    torch.manual_seed(0)
    mha = MultiHeadAttention(32, n_heads=4)
    x = torch.randn(1, 12, 32)
    t = 5
    changed = x.clone()
    changed[:, t + 1:] = torch.randn(1, 12 - t - 1, 32) * 10
    run = (lambda inp: mha(inp, need_weights=True)[0]) if need_weights else mha
    a, b = run(x), run(changed)
    assert torch.allclose(a[:, :t + 1], b[:, :t + 1], atol=1e-6)
    assert not torch.allclose(a[:, t + 1:], b[:, t + 1:], atol=1e-3)


def test_padding_in_layer_and_key_value_cache():
    torch.manual_seed(0)
    mha = MultiHeadAttention(32, n_heads=4)
    x = torch.randn(2, 10, 32)
    full = mha(x)
    cache = KVCache(2, 4, 10, 8)
    pieces = [mha(x[:, :6], cache=cache)] + [mha(x[:, t:t + 2], offset=t, cache=cache) for t in (6, 8)]
    assert (torch.cat(pieces, 1) - full).abs().max() <= TOL
    with pytest.raises(ValueError, match="holds 10 positions"): mha(x[:, :3], offset=9, cache=cache)
    # right padding: the real tokens of a padded row equal the unpadded sequence alone
    mask = torch.tensor([[1] * 10, [1] * 6 + [0] * 4])
    padded = mha(x, attention_mask=mask)
    assert (padded[1, :6] - mha(x[1:, :6])[0]).abs().max() <= TOL
    assert (padded[0] - full[0]).abs().max() <= TOL
    assert (mha(x, attention_mask=mask, need_weights=True)[0] - padded).abs().max() <= TOL


def test_non_causal_layer_and_rotary_hook():
    torch.manual_seed(0)
    calls = []

    class Shift(torch.nn.Module):
        def forward(self, t, positions):
            calls.append(positions.tolist())
            return t + positions[:, None].to(t.dtype)

    mha = MultiHeadAttention(16, n_heads=2, causal=False, rotary=Shift())
    x = torch.randn(1, 4, 16)
    out, w = mha(x, offset=3, need_weights=True)
    assert calls[0] == [3, 4, 5, 6] and w.shape == (1, 2, 4, 4)
    assert (out - mha(x, offset=3)).abs().max() <= TOL
    assert (w[0, 0].triu(1) > 0).any()  # not causal: queries see later keys
    with pytest.raises(ValueError, match="not divisible"): MultiHeadAttention(10, n_heads=3)
