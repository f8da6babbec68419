"Bad input for the core helpers: every refusal names the file or field, and nothing is half-written."
import dataclasses, json, os, typing

import pytest, torch

from wakea_edu.core import (CheckpointError, ConfigError, atomic_write, config_from_dict, get_device, load_checkpoint,
                            load_config, save_checkpoint, save_config, seed_everything)


@dataclasses.dataclass
class Inner:
    lr: float = 1e-3
    schedule: typing.Literal["cosine", "constant"] = "cosine"


@dataclasses.dataclass
class Outer:
    name: str
    layers: int = 2
    widths: list[int] = dataclasses.field(default_factory=lambda: [8, 8])
    device: typing.Optional[str] = None
    inner: Inner = dataclasses.field(default_factory=Inner)


def test_config_round_trip(tmp_path):
    cfg = Outer("x", widths=[1, 2, 3], inner=Inner(lr=0.5, schedule="constant"))
    assert load_config(Outer, save_config(cfg, tmp_path/"c.yaml")) == cfg


@pytest.mark.parametrize("text, needle", [
    ("name: x\nlayer: 3\n", "unknown field 'layer'"),
    ("name: x\nlayers: three\n", "field 'layers' expects int, got str 'three'"),
    ("name: x\nlayers: true\n", "field 'layers' expects int, got bool True"),
    ("name: x\nwidths: [1, two]\n", "field 'widths[1]' expects int"),
    ("name: x\ninner: {lr: fast}\n", "field 'inner.lr' expects float"),
    ("name: x\ninner: {schedule: linear}\n", "field 'inner.schedule' expects one of ['cosine', 'constant']"),
    ("name: x\ninner: {rate: 1}\n", "unknown field 'inner.rate'"),
    ("layers: 3\n", "missing field 'name'"),
    ("- a list\n", "expects a mapping for Outer"),
    ("name: [x\n", "not valid YAML at line"),
])
def test_config_errors_name_file_and_field(tmp_path, text, needle):
    path = tmp_path/"bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e: load_config(Outer, path)
    assert str(path) in str(e.value) and needle in str(e.value)


def test_config_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"): load_config(Outer, tmp_path/"nope.yaml")


def test_config_suggests_close_name():
    with pytest.raises(ConfigError, match="did you mean 'layers'"): config_from_dict(Outer, {"name": "x", "layerz": 1})


def test_int_accepted_as_float():
    assert config_from_dict(Inner, {"lr": 1}).lr == 1.0


@pytest.fixture
def ckpt(tmp_path):
    state = {"w": torch.randn(5, 3), "b": torch.arange(4)}
    return save_checkpoint(tmp_path/"m.safetensors", state, {"step": 3}), state


def test_checkpoint_round_trip_bit_exact(ckpt):
    path, state = ckpt
    tensors, meta = load_checkpoint(path)
    assert meta == {"step": 3} and all(torch.equal(tensors[k], v) for k, v in state.items())


def test_tied_weights_are_saved(tmp_path):
    w = torch.randn(3, 3)
    tensors, _ = load_checkpoint(save_checkpoint(tmp_path/"t.safetensors", {"a": w, "b": w}))
    assert torch.equal(tensors["a"], tensors["b"])


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty"])
def test_damaged_checkpoint_is_refused_by_name(ckpt, damage):
    path, _ = ckpt
    blob = path.read_bytes()
    path.write_bytes({"truncate": blob[:len(blob)//3], "flip": blob[:40] + bytes([blob[40] ^ 0xFF]) + blob[41:], "empty": b""}[damage])
    with pytest.raises(CheckpointError, match=str(path.name)): load_checkpoint(path)


def test_matching_checksum_but_not_safetensors(ckpt):
    path, _ = ckpt
    import hashlib
    path.write_bytes(b"not safetensors at all")
    side = json.loads(path.with_suffix(".json").read_text())
    side["sha256"] = hashlib.sha256(b"not safetensors at all").hexdigest()
    path.with_suffix(".json").write_text(json.dumps(side))
    with pytest.raises(CheckpointError, match="not a valid safetensors file"): load_checkpoint(path)


@pytest.mark.parametrize("sidecar, needle", [
    (None, "m.json: checkpoint file not found"), ("{broken", "not valid JSON"),
    ('{"format": "pickle"}', "not a wakea-checkpoint sidecar"),
    ('{"format": "wakea-checkpoint", "version": 99}', "checkpoint version 99"),
])
def test_bad_sidecar_is_refused(ckpt, sidecar, needle):
    path, _ = ckpt
    side = path.with_suffix(".json")
    if sidecar is None: side.unlink()
    else: side.write_text(sidecar)
    with pytest.raises(CheckpointError, match=needle): load_checkpoint(path)


def test_unserialisable_meta_writes_nothing(tmp_path):
    with pytest.raises(TypeError): save_checkpoint(tmp_path/"m.safetensors", {"w": torch.ones(1)}, {"bad": object()})
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    target = atomic_write(tmp_path/"f.txt", "old")
    def broken_replace(*a): raise OSError("disk full")
    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError): atomic_write(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_device_override(monkeypatch):
    monkeypatch.setenv("WAKEA_DEVICE", "cpu")
    assert get_device() == torch.device("cpu")
    monkeypatch.setenv("WAKEA_DEVICE", "quantum")
    with pytest.raises(ValueError, match="unknown device 'quantum'"): get_device()


def test_seed_everything_repeats():
    seed_everything(5); a = torch.randn(3)
    seed_everything(5); assert torch.equal(a, torch.randn(3))


@dataclasses.dataclass
class Validated:
    n: int = 1
    def __post_init__(self):
        if self.n < 1: raise ConfigError(f"n: must be >= 1, got {self.n}")


def test_dataclass_validation_errors_name_the_file(tmp_path):
    path = tmp_path/"v.yaml"
    path.write_text("n: 0\n")
    with pytest.raises(ConfigError, match=rf"^{path}: n: must be >= 1, got 0$"): load_config(Validated, path)
