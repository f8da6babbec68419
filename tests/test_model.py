"Chapter 05: RMSNorm, SwiGLU, the block, WakeaLM, parameter budgets."
import dataclasses
import math

import pytest
import torch

from wakea_edu.core import ConfigError, config_from_dict
from wakea_edu.text.attention import KVCache
from wakea_edu.text.model import (LM_PRESETS, GELUMLP, LMConfig, RMSNorm, SwiGLU, TransformerBlock, WakeaLM,
                                  parameter_budget, swiglu_hidden)


def test_rmsnorm_matches_formula_and_computes_in_fp32():
    torch.manual_seed(0)
    norm = RMSNorm(16, eps=1e-6)
    norm.weight.data = torch.rand(16) + 0.5
    x = torch.randn(3, 5, 16) * 7
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * norm.weight
    assert torch.allclose(norm(x), expected, atol=1e-5)
    big = torch.full((2, 16), 1000.0, dtype=torch.float16)  # squares overflow fp16
    out = norm(big)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    assert torch.allclose(out.float(), norm.weight.expand(2, 16), rtol=1e-3)
    assert norm(x.bfloat16()).dtype == torch.bfloat16


@pytest.mark.parametrize("d_model,hidden", [(128, 384), (384, 1024), (896, 2432), (768, 2048), (4096, 10944)])
def test_swiglu_hidden_is_8_3_d_rounded_up_to_64(d_model, hidden):
    assert swiglu_hidden(d_model) == hidden
    assert hidden % 64 == 0 and 8 * d_model / 3 <= hidden < 8 * d_model / 3 + 64
    mlp = SwiGLU(d_model)
    assert (mlp.gate.out_features, mlp.up.out_features, mlp.down.in_features) == (hidden,) * 3
    assert all(m.bias is None for m in (mlp.gate, mlp.up, mlp.down))


def test_swiglu_and_gelu_mlp_compute_their_formulas():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32)
    mlp = SwiGLU(32)
    gate, up = x @ mlp.gate.weight.T, x @ mlp.up.weight.T
    assert torch.allclose(mlp(x), (gate * torch.sigmoid(gate) * up) @ mlp.down.weight.T, atol=1e-6)
    gelu = GELUMLP(32, 64)
    h = x @ gelu.up.weight.T + gelu.up.bias
    assert torch.allclose(gelu(x), (0.5 * h * (1 + torch.erf(h / math.sqrt(2)))) @ gelu.down.weight.T + gelu.down.bias, atol=1e-6)


def test_block_pre_and_post_norm():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 32)
    pre = TransformerBlock(32, 4, 64)
    h = x + pre.attn(pre.norm1(x))
    assert torch.allclose(pre(x), h + pre.mlp(pre.norm2(h)), atol=1e-6)
    post = TransformerBlock(32, 4, 64, causal=False, norm="layer", mlp="gelu", prenorm=False, bias=True)
    h = post.norm1(x + post.attn(x))
    assert torch.allclose(post(x), post.norm2(h + post.mlp(h)), atol=1e-6)
    assert isinstance(post.norm1, torch.nn.LayerNorm) and isinstance(post.mlp, GELUMLP)
    with pytest.raises(ValueError, match="norm"): TransformerBlock(32, 4, 64, norm="batch")
    with pytest.raises(ValueError, match="mlp"): TransformerBlock(32, 4, 64, mlp="relu")


def test_presets_and_budget_of_175m_class():
    assert (LM_PRESETS["tiny"].n_layers, LM_PRESETS["tiny"].n_heads, LM_PRESETS["tiny"].d_model) == (4, 4, 128)
    assert (LM_PRESETS["tiny"].vocab_size, LM_PRESETS["tiny"].context_length) == (1024, 256)
    small = LM_PRESETS["small"]
    assert (small.n_layers, small.n_heads, small.d_model, small.context_length) == (6, 6, 384, 256)
    big = LM_PRESETS["175m"]
    assert (big.vocab_size, big.context_length) == (32000, 1024)
    budget = parameter_budget(big)
    assert abs(budget["total"] / 175e6 - 1) <= 0.05
    assert budget["total"] == sum(v for k, v in budget.items() if k != "total")
    assert budget["embedding"] == 32000 * big.d_model  # tied: counted once


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_budget_counts_the_real_model(name):
    model = WakeaLM(LM_PRESETS[name])
    assert parameter_budget(LM_PRESETS[name])["total"] == sum(p.numel() for p in model.parameters())


def test_tied_embeddings():
    model = WakeaLM(LMConfig(vocab_size=50, d_model=32, n_heads=2, n_layers=1))
    assert model.lm_head.weight is model.tok_emb.weight
    _, loss = model(torch.randint(0, 50, (2, 8)), torch.randint(0, 50, (2, 8)))
    loss.backward()
    assert model.tok_emb.weight.grad is not None and model.tok_emb.weight.grad.abs().sum() > 0
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))


def test_residual_init_scaling():
    torch.manual_seed(0)
    config = LMConfig(n_layers=8, d_model=256, n_heads=4)
    model = WakeaLM(config)
    target = 0.02 / math.sqrt(2 * config.n_layers)
    for block in model.blocks:
        assert abs(block.attn.proj.weight.std().item() / target - 1) < 0.05
        assert abs(block.mlp.down.weight.std().item() / target - 1) < 0.05
        assert abs(block.attn.qkv.weight.std().item() / 0.02 - 1) < 0.05
        assert abs(block.mlp.gate.weight.std().item() / 0.02 - 1) < 0.05
        assert torch.equal(block.norm1.weight, torch.ones(256))
    assert abs(model.tok_emb.weight.std().item() / 0.02 - 1) < 0.05


def test_loss_at_init_is_ln_vocab():
    torch.manual_seed(0)
    model = WakeaLM(LM_PRESETS["tiny"])
    ids = torch.randint(0, 1024, (4, 129))
    with torch.no_grad(): logits, loss = model(ids[:, :-1], ids[:, 1:])
    assert logits.shape == (4, 128, 1024)
    assert abs(loss.item() - math.log(1024)) <= 0.1
    masked = ids[:, 1:].clone()
    masked[:, :64] = -100
    with torch.no_grad(): _, loss_masked = model(ids[:, :-1], masked)
    assert abs(loss_masked.item() - math.log(1024)) <= 0.1


def test_lm_is_causal_and_cache_matches():
    torch.manual_seed(0)
    model = WakeaLM(LMConfig(vocab_size=64, context_length=32, n_layers=2, n_heads=2, d_model=32)).eval()
    ids = torch.randint(0, 64, (2, 20))
    changed = ids.clone()
    changed[:, 12:] = (changed[:, 12:] + 1) % 64
    with torch.no_grad():
        full = model(ids)
        assert torch.allclose(full[:, :12], model(changed)[:, :12], atol=1e-6)
        caches = [KVCache(2, 2, 32, 16) for _ in model.blocks]
        steps = [model(ids[:, :15], caches=caches)] + [model(ids[:, t:t + 1], offset=t, caches=caches) for t in range(15, 20)]
    assert (torch.cat(steps, 1) - full).abs().max() <= 1e-5
    with pytest.raises(ValueError, match="context length"): model(torch.zeros(1, 33, dtype=torch.long))


def test_config_validation():
    with pytest.raises(ConfigError, match="divisible"): LMConfig(d_model=130, n_heads=4)
    with pytest.raises(ConfigError, match="even"): LMConfig(d_model=12, n_heads=4)
    with pytest.raises(ConfigError, match="n_layers"): LMConfig(n_layers=0)
    assert config_from_dict(LMConfig, dataclasses.asdict(LM_PRESETS["small"])) == LM_PRESETS["small"]
    with pytest.raises(ConfigError, match="n_layer"): config_from_dict(LMConfig, {"n_layer": 4})


def test_rmsnorm_gradient_matches_the_formula():
    torch.manual_seed(0)
    norm = RMSNorm(16, eps=1e-6)
    norm.weight.data = torch.rand(16) + 0.5
    x = (torch.randn(3, 5, 16) * 7).requires_grad_()
    weight = norm.weight.detach().clone().requires_grad_()
    grads = torch.autograd.grad(norm(x).sin().sum(), (x, norm.weight))
    expected = torch.autograd.grad((x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * weight).sin().sum(), (x, weight))
    assert all(torch.allclose(g, e, atol=1e-5) for g, e in zip(grads, expected))


def test_rope_tables_are_shared_and_stay_out_of_the_state_dict():
    torch.manual_seed(0)
    model = WakeaLM(LMConfig(vocab_size=64, context_length=32, n_layers=3, n_heads=2, d_model=32)).eval()
    rotaries = {id(block.attn.rotary) for block in model.blocks}
    assert len(rotaries) == 1                                  # one module, so one cos/sin table for every layer
    keys = set(model.state_dict())
    ids = torch.randint(0, 64, (2, 10))
    with torch.no_grad():
        full = model(ids)
        # (batch, T) positions: each row its own, as if run alone
        rows = model(ids, positions=torch.stack([torch.arange(10), torch.arange(5, 15)]))
        assert torch.allclose(rows[0], full[0], atol=1e-6)
        assert torch.allclose(rows[1], model(ids[1:], offset=5)[0], atol=1e-6)
    assert set(model.state_dict()) == keys and not any("cos" in k or "sin" in k for k in keys)
