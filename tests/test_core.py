"Bad input for the core helpers: every refusal names the file or field, and nothing is half-written."
import dataclasses, json, os, subprocess, sys, time, typing

import pytest, torch

from wakea_edu.core import (CheckpointError, ConfigError, atomic_write, check_number, config_from_dict, get_device, load_checkpoint,
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


@pytest.mark.parametrize("text, needle", [
    ("", "empty config file"), ("# only a comment\n", "empty config file"), ("false\n", "expects a mapping for Outer, got bool False"),
    ("- name: x\n", "expects a mapping for Outer, got list"), ("just words\n", "expects a mapping for Outer, got str"),
    ("[" * 1000 + "]" * 1000, "nested more than 32 levels deep"),                      # JSON is YAML
    ('{"name": ' * 1000 + '"x"' + "}" * 1000, "nested more than 32 levels deep"),
    ("".join("  " * i + f"k{i}:\n" for i in range(1000)) + "  " * 1000 + "x: 1\n", "nested more than 32 levels deep"),
    ("a0: &a0 [1]\n" + "".join(f"a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 1500)), "nested more than 32 levels deep"),  # deep through aliases
])
def test_empty_non_mapping_and_deep_files_are_refused_quickly(tmp_path, text, needle):
    path = tmp_path/"bad.yaml"
    path.write_text(text)
    start = time.perf_counter()
    with pytest.raises(ConfigError) as e: load_config(Outer, path)
    assert str(e.value).startswith(f"{path}: ") and needle in str(e.value) and time.perf_counter() - start < 2
    assert len(e.traceback) < 10                                          # one frame of ours, not a wall of recursion


def test_deep_dicts_and_shared_parts_are_refused_without_recursion():
    deep = {"name": "x"}
    for _ in range(5000): deep = {"inner": deep}
    with pytest.raises(ConfigError, match="<dict>: nested more than 32"): config_from_dict(Outer, deep)
    laughs = ["ha"] * 10
    for _ in range(30): laughs = [laughs] * 10                             # 10**31 leaves, 31 distinct lists
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="field 'widths\\[0\\]' expects int, got list"): config_from_dict(Outer, {"name": "x", "widths": laughs})
    with pytest.raises(ConfigError, match="nested more than 32"): config_from_dict(Outer, {"name": "x", "widths": [laughs]})
    assert time.perf_counter() - start < 1


@pytest.mark.parametrize("value, kwargs, message", [
    (float("nan"), dict(low=0, low_open=True), "lr: must be a finite number > 0, got nan"),
    (float("inf"), dict(low=0), "lr: must be a finite number >= 0, got inf"),
    (-5, dict(low=1, integer=True), "lr: must be an int >= 1, got -5"),
    (2.0, dict(low=1, integer=True), "lr: must be an int >= 1, got 2.0"),
    (True, dict(low=0), "lr: must be a finite number >= 0, got True"),
    (1.5, dict(low=0, high=1), "lr: must be a finite number in [0, 1], got 1.5"),
    (1.0, dict(low=0, high=1, high_open=True), "lr: must be a finite number in [0, 1), got 1.0"),
    ("fast", dict(low=0), "lr: must be a finite number >= 0, got 'fast'"),
])
def test_check_number_names_the_field_and_the_value(value, kwargs, message):
    with pytest.raises(ConfigError) as e: check_number("lr", value, **kwargs)
    assert str(e.value) == message


def test_check_number_accepts_what_fits():
    for value, kwargs in ((3e-4, dict(low=0, low_open=True)), (0, dict(low=0, integer=True)), (10**400, dict(low=1, integer=True)),
                          (1, dict(low=0, high=1)), (0.5, dict(low=0, high=1, low_open=True, high_open=True))):
        check_number("x", value, **kwargs)


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


@pytest.mark.parametrize("damage", ["truncate", "flip_header", "flip_data", "empty", "short", "text"])
def test_damaged_checkpoint_is_refused_by_name(ckpt, damage):
    path, _ = ckpt
    blob = path.read_bytes()
    path.write_bytes({"truncate": blob[:len(blob)//3], "flip_header": blob[:40] + bytes([blob[40] ^ 0xFF]) + blob[41:],
                      "flip_data": blob[:-1] + bytes([blob[-1] ^ 1]), "empty": b"", "short": b"\x01\x02",
                      "text": b"name: tiny\nlr: 0.1\n"}[damage])
    with pytest.raises(CheckpointError, match=str(path.name)): load_checkpoint(path)


def header_of(path):
    blob = path.read_bytes()
    n = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8:8 + n]), blob[8 + n:]


def with_header(path, header, data):
    "Rewrite safetensors file `path` with `header` (padded as safetensors pads) and the tensor bytes `data`."
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + data)


def test_checkpoint_is_one_file_whose_header_holds_the_meta(ckpt):
    path, _ = ckpt
    header, _ = header_of(path)
    assert [p.name for p in path.parent.iterdir()] == ["m.safetensors"]
    assert header["__metadata__"].keys() == {"format", "version", "sha256", "meta"}
    assert json.loads(header["__metadata__"]["meta"]) == {"step": 3}


@pytest.mark.parametrize("edit, needle", [
    (lambda md: md.pop("format"), "not a wakea-checkpoint"), (lambda md: md.update(format="pickle"), "format 'pickle'"),
    (lambda md: md.update(version="99"), "checkpoint version '99'"), (lambda md: md.pop("sha256"), "lacks the meta or the checksum"),
    (lambda md: md.update(meta='{"step": 4}'), "do not match the checksum"),     # an edited meta is caught like edited tensors
    (lambda md: md.update(sha256="0" * 64), "do not match the checksum"),
])
def test_bad_header_metadata_is_refused(ckpt, edit, needle):
    path, _ = ckpt
    header, data = header_of(path)
    edit(header["__metadata__"])
    with_header(path, header, data)
    with pytest.raises(CheckpointError, match=needle): load_checkpoint(path)


def test_edited_dtype_or_shape_is_caught_by_the_checksum(ckpt):
    path, _ = ckpt
    header, data = header_of(path)
    header["w"]["dtype"] = "I32"           # the same size: the file still parses
    with_header(path, header, data)
    with pytest.raises(CheckpointError, match="checksum"): load_checkpoint(path)


def test_a_file_that_is_not_ours_is_refused_before_its_tensors_are_read(tmp_path):
    import safetensors.torch
    plain = tmp_path/"plain.safetensors"
    plain.write_bytes(safetensors.torch.save({"x": torch.zeros(2)}))
    with pytest.raises(CheckpointError, match="not a wakea-checkpoint"): load_checkpoint(plain)
    # 2 GB, sparse: refused from the header alone, which reading 2 GB could not be in this time
    big = tmp_path/"big.safetensors"
    text = json.dumps({"x": {"dtype": "U8", "shape": [2**31], "data_offsets": [0, 2**31]}}).encode().ljust(64)
    with open(big, "wb") as f: f.write(len(text).to_bytes(8, "little") + text); f.truncate(8 + len(text) + 2**31)
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match="big.safetensors: a safetensors file, but not a wakea-checkpoint"): load_checkpoint(big)
    absurd = tmp_path/"absurd.safetensors"
    absurd.write_bytes((2**40).to_bytes(8, "little") + b"{}")
    with pytest.raises(CheckpointError, match="1,099,511,627,776-byte header"): load_checkpoint(absurd)
    capped = tmp_path/"capped.safetensors"
    with open(capped, "wb") as f: f.write((200_000_000).to_bytes(8, "little")); f.truncate(300_000_000)
    with pytest.raises(CheckpointError, match="200,000,000-byte header"): load_checkpoint(capped)   # over the 100 MB cap: never read
    assert time.perf_counter() - start < 1.0


def test_a_directory_is_refused_by_name(tmp_path):
    with pytest.raises(CheckpointError, match=f"{tmp_path}: is a directory"): load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match=f"{tmp_path}: is a directory"): save_checkpoint(tmp_path, {"w": torch.ones(1)})


def test_the_old_two_file_format_is_refused_by_name(tmp_path):
    import hashlib, safetensors.torch
    blob = safetensors.torch.save({"w": torch.ones(2)})
    (tmp_path/"m.safetensors").write_bytes(blob)
    (tmp_path/"m.json").write_text(json.dumps({"format": "wakea-checkpoint", "version": 1, "sha256": hashlib.sha256(blob).hexdigest(), "meta": {}}))
    with pytest.raises(CheckpointError, match="old two-file format"): load_checkpoint(tmp_path/"m.safetensors")


def test_names_that_shared_a_sidecar_no_longer_collide(tmp_path):
    saved = {name: save_checkpoint(tmp_path/name, {"w": torch.full((2,), float(i))}, {"name": name})
             for i, name in enumerate(["m.safetensors", "m.pt", "m.json", "model.json"])}
    for i, (name, path) in enumerate(saved.items()):
        tensors, meta = load_checkpoint(path)
        assert meta == {"name": name} and tensors["w"].tolist() == [float(i)] * 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(saved)


def test_unserialisable_meta_writes_nothing(tmp_path):
    with pytest.raises(TypeError): save_checkpoint(tmp_path/"m.safetensors", {"w": torch.ones(1)}, {"bad": object()})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.name != "posix", reason="orphans are told by their writer's pid on POSIX only")
def test_the_next_write_removes_what_a_killed_writer_left(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    orphan, live = tmp_path/f".m.safetensors.tmp-{dead}-abcd1234", tmp_path/f".m.safetensors.tmp-{os.getppid()}-abcd1234"
    other = tmp_path/f".n.safetensors.tmp-{dead}-abcd1234"             # another file's: not this write's business
    for p in (orphan, live, other): p.write_bytes(b"half a checkpoint")
    save_checkpoint(tmp_path/"m.safetensors", {"w": torch.ones(1)})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["m.safetensors", live.name, other.name])


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
