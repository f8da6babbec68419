"""Language-model benchmarks: our attention against PyTorch's SDPA, and generation with and without the KV cache.

Each group of keys comes from one measurement function in `MEASUREMENTS`; `--only NAME[,NAME]` runs some of them
(the new keys are then merged into the existing results file). Everything runs on the CPU with a fixed thread count
(`threads` in the output); each timing is the median of repeats interleaved across the compared functions, and
only ratios are meant to be compared across machines. Prints one JSON object on its last line and writes it to
bench/results/lm.json atomically.
"""
import os

THREADS = 1
os.environ["OMP_NUM_THREADS"] = str(THREADS)
os.environ.setdefault("WAKEA_QUIET", "1")

import argparse
import dataclasses
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from wakea_edu.core import atomic_write
from wakea_edu.text.attention import MultiHeadAttention, attention, causal_mask, merge_heads
from wakea_edu.text.generate import generate
from wakea_edu.text.model import LM_PRESETS, WakeaLM

RESULTS = Path(__file__).parent / "results" / "lm.json"
ATTN_BATCH, ATTN_SEQ = 4, 256  # the small preset's heads (6 x 64) over its whole context
ATTN_REPEATS, ATTN_CALLS = 15, 5
GEN_PROMPT, GEN_NEW, GEN_REPEATS = 16, 512, 3


def interleaved_medians(fns: dict, repeats: int, calls: int = 1, warmup: int = 1) -> tuple[dict, dict]:
    "({name: median seconds per call}, {name: last result}), calling the functions in turn each round."
    times, results = {name: [] for name in fns}, {}
    for round_ in range(warmup + repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(calls): results[name] = fn()
            if round_ >= warmup: times[name].append((time.perf_counter() - start) / calls)
    return {name: statistics.median(t) for name, t in times.items()}, results


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
    return {"attn_shape": [ATTN_BATCH, n_heads, ATTN_SEQ, d_head], "attn_repeats": ATTN_REPEATS,
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
    return {"gen_config": "small preset, context_length 528, random init, greedy", "gen_batch": 1,
            "gen_prompt_tokens": GEN_PROMPT, "gen_new_tokens": GEN_NEW, "gen_repeats": GEN_REPEATS,
            "gen_tok_s_cache": round(GEN_NEW / medians["cache"], 1),
            "gen_tok_s_nocache": round(GEN_NEW / medians["nocache"], 1),
            "kv_cache_speedup": round(medians["nocache"] / medians["cache"], 2)}


MEASUREMENTS = {"attention": measure_attention, "generation": measure_generation}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(MEASUREMENTS)}")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(MEASUREMENTS)
    if unknown := [n for n in names if n not in MEASUREMENTS]: parser.error(f"unknown measurement {unknown[0]!r}")
    torch.set_num_threads(THREADS)
    result = json.loads(RESULTS.read_text()) if args.only and RESULTS.exists() else {}
    result |= {"threads": THREADS, "torch": torch.__version__, "python": platform.python_version(),
               "machine": platform.machine()}
    for name in names: result |= MEASUREMENTS[name]()
    atomic_write(RESULTS, json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
