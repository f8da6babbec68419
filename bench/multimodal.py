"""Multimodal benchmarks (chapters 08-11): our ViT's forward pass against open_clip's `VisionTransformer` holding the same
weights, and chapter 11's adapters (result accuracy on held-out events). Chapter 09 will add its keys here (CLIP training,
the image tokenizer).

Each group of keys comes from one measurement function in `MEASUREMENTS`; `--only NAME[,NAME]` runs some of them (the new
keys are then merged into the existing results file). Everything runs on the CPU with a fixed thread count (`threads`);
each timing is the median of repeats interleaved across the compared functions, and only ratios are meant to be compared
across machines. `vit_forward_ratio` is our images/s over open_clip's at the chapter's shape (the trained reader's: 32x32
scenes, 16 patches of 8x8, width 48, two blocks); `vit_forward_ratio_wide` the same at a wider shape, for context. Both
sides run the same weights under `torch.no_grad`, and their features are checked equal (1e-5) before timing. When
open_clip is not installed the ratios are null and `vit_skipped` says why. `adapters` runs chapter 11's recipe at full size
(`wakea_edu.recipes.multimodal.train_adapters`): `adapter_image_acc` and `adapter_audio_acc` are the fused model's result
accuracy from pictures and sounds, `text_only_acc` and `shuffled_input_acc` the ablations' (the larger of the two media),
`chance_acc` the share of the most common result, `audio_acc` the sound encoder's own. `runs` records, per measurement, the commit it
ran at (and whether the working tree had changes), its thread count and config; `floors` are the targets the ratios
must meet, `floors_met` whether every measured one does. Prints one JSON object on its last line and writes it to
wakea_edu/data/bench/multimodal.json atomically.
"""
import os

THREADS = 1
os.environ["OMP_NUM_THREADS"] = str(THREADS)
os.environ.setdefault("WAKEA_QUIET", "1")

import dataclasses
import importlib.util
import time
from pathlib import Path

import torch

from _timing import interleaved_medians, run_measurements   # bench/ is the script's folder, first on sys.path
from wakea_edu.core import package_version
from wakea_edu.recipes.multimodal import train_adapters
from wakea_edu.multimodal.vision import ViT, ViTConfig, open_clip_kwargs, open_clip_state_dict

RESULTS = Path(__file__).resolve().parents[1] / "wakea_edu" / "data" / "bench" / "multimodal.json"  # shipped beside the others
VIT_SHAPES = {"chapter": (ViTConfig(), 256), "wide": (ViTConfig(patch_size=4, d_model=192, n_layers=6, n_heads=3), 32)}  # (config, batch)
VIT_REPEATS, VIT_CALLS = 15, 3
FLOORS = {"vit_forward_ratio": 0.9, "adapter_image_acc": 0.9, "adapter_audio_acc": 0.9}


@torch.no_grad()
def vit_pair(config: ViTConfig):
    "Our ViT (every vector parameter moved off its initial value) and open_clip's VisionTransformer with its weights."
    from open_clip.transformer import VisionTransformer
    torch.manual_seed(0)
    ours = ViT(config).eval()
    for p in ours.parameters():
        if p.dim() == 1: p.add_(0.1 * torch.randn_like(p))
    theirs = VisionTransformer(**open_clip_kwargs(config)).eval()
    theirs.load_state_dict(open_clip_state_dict(ours))
    return ours, theirs


@torch.no_grad()
def measure_vit_forward() -> dict:
    "Images per second through our ViT and open_clip's, same weights and images, at the chapter's shape and a wider one."
    figures = {"config": {"shapes": {name: {"model": dataclasses.asdict(c), "batch": b} for name, (c, b) in VIT_SHAPES.items()},
                          "repeats": VIT_REPEATS, "calls": VIT_CALLS}}
    if importlib.util.find_spec("open_clip") is None:
        return figures | {"vit_forward_ratio": None, "vit_forward_ratio_wide": None, "vit_skipped": "open_clip is not installed (pip install open_clip_torch)"}
    figures |= {"open_clip": package_version("open_clip_torch"), "vit_skipped": None}
    for name, (config, batch) in VIT_SHAPES.items():
        ours, theirs = vit_pair(config)
        images = torch.rand(batch, 3, config.image_size, config.image_size, generator=torch.Generator().manual_seed(0)) - 0.5
        medians, out = interleaved_medians({"ours": lambda: ours(images), "open_clip": lambda: theirs(images)}, VIT_REPEATS, VIT_CALLS)
        diff = (out["ours"] - out["open_clip"]).abs().max().item()
        assert diff <= 1e-5, f"{name}: our features differ from open_clip's by {diff:.2g}"
        suffix = "" if name == "chapter" else f"_{name}"
        figures |= {f"vit_images_s_ours{suffix}": round(batch / medians["ours"]),
                    f"vit_images_s_open_clip{suffix}": round(batch / medians["open_clip"]),
                    f"vit_forward_ratio{suffix}": round(medians["open_clip"] / medians["ours"], 3)}
    return figures


def measure_adapters() -> dict:
    "Chapter 11's recipe at full size: result accuracy on held-out events from pictures and sounds, the text-only model, chance."
    start = time.perf_counter()
    run = train_adapters(fast=False, device="cpu")
    table = run["table"]
    return {"config": {"recipe": "wakea_edu.recipes.multimodal.train_adapters", "fast": False, "stories": 6000},
            "adapter_image_acc": round(table["<|image|>"]["fused"], 3), "adapter_audio_acc": round(table["<|audio|>"]["fused"], 3),
            "text_only_acc": round(max(row["text only"] for row in table.values()), 3),
            "shuffled_input_acc": round(max(row["shuffled input"] for row in table.values()), 3),
            "chance_acc": round(table["<|image|>"]["chance"], 3), "audio_acc": round(run["encoders"]["sound"]["result"], 3),
            "adapters_run_s": round(time.perf_counter() - start)}


MEASUREMENTS = {"vit_forward": measure_vit_forward, "adapters": measure_adapters}


def main():
    run_measurements(__doc__.splitlines()[0], MEASUREMENTS, RESULTS, FLOORS, THREADS)

if __name__ == "__main__":
    main()
