"""Language-model benchmarks: our attention against PyTorch's SDPA, training speed against a torch.nn transformer,
the full TinyWorld pretraining run against the entropy floor, generation with and without the KV cache, and cached
greedy generation against Hugging Face's `LlamaForCausalLM` of the same shape and weights.

Each group of keys comes from one measurement function in `MEASUREMENTS`; `--only NAME[,NAME]` runs some of them
(the new keys are then merged into the existing results file). Everything runs on the CPU with a fixed thread count
(`threads` in the output; the training measurements use `train_threads`, this machine's 2 cores); each timing is
the median of repeats interleaved across the compared functions, and only ratios are meant to be compared across
machines. The full training run also writes its metrics log to wakea_edu/data/bench/lm_train_metrics.jsonl, which
chapter 06 plots. `runs` records, for each measurement, the git commit it ran at (and whether the working tree had
changes), its thread count and its config; `floors` are the targets the speed ratios must meet, `floors_met` says
whether every measured one does. The Hugging Face comparison is skipped, with the reason recorded, when transformers
is not installed. Prints one JSON object on its last line and writes it to wakea_edu/data/bench/lm.json atomically.
"""
import os

THREADS = 1
os.environ["OMP_NUM_THREADS"] = str(THREADS)
os.environ.setdefault("WAKEA_QUIET", "1")

import dataclasses
import importlib.util
import inspect
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from _timing import interleaved_medians, run_measurements   # bench/ is the script's folder, first on sys.path
from wakea_edu.core import atomic_write
from wakea_edu.text.attention import MultiHeadAttention, attention, causal_mask, merge_heads
from wakea_edu.text.generate import generate
from wakea_edu.text.model import LM_PRESETS, WakeaLM
from wakea_edu.text.rope import rope_frequencies
from wakea_edu.recipes.pretrain import pretrain_tinyworld
from wakea_edu.recipes.tokenizer import tinyworld_tokenizer
from wakea_edu.text.train import encode_stories, pack, param_groups, sample_batch
from wakea_edu.world.tinyworld import TinyWorld, WorldConfig

RESULTS = Path(__file__).resolve().parents[1] / "wakea_edu" / "data" / "bench" / "lm.json"  # shipped: chapters show it installed
TRAIN_METRICS = RESULTS.with_name("lm_train_metrics.jsonl")
TRAIN_THREADS = 2
SPEED_BATCH, SPEED_BLOCK, SPEED_STEPS = 16, 256, 30
ATTN_BATCH, ATTN_SEQ = 4, 256  # the small preset's heads (6 x 64) over its whole context
ATTN_REPEATS, ATTN_CALLS = 15, 5
GEN_PROMPT, GEN_NEW, GEN_REPEATS = 16, 512, 3
HF_NEW, HF_REPEATS = 256, 7  # the tiny preset, 16 prompt tokens + 256 new ones, greedy, against LlamaForCausalLM
FLOORS = {"train_speed_ratio": 1.05, "gen_ratio_vs_hf_llama": 1.5, "kv_cache_speedup": 10}


@torch.no_grad()
def measure_attention() -> dict:
    "Causal self-attention on the same q, k, v: our layer's attention part, raw SDPA and the written-out version."
    # each side returns the (batch, T, d) tensor an output projection needs, so each merges the heads
    n_heads, d_head = LM_PRESETS["small"].n_heads, LM_PRESETS["small"].d_head
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(ATTN_BATCH, n_heads, ATTN_SEQ, d_head, generator=gen) for _ in range(3))
    layer = MultiHeadAttention(n_heads * d_head, n_heads)
    layer.qkv, layer.proj = nn.Identity(), nn.Identity()  # only the attention part: split heads, mask choice, SDPA, merge
    x = torch.cat([merge_heads(q), merge_heads(k), merge_heads(v)], dim=-1)  # split by the layer, it gives back q, k, v
    medians, out = interleaved_medians({
        "ours": lambda: layer(x),
        "sdpa": lambda: merge_heads(F.scaled_dot_product_attention(q, k, v, is_causal=True)),
        "naive": lambda: merge_heads(attention(q, k, v, causal_mask(ATTN_SEQ))),
    }, ATTN_REPEATS, ATTN_CALLS)
    assert torch.allclose(out["ours"], out["sdpa"], atol=1e-5) and torch.allclose(out["naive"], out["sdpa"], atol=1e-5)
    return {"config": {"shape": [ATTN_BATCH, n_heads, ATTN_SEQ, d_head], "repeats": ATTN_REPEATS, "calls": ATTN_CALLS},
            "attn_shape": [ATTN_BATCH, n_heads, ATTN_SEQ, d_head], "attn_repeats": ATTN_REPEATS,
            "attn_fastpath_over_sdpa_time": round(medians["ours"] / medians["sdpa"], 3),
            "attn_naive_over_sdpa_time": round(medians["naive"] / medians["sdpa"], 3)}


def measure_generation() -> dict:
    "Greedy generation on the small preset (random init, batch 1), with and without the KV cache; same tokens required."
    config = dataclasses.replace(LM_PRESETS["small"], context_length=GEN_PROMPT + GEN_NEW)
    torch.manual_seed(0)
    model = WakeaLM(config).eval()
    ids = torch.randint(0, config.vocab_size, (1, GEN_PROMPT), generator=torch.Generator().manual_seed(0))
    generate(model, ids, 32, temperature=0)  # warm-up (allocator, kernels); the timed runs need none
    medians, out = interleaved_medians({
        "cache": lambda: generate(model, ids, GEN_NEW, temperature=0, use_cache=True),
        "nocache": lambda: generate(model, ids, GEN_NEW, temperature=0, use_cache=False),
    }, GEN_REPEATS, warmup=0)
    assert torch.equal(out["cache"], out["nocache"]), "cached and uncached generation disagree"
    return {"config": {"model": dataclasses.asdict(config), "batch": 1, "prompt": GEN_PROMPT, "new": GEN_NEW, "repeats": GEN_REPEATS},
            "gen_config": "small preset, context_length 528, random init, greedy", "gen_batch": 1,
            "gen_prompt_tokens": GEN_PROMPT, "gen_new_tokens": GEN_NEW, "gen_repeats": GEN_REPEATS,
            "gen_tok_s_cache": round(GEN_NEW / medians["cache"], 1),
            "gen_tok_s_nocache": round(GEN_NEW / medians["nocache"], 1),
            "kv_cache_speedup": round(medians["nocache"] / medians["cache"], 2)}


class TorchNNLM(nn.Module):
    "The reference for training speed: torch.nn.TransformerEncoderLayer blocks (pre-norm, causal, no dropout), tied embeddings."

    def __init__(self, vocab_size: int, d_model: int, n_heads: int, n_layers: int, d_ff: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        nn.init.normal_(self.embed.weight, std=0.02)             # as ours: tied logits start small
        layer = nn.TransformerEncoderLayer(d_model, n_heads, d_ff, dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, ids):
        mask = nn.Transformer.generate_square_subsequent_mask(ids.shape[1])
        return self.norm(self.blocks(self.embed(ids), mask=mask, is_causal=True)) @ self.embed.weight.T


def measure_train_speed() -> dict:
    "Training steps per second: the tiny preset against an equally sized torch.nn model, same batches, interleaved."
    torch.set_num_threads(TRAIN_THREADS)
    world = TinyWorld(WorldConfig(stories={"train": 5_000, "val": 10, "test": 10}))
    tok = tinyworld_tokenizer()
    train = pack(encode_stories(tok, world.stories("train")), tok.special_ids["<|bos|>"])
    cfg = dataclasses.replace(LM_PRESETS["tiny"], vocab_size=tok.n_vocab)
    torch.manual_seed(0)
    ours = WakeaLM(cfg)
    # SwiGLU has three d x hidden matrices, a GELU MLP two: 1.5 x hidden gives the same weights
    ref = TorchNNLM(cfg.vocab_size, cfg.d_model, cfg.n_heads, cfg.n_layers, 3 * ours.blocks[0].mlp.up.out_features // 2)
    models = {"ours": ours, "torch_nn": ref}
    opts = {name: torch.optim.AdamW(param_groups(m, 0.1), lr=1e-3) for name, m in models.items()}
    batches = {name: torch.Generator().manual_seed(0) for name in models}

    def step(name):
        x, y = sample_batch(train, SPEED_BLOCK, SPEED_BATCH, batches[name])
        loss = F.cross_entropy(models[name](x).flatten(0, 1), y.flatten())
        loss.backward(); opts[name].step(); opts[name].zero_grad(set_to_none=True)
        return loss.item()

    medians, _ = interleaved_medians({name: lambda name=name: step(name) for name in models}, SPEED_STEPS, warmup=2)
    tokens = SPEED_BATCH * SPEED_BLOCK
    return {"config": {"model": dataclasses.asdict(cfg), "batch": SPEED_BATCH, "block": SPEED_BLOCK, "steps": SPEED_STEPS,
                       "optimizer": "AdamW lr 1e-3, weight decay 0.1 on matrices",
                       "reference": "torch.nn.TransformerEncoderLayer x n_layers, pre-norm, GELU MLP of 1.5 x SwiGLU's hidden"},
            "train_threads": TRAIN_THREADS, "train_speed_shape": [SPEED_BATCH, SPEED_BLOCK], "train_speed_steps": SPEED_STEPS,
            "train_params_ours": sum(p.numel() for p in ours.parameters()),
            "train_params_torch_nn": sum(p.numel() for p in ref.parameters()),
            "train_tok_s_ours": round(tokens / medians["ours"]), "train_tok_s_torch_nn": round(tokens / medians["torch_nn"]),
            "train_speed_ratio": round(medians["torch_nn"] / medians["ours"], 3)}


def measure_tinyworld_training() -> dict:
    "The full run (chapter 06's `pretrain_tinyworld` with its defaults): validation bits per character and the rules' TV."
    torch.set_num_threads(TRAIN_THREADS)
    run = pretrain_tinyworld(device="cpu")
    atomic_write(TRAIN_METRICS, "".join(json.dumps({k: round(v, 6) if isinstance(v, float) else v for k, v in r.items()},
                                                   sort_keys=True) + "\n" for r in run.log))
    s = run.summary()
    defaults = {k: p.default for k, p in inspect.signature(pretrain_tinyworld).parameters.items()
                if p.kind == p.KEYWORD_ONLY and k not in ("device", "world")}
    return {"config": defaults,
            "tinyworld_run": {**defaults, "tokens": s["steps"] * defaults["batch_size"] * defaults["block_size"],
                              "params": sum(p.numel() for p in run.model.parameters())},
            # the floor a model trained on other surfaces can reach (see chapter 06); the exact split entropy beside it
            "tinyworld_val_bpc": round(s["val_bpc"], 5), "tinyworld_floor_bpc": round(s["reachable_floor_bpc"], 5),
            "tinyworld_bpc_ratio": round(s["bpc_ratio"], 4), "tinyworld_exact_floor_bpc": round(s["exact_floor_bpc"], 5),
            "tinyworld_bpc_ratio_exact": round(s["bpc_ratio_exact"], 4), "tinyworld_result_tv": round(s["result_tv"], 4),
            "tinyworld_train_s": round(s["train_s"], 1), "tinyworld_eval_s": round(s["eval_s"], 1)}


def llama_like(model: WakeaLM):
    "Hugging Face's LlamaForCausalLM with `model`'s shape and weights (our qkv split into q, k, v; both rotate-half RoPE)."
    from transformers import LlamaConfig, LlamaForCausalLM
    c = model.config
    hf = LlamaForCausalLM(LlamaConfig(
        vocab_size=c.vocab_size, hidden_size=c.d_model, intermediate_size=c.d_hidden, num_hidden_layers=c.n_layers,
        num_attention_heads=c.n_heads, num_key_value_heads=c.n_heads, max_position_embeddings=c.context_length,
        rms_norm_eps=c.norm_eps, rope_theta=c.rope_base, tie_word_embeddings=True, attention_bias=False, mlp_bias=False,
        pad_token_id=0, bos_token_id=None, eos_token_id=None)).eval()
    ours = model.state_dict()
    state = {"model.embed_tokens.weight": ours["tok_emb.weight"], "lm_head.weight": ours["tok_emb.weight"],
             "model.norm.weight": ours["norm.weight"]}
    for i in range(c.n_layers):
        hf_, us = f"model.layers.{i}.", f"blocks.{i}."
        state |= dict(zip((hf_ + f"self_attn.{p}_proj.weight" for p in "qkv"), ours[us + "attn.qkv.weight"].chunk(3)))
        state |= {hf_ + "self_attn.o_proj.weight": ours[us + "attn.proj.weight"],
                  hf_ + "input_layernorm.weight": ours[us + "norm1.weight"],
                  hf_ + "post_attention_layernorm.weight": ours[us + "norm2.weight"],
                  **{hf_ + f"mlp.{p}_proj.weight": ours[us + f"mlp.{p}.weight"] for p in ("gate", "up", "down")}}
    hf.load_state_dict(state)
    assert torch.allclose(hf.model.rotary_emb.inv_freq.double(), rope_frequencies(c.d_head, c.rope_base)), "RoPE bases differ"
    return hf


@torch.no_grad()
def measure_hf_generation() -> dict:
    "Cached greedy generation, tiny preset (random init, batch 1): `generate` against LlamaForCausalLM.generate, same weights."
    config = dataclasses.replace(LM_PRESETS["tiny"], context_length=GEN_PROMPT + HF_NEW)
    figures = {"config": {"model": dataclasses.asdict(config), "batch": 1, "prompt": GEN_PROMPT, "new": HF_NEW,
                          "repeats": HF_REPEATS, "threads": torch.get_num_threads()}}
    if importlib.util.find_spec("transformers") is None:
        return figures | {"gen_ratio_vs_hf_llama": None, "gen_hf_skipped": "transformers is not installed (pip install transformers)"}
    import transformers
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    model = WakeaLM(config).eval()
    hf = llama_like(model)
    ids = torch.randint(0, config.vocab_size, (1, GEN_PROMPT), generator=torch.Generator().manual_seed(0))
    ones = torch.ones_like(ids)
    medians, out = interleaved_medians({
        "ours": lambda: generate(model, ids, HF_NEW, temperature=0, use_cache=True),
        "hf": lambda: hf.generate(ids, attention_mask=ones, do_sample=False, use_cache=True, max_new_tokens=HF_NEW,
                                  min_new_tokens=HF_NEW),
    }, HF_REPEATS)
    assert out["ours"].shape == out["hf"].shape == (1, GEN_PROMPT + HF_NEW), (out["ours"].shape, out["hf"].shape)
    return figures | {"transformers": transformers.__version__, "gen_hf_skipped": None, "gen_hf_threads": torch.get_num_threads(),
                      "gen_hf_new_tokens": HF_NEW, "gen_hf_repeats": HF_REPEATS,
                      # same weights, so the same greedy tokens unless two logits tie to float rounding
                      "gen_hf_same_tokens": torch.equal(out["ours"], out["hf"]),
                      "gen_tok_s_ours_tiny": round(HF_NEW / medians["ours"], 1), "gen_tok_s_hf_llama": round(HF_NEW / medians["hf"], 1),
                      "gen_ratio_vs_hf_llama": round(medians["hf"] / medians["ours"], 3)}


MEASUREMENTS = {"attention": measure_attention, "train_speed": measure_train_speed, "train": measure_tinyworld_training,
                "generation": measure_generation, "hf_generation": measure_hf_generation}


def main():
    run_measurements(__doc__.splitlines()[0], MEASUREMENTS, RESULTS, FLOORS, THREADS)

if __name__ == "__main__":
    main()
