"Chapter 11: special tokens appended without moving an id, frozen encoders behind gated projectors, a splice that is exact at gate 0, and a fused model that reads held-out results from pictures and sounds."
import copy

import pytest
import torch
from torch import nn

from wakea_edu.core import seed_everything
from wakea_edu.multimodal.adapters import (MEDIA_TOKENS, Adapter, FusedLM, ImageTokens, MediaTask, answer, result_accuracy, result_scenes,
                                           result_values, said, task_batches, with_special_tokens)
from wakea_edu.multimodal.audio import AudioConfig, AudioEncoder
from wakea_edu.multimodal.vision import ViT, ViTConfig
from wakea_edu.recipes.multimodal import train_adapters
from wakea_edu.recipes.tokenizer import tinyworld_tokenizer
from wakea_edu.text.model import LMConfig, WakeaLM
from wakea_edu.text.tokenizer import BPETokenizer
from wakea_edu.world.tinyworld import TinyWorld, WorldConfig

# The chapter's CI-size run (WAKEA_FAST=1), one thread. Measured on the 413 held-out test events: pictures 0.952 (full run; see
# the notebook), sounds 1.000; shuffled inputs 0.061, text only 0.111, chance 0.111. The target: >= 0.9 each, ablations within 0.1 of chance.
MIN_ACCURACY, CHANCE_MARGIN = 0.9, 0.1


@pytest.fixture(scope="module")
def tokenizer():
    return with_special_tokens(tinyworld_tokenizer(), MEDIA_TOKENS)


def tiny_fused(tokenizer, seed=0):
    seed_everything(seed)
    lm = WakeaLM(LMConfig(vocab_size=tokenizer.n_vocab, n_layers=1, n_heads=2, d_model=32, context_length=64))
    adapters = {"<|image|>": Adapter(ImageTokens(ViT(ViTConfig(d_model=16, n_layers=1, n_heads=2))), 16, 32),
                "<|audio|>": Adapter(AudioEncoder(AudioConfig(d_model=16, n_layers=1, n_heads=2)), 16, 32)}
    return FusedLM(lm, adapters, {m: tokenizer.special_ids[m] for m in MEDIA_TOKENS})


def tiny_tasks(tokenizer, n=6):
    world = TinyWorld(WorldConfig(stories={"train": 20, "val": 5, "test": 5}))
    images, _, events = result_scenes(world, "train", n)
    return [MediaTask(tokenizer, "<|image|>", 17, images, events),
            MediaTask(tokenizer, "<|audio|>", 25, torch.randn(len(events), 80, 50, generator=torch.Generator().manual_seed(0)), events)]


def test_special_tokens_are_appended_and_saved_files_keep_their_ids(tmp_path):
    base = tinyworld_tokenizer()
    base.save(tmp_path/"old.json")
    old = BPETokenizer.load(tmp_path/"old.json")
    new = with_special_tokens(old, MEDIA_TOKENS)
    assert "<|audio|>" not in old.special_ids and new.special_ids["<|audio|>"] == old.n_vocab and new.n_vocab == old.n_vocab + 1
    assert all(new.special_ids[t] == i for t, i in old.special_ids.items())
    text = "<|bos|>Ada drops the big blue glass cup on the table. It shatters.<|eos|>"
    assert new.encode(text, "all") == old.encode(text, "all")
    new.save(tmp_path/"new.json")
    assert BPETokenizer.load(tmp_path/"new.json").special_ids == new.special_ids
    assert with_special_tokens(new, ["<|audio|>", "<|image|>"]).special_ids == new.special_ids
    with pytest.raises(TypeError, match="BPETokenizer"): with_special_tokens(object(), ["<|audio|>"])


def test_a_closed_gate_gives_exactly_the_text_only_logits(tokenizer):
    model = tiny_fused(tokenizer).eval()
    for task in tiny_tasks(tokenizer):
        ids, media, _ = task.batch(torch.arange(4))
        with torch.no_grad(): assert torch.equal(model(ids, media), model.lm(ids))
        with torch.no_grad(): model.adapters[task.medium].gate.fill_(0.1)
        with torch.no_grad(): assert not torch.equal(model(ids, media), model.lm(ids))   # and the prefix does reach the LM once open


def test_encoders_stay_frozen_and_in_eval_mode(tokenizer):
    model = tiny_fused(tokenizer)
    before = {name: copy.deepcopy(a.encoder.state_dict()) for name, a in model.adapters.items()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for task in tiny_tasks(tokenizer):
        ids, media, targets = task.batch(torch.arange(6))
        loss = model(ids, media, targets)[1]
        opt.zero_grad(); loss.backward(); opt.step()
    for name, adapter in model.adapters.items():
        assert not adapter.encoder.training and adapter.training
        assert all(p.grad is None and not p.requires_grad for p in adapter.encoder.parameters())
        assert all(torch.equal(v, adapter.encoder.state_dict()[k]) for k, v in before[name].items())
        assert adapter.gate.item() != 0.0   # the gate itself trains


def test_prefix_positions_carry_no_loss(tokenizer):
    model = tiny_fused(tokenizer).eval()
    task = tiny_tasks(tokenizer)[1]
    ids, media, targets = task.batch(torch.arange(3))
    targets[:, :30] = ids[:, 1:31]   # ask for every next token, placeholders included
    logits, loss = model(ids, media, targets)
    placeholder = tokenizer.special_ids["<|audio|>"]
    kept = targets.masked_fill((ids == placeholder) | (targets == placeholder), -100)
    assert torch.allclose(loss, torch.nn.functional.cross_entropy(logits.flatten(0, 1), kept.flatten(), ignore_index=-100))
    assert (kept[:, :26] == -100).all()   # <|bos|> predicts a placeholder, the placeholders read one: none counts


def test_mismatched_media_are_refused_by_name(tokenizer):
    model = tiny_fused(tokenizer)
    image_task, audio_task = tiny_tasks(tokenizer)
    ids, media, _ = image_task.batch(torch.arange(3))
    with pytest.raises(ValueError, match="2 inputs for 3 rows"): model(ids, {"<|image|>": media["<|image|>"][:2]})
    short = ids.clone()
    short[:, 1] = tokenizer.special_ids["<|pad|>"]   # one placeholder short in every row
    with pytest.raises(ValueError, match="17 placeholders"): model(short, media)
    with pytest.raises(ValueError, match="no adapter for 'video'"): model(ids, {"video": media["<|image|>"]})
    with pytest.raises(ValueError, match="no placeholder id"): FusedLM(model.lm, {"<|video|>": model.adapters["<|image|>"]}, {})
    with pytest.raises(ValueError, match=r"\(batch, tokens, width\)"): Adapter(nn.Flatten(), 4, 8)(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="no <\\|audio\\|> token"): MediaTask(tinyworld_tokenizer(), "<|audio|>", 25, torch.zeros(1), image_task.events[:1])
    with pytest.raises(ValueError, match="weights"): task_batches([image_task, audio_task], 4, weights=[1.0])


def test_batches_hold_the_answer_as_their_only_targets(tokenizer):
    task = tiny_tasks(tokenizer)[0]
    ids, media, targets = task.batch(torch.tensor([0, 1]))
    prompt, eos = task.prompt(), tokenizer.special_ids["<|eos|>"]
    assert ids.shape[1] == targets.shape[1] and media["<|image|>"].shape == (2, 3, 32, 32)
    for row, event in enumerate(task.events[:2]):
        wanted = tokenizer.encode(answer(event)) + [eos]
        assert ids[row, :len(prompt)].tolist() == prompt
        assert [t for t in targets[row].tolist() if t != -100] == wanted
        assert ids[row, len(prompt):len(prompt) + len(wanted)].tolist() == wanted


def test_greedy_generation_matches_the_full_forward(tokenizer):
    model = tiny_fused(tokenizer).eval()
    with torch.no_grad(): model.adapters["<|image|>"].gate.fill_(0.2)
    task = tiny_tasks(tokenizer)[0]
    ids, media, _ = task.batch(torch.arange(2))
    prompt = ids[:, :len(task.prompt())]
    out = model.generate(prompt, media, max_new_tokens=5)
    for step in range(5):   # each new token is the argmax of a full forward over everything before it
        with torch.no_grad(): logits = model(out[:, :prompt.shape[1] + step], media)
        assert torch.equal(logits[:, -1].argmax(-1), out[:, prompt.shape[1] + step])


@pytest.fixture(scope="module")
def trained():
    "The chapter's run at CI size (the recipe's fast settings), on one thread."
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try: return train_adapters(fast=True, device="cpu")
    finally: torch.set_num_threads(threads)


def test_the_fused_model_reads_held_out_results_and_the_text_alone_cannot(trained):
    for medium, row in trained["table"].items():
        assert row["fused"] >= MIN_ACCURACY, (medium, row)
        assert row["shuffled input"] <= row["chance"] + CHANCE_MARGIN and row["text only"] <= row["chance"] + CHANCE_MARGIN, (medium, row)
    for task in trained["tasks"]:   # the table counts what the model says
        assert result_accuracy(task, said(trained["model"], task)) == trained["table"][task.medium]["fused"]
    assert set(result_values(TinyWorld())) == {"kind", "colour", "material", "place", "result"}
