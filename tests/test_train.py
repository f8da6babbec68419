"Chapter 06: the schedule, weight-decay groups, exact resume, scoring against the floor, and a fixed-token training run."
import dataclasses
import json
import math

import pytest
import safetensors.torch
import torch

from wakea_edu.core import CheckpointError
from wakea_edu.text.model import LM_PRESETS, LMConfig, WakeaLM
from wakea_edu.recipes.pretrain import result_distributions, result_tv
from wakea_edu.recipes.tokenizer import tinyworld_tokenizer
from wakea_edu.text.train import (TrainConfig, Trainer, autocast_for, bits_per_char, encode_stories, lr_at,
                                  optimizer_from_tensors, optimizer_to_tensors, pack, param_groups, sample_batch, story_bits,
                                  window_batches)
from wakea_edu.world.measures import reachable_floor_bpc, read_events, rules_kept
from wakea_edu.world.tinyworld import TinyWorld, WorldConfig, entropy_floor_bpc, summary

# The CI run: a fixed number of tokens (not seconds) on the tiny preset, one thread.
CI_STEPS, CI_BATCH, CI_BLOCK = 150, 16, 128            # 307,200 training tokens
CI_MAX_RATIO = 1.30                                    # measured 1.164 x the reachable floor (see test below)


@pytest.fixture(scope="module")
def data():
    world = TinyWorld(WorldConfig(stories={"train": 5_000, "val": 200, "test": 50}))
    tok = tinyworld_tokenizer()
    bos = tok.special_ids["<|bos|>"]
    return world, tok, pack(encode_stories(tok, world.stories("train")), bos), pack(encode_stories(tok, world.stories("val")), bos)


def small_model(vocab, seed=0):
    torch.manual_seed(seed)
    return WakeaLM(LMConfig(vocab_size=vocab, context_length=64, n_layers=2, n_heads=2, d_model=32))


def test_lr_warms_up_linearly_then_follows_the_cosine_down_to_the_minimum():
    cfg = TrainConfig(steps=100, warmup_steps=10, lr=1e-3, min_lr_ratio=0.1)
    lrs = [lr_at(t, cfg) for t in range(cfg.steps + 1)]
    assert lrs[:10] == pytest.approx([1e-4 * (t + 1) for t in range(10)])
    assert lrs[10] == pytest.approx(1e-3)
    assert lrs[55] == pytest.approx(1e-4 + 0.9e-3 * 0.5)                   # half-way down the cosine
    assert lrs[100] == pytest.approx(1e-4) and lr_at(500, cfg) == pytest.approx(1e-4)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_weight_decay_touches_matrices_only():
    model = small_model(50)
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    # decoupled: with zero gradients only the decayed weights move, by lr * wd * w
    opt = torch.optim.AdamW(param_groups(model, 0.5), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters(): p.grad = torch.zeros_like(p)
    opt.step()
    for p, b in zip(model.parameters(), before):
        assert torch.allclose(p, b * (1 - 0.1 * 0.5) if p.ndim >= 2 else b)


def test_packing_puts_bos_before_every_story_and_windows_shift_by_one():
    stream = pack([[5, 6], [7], [8, 9, 10]], bos_id=0)
    assert stream.tolist() == [0, 5, 6, 0, 7, 0, 8, 9, 10]
    x, y = sample_batch(torch.arange(100), 8, 4, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 8) and torch.equal(y, x + 1)


def test_optimizer_state_round_trips_through_tensors():
    model = small_model(50)
    opt = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-2, betas=(0.9, 0.95))
    ids = torch.randint(0, 50, (2, 9), generator=torch.Generator().manual_seed(0))
    for _ in range(2):
        model(ids[:, :-1]).logsumexp(-1).mean().backward(); opt.step(); opt.zero_grad()
    tensors, meta = optimizer_to_tensors(opt)
    tensors = safetensors.torch.load(safetensors.torch.save(tensors))         # through the file format, as a checkpoint
    twin = small_model(50, seed=1)
    twin.load_state_dict(model.state_dict())
    opt2 = torch.optim.AdamW(param_groups(twin, 0.1), lr=1e-2, betas=(0.9, 0.95))
    optimizer_from_tensors(opt2, tensors, json.loads(json.dumps(meta)))
    for m in (model, twin): m(ids[:, :-1]).logsumexp(-1).mean().backward()
    opt.step(); opt2.step()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters()))


def test_the_cpu_stays_fp32():
    ctx, scaler = autocast_for(torch.device("cpu"), "auto")
    with ctx: out = torch.nn.Linear(4, 4)(torch.randn(2, 4))
    assert out.dtype == torch.float32 and scaler is None


def resumable_run(data, out, crash_at=None):
    "12 steps of 2 micro-batches; `crash_at` interrupts the n-th micro-batch and a fresh Trainer resumes from disk."
    world, tok, train, val = data
    cfg = TrainConfig(steps=12, batch_size=4, block_size=32, grad_accum=2, warmup_steps=3, eval_every=4,
                      eval_batches=2, ckpt_every=4)
    batches = window_batches(train, cfg.block_size, cfg.batch_size), window_batches(val, cfg.block_size, cfg.batch_size)
    trainer = Trainer(small_model(tok.n_vocab), cfg, *batches, out)
    if crash_at:
        calls, loss = [0], trainer.loss
        def crash(batch):
            calls[0] += trainer.model.training                               # count training micro-batches only
            if calls[0] == crash_at: raise KeyboardInterrupt
            return loss(batch)
        trainer.loss = crash
        with pytest.raises(KeyboardInterrupt): trainer.fit()
        torch.manual_seed(99)
        trainer = Trainer(small_model(tok.n_vocab, seed=7), cfg, *batches, out)
        trainer.load(out/"checkpoint.safetensors")
        assert trainer.step == 8                                              # the last checkpoint before the crash
    return trainer.fit(), trainer


def test_resume_mid_accumulation_after_warmup_repeats_every_loss_and_lr_exactly(data, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        straight, t1 = resumable_run(data, tmp_path/"straight")
        resumed, t2 = resumable_run(data, tmp_path/"resumed", crash_at=2 * 9 + 2)   # step 10's second micro-batch
    finally:
        torch.set_num_threads(threads)
    assert [r["loss"] for r in resumed] == [r["loss"] for r in straight]
    assert [r["lr"] for r in resumed] == [r["lr"] for r in straight]
    assert resumed == straight and len(straight) == 12 and sum("val_loss" in r for r in straight) == 3
    assert (tmp_path/"straight"/"metrics.jsonl").read_bytes() == (tmp_path/"resumed"/"metrics.jsonl").read_bytes()
    assert all(torch.equal(a, b) for a, b in zip(t1.model.parameters(), t2.model.parameters()))


def test_a_damaged_or_foreign_checkpoint_is_refused_by_name(data, tmp_path):
    world, tok, train, val = data
    cfg = TrainConfig(steps=2, batch_size=2, block_size=16, warmup_steps=1, eval_every=2, eval_batches=1)
    trainer = Trainer(small_model(tok.n_vocab), cfg, window_batches(train, 16, 2), window_batches(val, 16, 2), tmp_path)
    trainer.fit()
    path = tmp_path/"checkpoint.safetensors"
    other = Trainer(small_model(tok.n_vocab), dataclasses.replace(cfg, batch_size=3), window_batches(train, 16, 3))
    with pytest.raises(CheckpointError, match="batch_size"): other.load(path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="checkpoint.safetensors"): trainer.load(path)


def test_story_scores_do_not_depend_on_batching_or_padding(data):
    world, tok, train, val = data
    model = small_model(tok.n_vocab).eval()
    stories = encode_stories(tok, world.stories("val")[:7])
    bos = tok.special_ids["<|bos|>"]
    batched = story_bits(model, stories, bos, batch_size=7)
    one_by_one = torch.cat([story_bits(model, [s], bos) for s in stories])
    assert torch.allclose(batched, one_by_one, atol=1e-4)
    manual = torch.nn.functional.cross_entropy(model(torch.tensor([[bos, *stories[0][:-1]]]))[0], torch.tensor(stories[0]),
                                               reduction="sum") / math.log(2)
    assert batched[0].item() == pytest.approx(manual.item(), rel=1e-5)


def test_result_tv_is_zero_for_the_rules_and_one_for_disjoint_support():
    rows = [{"model": {"a": 0.75, "b": 0.25}, "rule": {"a": 0.75, "b": 0.25}}]
    assert result_tv(rows) == 0
    assert result_tv([{"model": {"a": 1.0, "b": 0.0}, "rule": {"a": 0.0, "b": 1.0}}]) == 1


def test_the_reachable_floor_lies_above_the_exact_one(data):
    world = data[0]
    for split in ("train", "val", "test"):
        exact, reachable = entropy_floor_bpc(world, split), reachable_floor_bpc(world, split)
        assert exact < reachable < 1.2 * exact


def test_a_fixed_token_run_nears_the_floor_and_never_beats_it(data):
    """The CI version of the chapter's target, bounded in tokens: 150 steps x 16 x 128 tokens of the tiny preset.
    Measured (torch 2.14, 1 thread): 1.164 x the reachable floor. Asserted: above the exact floor, below 1.30 x reachable.
    (The rules' TV is still near chance this early, 0.90: the full run in bench/lm.py learns them after ~300 steps.)"""
    world, tok, train, val = data
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = WakeaLM(dataclasses.replace(LM_PRESETS["tiny"], vocab_size=tok.n_vocab))
        cfg = TrainConfig(steps=CI_STEPS, batch_size=CI_BATCH, block_size=CI_BLOCK, warmup_steps=15,
                          eval_every=CI_STEPS, eval_batches=2)
        log = Trainer(model, cfg, window_batches(train, CI_BLOCK, CI_BATCH), window_batches(val, CI_BLOCK, CI_BATCH)).fit()
        bpc = bits_per_char(model, tok, world.stories("val"))
    finally:
        torch.set_num_threads(threads)
    assert log[-1]["loss"] < log[0]["loss"] / 5
    assert bpc > entropy_floor_bpc(world, "val"), "a model beat the entropy floor: the scoring is wrong"
    assert bpc < CI_MAX_RATIO * reachable_floor_bpc(world, "val"), bpc


def test_rules_kept_accepts_the_worlds_stories_and_catches_broken_ones(data):
    world = data[0]
    stories = world.stories("val")[:50]
    for story in stories:
        kept, told = rules_kept(world, story)
        assert kept == told == story.count(" It ")
    story = "Ava drops the small red glass cup on the table. It shatters. Ned heats the big blue paper cup in the box. It bounces."
    assert rules_kept(world, story) == (1, 2)                                 # paper does not bounce
    assert rules_kept(world, story[:75]) == (1, 2)                            # a cut-off event is a broken one
    assert rules_kept(world, "Ava drops the small red paper ball on the table. It lands.") == (0, 1)   # no paper balls
    assert rules_kept(world, "") == (0, 0)
    why = dict(read_events(world, story))
    assert why["Ava drops the small red glass cup on the table. It shatters."] is None
    assert why["Ned heats the big blue paper cup in the box. It bounces."] == "the rule for heat on paper gives burns, never 'bounces'"
    assert read_events(world, "Zed drops the")[0][1] == "not a well-formed event"
    assert read_events(world, "Zed drops the small red glass cup on the table. It shatters.")[0][1] == "unknown agent 'Zed'"


def test_result_distributions_cover_every_rule_with_proper_distributions(data):
    world, tok = data[0], data[1]
    rows = result_distributions(small_model(tok.n_vocab), tok, world)
    c = world.config
    assert len(rows) == len(c.materials) * len(c.actions) == summary(world)["rules"]
    for row in rows:
        assert sum(row["model"].values()) == pytest.approx(1, abs=1e-5) and sum(row["rule"].values()) == pytest.approx(1)
    glass_drop = next(r for r in rows if (r["material"], r["action"]) == ("glass", "drop"))
    assert glass_drop["rule"]["shatters"] == 0.75 and glass_drop["rule"]["cracks"] == 0.25
    assert 0.5 < result_tv(rows) < 1                                          # an untrained model is far from the rules


@pytest.mark.parametrize("field, bad", [
    ("steps", 0), ("steps", -5), ("batch_size", 0), ("block_size", 0), ("grad_accum", 0), ("lr", float("nan")), ("lr", 0.0),
    ("lr", float("inf")), ("min_lr_ratio", 1.5), ("warmup_steps", -1), ("warmup_steps", 2000), ("weight_decay", -0.1),
    ("betas", (0.9, 1.0)), ("betas", (float("nan"), 0.9)), ("betas", (0.9,)), ("grad_clip", -1.0), ("eval_every", 0),
    ("eval_batches", 0), ("ckpt_every", -1), ("seed", -1), ("amp", "fp8"), ("stats_every", -1), ("log_every", 0), ("steps", 2.5),
])
def test_train_config_refuses_impossible_values_by_field(field, bad):
    from wakea_edu.core import ConfigError
    with pytest.raises(ConfigError) as e: TrainConfig(**{field: bad})
    assert str(e.value).startswith(f"{field if field != 'betas' or len(bad) == 1 else field + '['}")


def test_train_config_accepts_its_edges():
    TrainConfig(steps=1, warmup_steps=1, lr=1e-9, min_lr_ratio=0, weight_decay=0, grad_clip=0, ckpt_every=0, betas=(0, 0.999))
    TrainConfig(steps=10, warmup_steps=0, min_lr_ratio=1)
