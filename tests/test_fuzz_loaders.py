"Every loader, fed random bytes or a damaged copy of a valid file, either loads it or raises its own module's error."
import json, tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from wakea_edu.core import CheckpointError, ConfigError, load_checkpoint, load_config, save_checkpoint, save_config
from wakea_edu.grading import GradingError, read_notebook
from wakea_edu.text.tokenizer import BPETokenizer, TokenizerError
from wakea_edu.text.train import TrainConfig, read_run

ROOT = Path(__file__).resolve().parents[1]


def valid_files() -> dict[str, tuple[str, bytes, object, type]]:
    "name -> (file name, a valid file's bytes, its loader, the loader's error type)."
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        save_checkpoint(d/"m.safetensors", {"w": torch.arange(12.0).reshape(3, 4), "b": torch.ones(2, dtype=torch.int64)},
                        {"step": 3, "note": "fuzz"})
        save_config(TrainConfig(steps=200, batch_size=4), d/"train.yaml")
        BPETokenizer.train("the cat sat on the mat. " * 20, 270).save(d/"tok.json")
        run = {"format": "wakea-run", "version": 1, "model": {"class": "WakeaLM"}, "checkpoint": "checkpoint.safetensors"}
        read = lambda name: (d/name).read_bytes()
        return {
            "checkpoint": ("m.safetensors", read("m.safetensors"), load_checkpoint, CheckpointError),
            "config": ("train.yaml", read("train.yaml"), lambda p: load_config(TrainConfig, p), ConfigError),
            "tokenizer": ("tok.json", read("tok.json"), BPETokenizer.load, TokenizerError),
            "notebook": ("02_x.ipynb", (ROOT/"solutions"/"02_tokenizer.ipynb").read_bytes(), read_notebook, GradingError),
            "run": ("run.json", json.dumps(run).encode(), lambda p: read_run(p.parent), CheckpointError),
        }


VALID = valid_files()


def load_or_refuse(name: str, data: bytes):
    "Write `data` where loader `name` reads and call it: fine if it loads, fine if it raises its own error."
    file, _, loader, error = VALID[name]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d)/file
        path.write_bytes(data)
        try: loader(path)
        except error: pass


@pytest.mark.parametrize("name", VALID)
def test_valid_files_load(name):
    file, data, loader, _ = VALID[name]
    with tempfile.TemporaryDirectory() as d:
        (Path(d)/file).write_bytes(data)
        loader(Path(d)/file)


FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("name", VALID)
@FUZZ
@given(data=st.binary(max_size=4096))
def test_random_bytes(name, data):
    load_or_refuse(name, data)


@pytest.mark.parametrize("name", VALID)
@FUZZ
@given(cut=st.floats(0, 1), flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=4))
def test_truncated_or_flipped_valid_files(name, cut, flips):
    data = bytearray(VALID[name][1][:int(len(VALID[name][1]) * cut)])
    for where, value in flips:
        if data: data[min(int(where * len(data)), len(data) - 1)] = value
    load_or_refuse(name, bytes(data))


@pytest.mark.parametrize("name", ["config", "tokenizer", "notebook", "run"])
def test_deep_nesting_is_refused_not_a_traceback_wall(name):
    load_or_refuse(name, b"[" * 100_000 + b"]" * 100_000)
    load_or_refuse(name, b"a:\n" + b"".join(b"  " * i + b"b:\n" for i in range(1, 3000)))
