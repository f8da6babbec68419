"The `wakea-edu` command as a shell runs it: exit codes, messages naming the problem, nothing half-written."
import json
import subprocess, sys
from pathlib import Path

import pytest

WAKEA = str(Path(sys.executable).parent/"wakea-edu")


def run(*args, cwd=None):
    return subprocess.run([WAKEA, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_help_lists_commands():
    r = run("--help")
    assert r.returncode == 0 and all(c in r.stdout for c in ("doctor", "world", "demo", "train", "generate"))


@pytest.mark.parametrize("args, needle", [
    (["doctor", "--colour", "red"], "--colour"),
    (["teleport"], "teleport"),
    (["world", "generate"], "--out"),
    (["world", "generate", "--out", "x", "--seed", "many"], "--seed"),
    (["world", "generate", "--out", "x", "--size", "3"], "--size"),
])
def test_bad_arguments_are_named(tmp_path, args, needle):
    r = run(*args, cwd=tmp_path)
    assert r.returncode == 2 and needle in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_doctor_exits_zero():
    r = run("doctor")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "[OK] core" in r.stdout and "[FAIL]" not in r.stdout


def test_world_generate_is_deterministic(tmp_path):
    for name in ("a", "b"): assert run("world", "generate", "--out", str(tmp_path/name), "--seed", "7").returncode == 0
    files = sorted(p.name for p in (tmp_path/"a").iterdir())
    assert files and all((tmp_path/"a"/f).read_bytes() == (tmp_path/"b"/f).read_bytes() for f in files)


def test_unwritable_output_is_a_clean_error(tmp_path):
    blocker = tmp_path/"file"
    blocker.write_text("in the way")
    r = run("world", "generate", "--out", str(blocker/"world"))
    assert r.returncode == 1 and "wakea-edu: error:" in r.stderr and "Traceback" not in r.stderr
    assert blocker.read_text() == "in the way"


def test_demo_runs_the_pipeline_and_writes_its_artefacts(tmp_path):
    r = run("demo", "--out", str(tmp_path/"demo"), "--steps", "3", "--train-stories", "300", "--samples", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = tmp_path/"demo"
    for name in ("summary.json", "triplets.png", "samples.txt", "pretrain/tokenizer.json", "pretrain/checkpoint.safetensors",
                 "pretrain/run.json", "pretrain/summary.json", "pretrain/metrics.jsonl", "tinyworld/corpus_train.txt"):
        assert (out/name).is_file(), name
    summary = json.loads((out/"summary.json").read_text())
    # one world, built once: the summary describes the very world the model trained on, and so does the run folder
    assert summary["tinyworld"]["splits"]["train"]["stories"] == 300 == summary["settings"]["train_stories"]
    assert json.loads((out/"pretrain"/"run.json").read_text())["world"]["stories"]["train"] == 300
    assert summary["pretraining"]["steps"] == 3 and summary["pretraining"]["val_bpc"] > summary["pretraining"]["exact_floor_bpc"]
    assert (out/"samples.txt").read_text().count("\n") == 2 and summary["samples"]["events"] >= 2
    assert "bits per character" in r.stdout and "follow the world's rules" in r.stdout and "(chapter 06)" in r.stdout
    broken = summary["samples"]["broken"]
    assert summary["samples"]["events_kept"] == summary["samples"]["events"] - len(broken)
    assert all(b["why"] and b["event"] for b in broken) and (not broken or "broken: " in r.stdout)
    # chapter 11's stage, at a few steps: the table of what pictures, sounds and the text alone tell, and the picture of it
    assert (out/"multimodal.png").read_bytes().startswith(b"\x89PNG") and summary["multimodal"]["steps"] == 9
    assert {m: set(summary["multimodal"][m]) for m in ("image", "audio")} == dict.fromkeys(("image", "audio"), {"fused", "shuffled input", "text only", "chance"})
    assert "(chapter 11)" in r.stdout
