"""Chapter 06's seams, as later chapters will use them: batch sources and `loss` overrides train through the unchanged loop
(accumulation and exact resume included), the model's `inputs_embeds` and `positions` doors, runs that describe
themselves, and training driven by a config file from the command line."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from wakea_edu.core import CheckpointError, ConfigError
from wakea_edu.recipes.pretrain import load_run_config, shipped_config
from wakea_edu.text.generate import generate
from wakea_edu.text.model import LMConfig, WakeaLM
from wakea_edu.text.tokenizer import BPETokenizer
from wakea_edu.text.train import TrainConfig, Trainer, load_pretrained, read_run, sample_batch, window_batches

VOCAB = 40
STREAM = (torch.arange(4000) * 7 + torch.arange(4000) // 5) % VOCAB   # learnable: each token says much about the next
CFG = TrainConfig(steps=8, batch_size=4, block_size=16, grad_accum=2, warmup_steps=2, eval_every=4, eval_batches=2, ckpt_every=4)
WAKEA = str(Path(sys.executable).parent/"wakea-edu")


def small_model(seed=0):
    torch.manual_seed(seed)
    return WakeaLM(LMConfig(vocab_size=VOCAB, context_length=32, n_layers=2, n_heads=2, d_model=16))


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class MaskedTrainer(Trainer):
    "SFT-style: a batch carries a mask of the positions that count; micro-batches weigh by their counted tokens."
    def loss(self, batch):
        x, y, mask = batch
        return self.model(x, targets=y.masked_fill(~mask, -100))[1]

    def batch_weight(self, batch):
        return batch[2].sum().item()


def masked_batches(generator):
    x, y = sample_batch(STREAM, CFG.block_size, CFG.batch_size, generator)
    return x, y, torch.rand(y.shape, generator=generator) < 0.3


def sequence_logp(model, ids):
    "Sum of log p(token | prefix) over each row after its first token."
    logp = model(ids[:, :-1]).log_softmax(-1)
    return logp.gather(-1, ids[:, 1:, None]).squeeze(-1).sum(-1)


class PairwiseTrainer(Trainer):
    "DPO-style: a batch is two sequences per example, and the loss prefers the first (here: the ascending run of tokens)."
    def loss(self, batch):
        chosen, rejected = batch
        return -F.logsigmoid(sequence_logp(self.model, chosen) - sequence_logp(self.model, rejected)).mean()


def pair_batches(generator):
    starts = torch.randint(0, VOCAB - 12, (CFG.batch_size, 1), generator=generator)
    chosen = starts + torch.arange(12)                                              # 5, 6, 7, ...
    rejected = torch.randint(0, VOCAB, chosen.shape, generator=generator)
    return chosen, rejected


def crash_and_resume(make, out: Path, crash_at: int):
    "Run `make(out)` until its `crash_at`-th training micro-batch raises, then resume a fresh one from the checkpoint."
    trainer = make(out)
    calls, loss = [0], trainer.loss
    def crash(batch):
        calls[0] += trainer.model.training
        if calls[0] == crash_at: raise KeyboardInterrupt
        return loss(batch)
    trainer.loss = crash
    with pytest.raises(KeyboardInterrupt): trainer.fit()
    resumed = make(out)
    resumed.load(out/"checkpoint.safetensors")
    return resumed.fit()


@pytest.mark.parametrize("trainer_class, batches", [(MaskedTrainer, masked_batches), (PairwiseTrainer, pair_batches)],
                         ids=["masked-targets", "pairwise"])
def test_a_subclass_that_overrides_the_loss_trains_and_resumes_exactly(trainer_class, batches, tmp_path):
    make = lambda out: trainer_class(small_model(), CFG, batches, batches, out)
    straight = make(tmp_path/"straight").fit()
    resumed = crash_and_resume(make, tmp_path/"resumed", crash_at=2 * 5 + 2)       # step 6's second micro-batch
    assert resumed == straight and len(straight) == CFG.steps
    assert (tmp_path/"straight"/"metrics.jsonl").read_bytes() == (tmp_path/"resumed"/"metrics.jsonl").read_bytes()
    longer = trainer_class(small_model(), TrainConfig(steps=40, batch_size=4, block_size=16, grad_accum=2, warmup_steps=4,
                                                       lr=1e-2, eval_every=40, eval_batches=2), batches, batches).fit()
    assert longer[-1]["val_loss"] < 0.8 * straight[0]["loss"]                       # it learns through the unchanged loop


def test_weighted_micro_batches_give_the_per_token_mean_of_one_big_batch():
    "Two masked micro-batches weighted by their target tokens = one batch of both: the same loss and the same gradient."
    g = torch.Generator().manual_seed(3)
    parts = [masked_batches(g) for _ in range(2)]
    whole = tuple(torch.cat(t) for t in zip(*parts))
    rows = []
    for grad_accum, draws in ((2, iter(parts)), (1, iter([whole]))):
        cfg = TrainConfig(steps=1, batch_size=8, block_size=16, grad_accum=grad_accum, warmup_steps=1, grad_clip=0)
        rows.append(MaskedTrainer(small_model(), cfg, lambda generator, d=draws: next(d)).train_step())
    assert rows[0]["loss"] == pytest.approx(rows[1]["loss"], rel=1e-6)
    assert rows[0]["grad_norm"] == pytest.approx(rows[1]["grad_norm"], rel=1e-5)


def test_inputs_embeds_and_positions_are_the_same_model():
    model = small_model().eval()
    ids = torch.randint(0, VOCAB, (3, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model(ids), model(inputs_embeds=model.tok_emb(ids)))
        assert torch.equal(model(ids, offset=4), model(ids, positions=torch.arange(4, 14)))
        # per-row positions: a left-padded batch can start each row where it likes
        rows = model(ids, positions=torch.stack([torch.arange(0, 10), torch.arange(5, 15), torch.arange(9, 19)]))
        for row, offset in enumerate((0, 5, 9)): assert torch.allclose(rows[row], model(ids[row:row + 1], offset=offset)[0], atol=1e-6)
        logits, loss = model(inputs_embeds=model.tok_emb(ids[:, :-1]), targets=ids[:, 1:])
        assert loss == F.cross_entropy(model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten())
    with pytest.raises(ValueError, match="exactly one"): model(ids, inputs_embeds=model.tok_emb(ids))
    with pytest.raises(ValueError, match="context length"): model(ids, positions=torch.arange(30, 40))


def test_cached_generation_still_equals_uncached():
    model = small_model().eval()
    prompt = torch.randint(0, VOCAB, (2, 5), generator=torch.Generator().manual_seed(2))
    cached = generate(model, prompt, 20, temperature=0, use_cache=True)
    assert torch.equal(cached, generate(model, prompt, 20, temperature=0, use_cache=False))


def test_layer_statistics_are_recorded_when_asked(tmp_path):
    cfg = TrainConfig(steps=4, batch_size=4, block_size=16, warmup_steps=1, eval_every=4, eval_batches=1, stats_every=2)
    log = Trainer(small_model(), cfg, window_batches(STREAM, 16, 4), window_batches(STREAM, 16, 4), tmp_path).fit()
    assert [("layers" in r) for r in log] == [False, True, False, True]
    for r in log[1::2]:
        assert set(r["layers"]) == {"blocks.0", "blocks.1"}
        assert all(s["grad_norm"] > 0 and s["act_std"] > 0 and "act_mean" in s for s in r["layers"].values())
    assert [json.loads(line) for line in (tmp_path/"metrics.jsonl").read_text().splitlines()] == log
    try: import tensorboard  # noqa: F401
    except ImportError: return
    assert list((tmp_path/"tensorboard").glob("events.out.tfevents.*"))


def trained_run(out, tokenizer=None):
    info = {"tokenizer": "tokenizer.json"} if tokenizer else {}
    if tokenizer: out.mkdir(parents=True, exist_ok=True); tokenizer.save(out/"tokenizer.json")
    cfg = TrainConfig(steps=3, batch_size=4, block_size=16, warmup_steps=1, eval_every=3, eval_batches=1)
    trainer = Trainer(small_model(), cfg, window_batches(STREAM, 16, 4), window_batches(STREAM, 16, 4), out, info)
    trainer.fit()
    return trainer


def test_a_run_folder_describes_itself_and_loads_back(tmp_path):
    tokenizer = BPETokenizer.train("the cat sat on the mat. " * 20, 256 + 4)
    trainer = trained_run(tmp_path/"run", tokenizer)
    info = read_run(tmp_path/"run")
    assert {p.name for p in (tmp_path/"run").iterdir()} >= {"checkpoint.safetensors", "run.json", "metrics.jsonl", "tokenizer.json"}
    assert info["model"] == {"class": "WakeaLM", "config": {**vars(trainer.model.config)}} and info["train"]["steps"] == 3
    assert info["package"]["version"] and ("commit" in info["package"]) and info["step"] == 3
    model, tok, meta = load_pretrained(tmp_path/"run")
    ids = torch.randint(0, VOCAB, (2, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(): assert torch.equal(model(ids), trainer.model.eval()(ids))
    assert tok.encode("the cat") == tokenizer.encode("the cat") and meta["step"] == 3 and not model.training
    # fine-tuning starts from the weights with a different TrainConfig; resuming would need the same one
    cfg = TrainConfig(steps=2, batch_size=2, block_size=8, lr=1e-4, warmup_steps=1, eval_every=2, eval_batches=1)
    assert len(Trainer(model.train(), cfg, window_batches(STREAM, 8, 2)).fit()) == 2
    with pytest.raises(CheckpointError, match="different"): Trainer(small_model(), cfg, window_batches(STREAM, 8, 2)).load(tmp_path/"run"/"checkpoint.safetensors")


def test_what_is_not_a_run_is_refused_by_name(tmp_path):
    with pytest.raises(CheckpointError, match="no such directory"): load_pretrained(tmp_path/"nothing")
    with pytest.raises(CheckpointError, match="no run.json"): load_pretrained(tmp_path)
    trained_run(tmp_path/"run")
    path = tmp_path/"run"/"run.json"
    good = json.loads(path.read_text())
    assert load_pretrained(tmp_path/"run")[1] is None                                   # no tokenizer recorded: none loaded
    for broken, needle in (("{not json", "not valid JSON"), (json.dumps({**good, "format": "x"}), "not a wakea-run"),
                           (json.dumps({**good, "version": 99}), "version 99"),
                           (json.dumps({**good, "model": {"class": "GPT5"}}), "GPT5"),
                           (json.dumps({**good, "model": {"class": "WakeaLM", "config": {**good["model"]["config"], "d_model": 32}}}),
                            "do not fit"),
                           (json.dumps({**good, "model": {"class": "WakeaLM", "config": {"d_modle": 16}}}), "d_modle")):
        path.write_text(broken)
        with pytest.raises((CheckpointError, ConfigError), match=needle): load_pretrained(tmp_path/"run")


def test_every_shipped_config_loads():
    for name in ("tiny", "text-file"):
        config, _ = load_run_config(name)
        assert config.train.steps > 0 and config.data and shipped_config(name).is_file()


@pytest.mark.parametrize("text, needle", [
    ("train:\n  stpes: 10\n", "did you mean 'train.steps'"),
    ("model:\n  vocab_size: 99\n", "model.vocab_size"),
    ("data:\n  - kind: text\n", "data[0].path"),
    ("data:\n  - kind: csv\n", "data[0].kind"),
    ("data: []\n", "no source"),
    ("val_fraction: 1.5\n", "val_fraction"),
    ("train: {lr: .nan}\n", "train.lr: must be a finite number > 0, got nan"),
    ("train: {steps: -5}\n", "train.steps: must be an int >= 1, got -5"),
    ("train: {batch_size: 0}\n", "train.batch_size: must be an int >= 1, got 0"),
    ("train: {steps: 10, warmup_steps: 20}\n", "train.warmup_steps: must be <= steps (10), got 20"),
    ("train: {betas: [0.9, 1.0]}\n", "train.betas[1]: must be a finite number in [0, 1), got 1.0"),
    ("train: {weight_decay: -0.1}\n", "train.weight_decay"), ("train: {eval_every: 0}\n", "train.eval_every"),
    ("model: {norm_eps: 0}\n", "model.norm_eps"), ("model: {d_model: 130}\n", "model.d_model: 130 is not divisible"),
    ("tokenizer: {vocab_size: 100}\n", "tokenizer.vocab_size: must be an int >= 256"),
    ("data:\n  - {kind: tinyworld, weight: .inf}\n", "data[0].weight"),
    ("world: {val_fraction: .nan}\n", "world.val_fraction"),
    ("", "empty config file"), ("false\n", "expects a mapping for RunConfig"),
    ('{"train": ' * 1000 + "{}" + "}" * 1000, "nested more than 32 levels deep"),
])
def test_a_bad_run_config_names_the_file_and_the_field(tmp_path, text, needle):
    (tmp_path/"run.yaml").write_text(text)
    with pytest.raises(ConfigError, match="run.yaml") as e: load_run_config(tmp_path/"run.yaml")
    assert needle in str(e.value)


def test_train_refuses_a_bad_config_in_one_line(tmp_path):
    (tmp_path/"run.yaml").write_text("train: {lr: .nan}\n")
    r = cli("train", "--config", "run.yaml", "--out", "runs/x", cwd=tmp_path)
    assert r.returncode == 1 and "run.yaml: train.lr: must be a finite number > 0, got nan" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path/"runs").exists()


def cli(*args, cwd):
    return subprocess.run([WAKEA, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_train_from_a_config_on_my_own_text_and_jsonl_then_generate(tmp_path):
    (tmp_path/"notes.txt").write_text("".join(f"The {c} cat sat on the {m} mat. " for c in ("red", "blue", "old") for m in ("big", "flat")) * 20)
    (tmp_path/"rows.jsonl").write_text("".join(json.dumps({"body": f"Row {i} says hello to row {i + 1}."}) + "\n" for i in range(80)))
    (tmp_path/"run.yaml").write_text(
        "tokenizer: {vocab_size: 300}\nmodel: {n_layers: 1, n_heads: 2, d_model: 16, context_length: 64}\n"
        "train: {steps: 4, batch_size: 4, block_size: 16, warmup_steps: 1, eval_every: 2, eval_batches: 1, ckpt_every: 2}\n"
        "val_fraction: 0.2\ndata:\n  - {kind: text, path: notes.txt}\n  - {kind: jsonl, path: rows.jsonl, text_key: body, max_rows: 60, weight: 0.5}\n")
    r = cli("train", "--config", "run.yaml", "--out", "runs/mine", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    info = read_run(tmp_path/"runs"/"mine")
    assert [d["kind"] for d in info["data"]] == ["text", "jsonl"] and info["world"] is None
    summary = json.loads((tmp_path/"runs"/"mine"/"summary.json").read_text())
    assert summary["steps"] == 4 and summary["val_loss"] > 0
    plain = cli("generate", "--run", "runs/mine", "--prompt", "The red", "--max-new-tokens", "12", "--temperature", "0", cwd=tmp_path)
    streamed = cli("generate", "--run", "runs/mine", "--prompt", "The red", "--max-new-tokens", "12", "--temperature", "0", "--stream", cwd=tmp_path)
    assert plain.returncode == streamed.returncode == 0 and plain.stdout == streamed.stdout and plain.stdout.startswith("The red")
    bad = cli("generate", "--run", "runs/none", "--prompt", "x", cwd=tmp_path)
    assert bad.returncode == 1 and "not a run folder" in bad.stderr and "Traceback" not in bad.stderr
    (tmp_path/"rows.jsonl").write_text('{"body": "fine"}\nnot json\n')
    bad = cli("train", "--config", "run.yaml", "--out", "runs/other", cwd=tmp_path)
    assert bad.returncode == 1 and "rows.jsonl:2: not valid JSON" in bad.stderr
