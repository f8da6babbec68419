"TinyWorld: bad configs refused by name, deterministic atomic fixtures, splits that hold out surfaces not rules, the exact entropy floor."
import dataclasses, io, math, random, re
from pathlib import Path

import numpy as np
import pytest

import wakea_edu.core
from wakea_edu.core import ConfigError, load_config, save_config
from wakea_edu.world.render import STAGES, caption, captions, png_bytes, render, save_triplet_grid, scenes
from wakea_edu.world.tinyworld import (FIXTURE_FILES, MICRO_CONFIG, SPLITS, TinyWorld, WorldConfig, compression_bpc, entropy_floor_bpc,
                                       enumerate_stories, facts_graph, monte_carlo_entropy, questions, story_entropy, summary,
                                       write_fixtures)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def world():
    return TinyWorld(WorldConfig(seed=0))


@pytest.mark.parametrize("bad, field", [
    (dict(kinds={}), "kinds"),
    (dict(kinds={"cup": []}), "kinds['cup']"),
    (dict(colours=[]), "colours"),
    (dict(agents=["Mia", "Mia"]), "agents"),
    (dict(colours=["dark red"]), "colours"),
    (dict(places=["on the table. Then"]), "places"),
    (dict(actions={"drop": "drops", "push": "drops"}), "actions (verbs)"),
    (dict(rules={"*": {"drop": {"lands": 1.5}}}), "rules['*']['drop']['lands']"),
    (dict(rules={"*": {"drop": {"lands": -0.25, "bounces": 1.25}}}), "rules['*']['drop']['lands']"),
    (dict(rules={"glass": {"drop": {"shatters": 0.5, "cracks": 0.25}}}), "rules['glass']['drop']"),
    (dict(rules={"*": {"fly": {"soars": 1.0}}}), "rules['*']['fly']"),
    (dict(rules={"glass": {"drop": {"shatters": 1.0}}}), "rules"),  # no rule for other actions or materials
    (dict(stories={"train": 0, "val": 1, "test": 1}), "stories['train']"),
    (dict(stories={"train": 5}), "stories"),
    (dict(max_events=0), "max_events"),
    (dict(val_fraction=1.5), "val_fraction"),
    (dict(val_fraction=0.5, test_fraction=0.5), "val_fraction"),
    (dict(test_fraction=0.0001), "test_fraction"),
    (dict(image_size=4), "image_size"),
    (dict(seed=-1), "seed"),
    (dict(seed="zero"), "seed"),
])
def test_impossible_config_names_the_field(bad, field):
    with pytest.raises(ConfigError, match=re.escape(field)):
        WorldConfig(**bad)


def test_world_validates_a_config_changed_after_construction():
    config = WorldConfig()
    config.colours = []
    with pytest.raises(ConfigError, match="colours"): TinyWorld(config)


def test_yaml_round_trip_and_wrong_key_names_file_and_field(tmp_path):
    path = save_config(WorldConfig(seed=5), tmp_path/"world.yaml")
    assert load_config(WorldConfig, path) == WorldConfig(seed=5)
    path.write_text(path.read_text().replace("max_events:", "max_evnts:"))
    with pytest.raises(ConfigError) as e: load_config(WorldConfig, path)
    assert str(path) in str(e.value) and "max_evnts" in str(e.value)


def test_fixtures_are_deterministic_and_small(tmp_path):
    a, b = write_fixtures(tmp_path/"a", seed=0), write_fixtures(tmp_path/"b", seed=0)
    write_fixtures(tmp_path/"c", seed=1)
    assert [p.name for p in a] == list(FIXTURE_FILES)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    assert (tmp_path/"a"/"corpus_train.txt").read_bytes() != (tmp_path/"c"/"corpus_train.txt").read_bytes()
    assert sum(p.stat().st_size for p in a) < 600_000


def test_shipped_datasets_are_what_the_generator_writes(tmp_path):
    for path in write_fixtures(tmp_path, seed=0):
        assert path.read_bytes() == (ROOT/"datasets"/"tinyworld"/path.name).read_bytes(), f"regenerate datasets/tinyworld ({path.name})"


def test_fixtures_are_written_atomically(tmp_path, monkeypatch):
    reference = {p.name: p.read_bytes() for p in write_fixtures(tmp_path/"reference")}
    real_replace, calls = wakea_edu.core.os.replace, []
    def failing_replace(src, dst):
        calls.append(dst)
        if len(calls) == 3: raise OSError("disk full")
        real_replace(src, dst)
    monkeypatch.setattr(wakea_edu.core.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"): write_fixtures(tmp_path/"out")
    left = sorted(p.name for p in (tmp_path/"out").iterdir())
    assert left == sorted(FIXTURE_FILES[:2])  # no temporary file, no half-written third file
    assert all((tmp_path/"out"/name).read_bytes() == reference[name] for name in left)


def test_unwritable_output_leaves_nothing(tmp_path):
    blocker = tmp_path/"file"
    blocker.write_text("in the way")
    with pytest.raises(OSError): write_fixtures(blocker/"world")
    assert blocker.read_text() == "in the way" and list(tmp_path.iterdir()) == [blocker]


def test_corpus_and_stories(world):
    assert world.corpus("train") == "\n".join(world.stories("train"))
    assert len(world.stories("val")) == world.config.stories["val"]
    assert world.corpus("val").isascii() and "\n" not in "".join(world.stories("val"))
    with pytest.raises(ValueError, match="dev"): world.stories("dev")


def test_bigger_training_split_keeps_val_and_test():
    small, big = TinyWorld(WorldConfig()), TinyWorld(WorldConfig(stories={"train": 1600, "val": 200, "test": 200}))
    assert small.corpus("val") == big.corpus("val") and small.corpus("test") == big.corpus("test")
    assert big.stories("train")[:800] == small.stories("train")


def test_splits_hold_out_surfaces_but_share_every_rule(world):
    surfaces = {split: set(world.surfaces[split]) for split in SPLITS}
    assert not surfaces["train"] & surfaces["val"] and not surfaces["train"] & surfaces["test"] and not surfaces["val"] & surfaces["test"]
    for split in SPLITS: assert {e.surface for _, _, e in world.events(split)} <= surfaces[split]
    seen = {split: {(e.material, e.action) for _, _, e in world.events(split)} for split in SPLITS}
    every_rule = {(m, a) for m in world.config.materials for a in world.config.actions}
    assert seen["train"] == every_rule and seen["val"] <= seen["train"] and seen["test"] <= seen["train"]


def test_micro_world_enumeration_equals_the_formula():
    micro = TinyWorld(WorldConfig(**MICRO_CONFIG))
    for split in SPLITS:
        listed = enumerate_stories(micro, split)
        texts, probs = [t for t, _ in listed], [p for _, p in listed]
        bits, chars = story_entropy(micro, split)
        assert len(set(texts)) == len(texts)
        assert math.isclose(sum(probs), 1, abs_tol=1e-12)
        assert math.isclose(-sum(p * math.log2(p) for p in probs), bits, abs_tol=1e-9)
        assert math.isclose(sum(p * (len(t) + 1) for t, p in listed), chars, abs_tol=1e-9)


def test_sampled_log_probabilities_match_enumeration():
    micro = TinyWorld(WorldConfig(**MICRO_CONFIG))
    probs = dict(enumerate_stories(micro, "train"))
    rng = random.Random(3)
    for _ in range(200):
        story = micro.sample_story(rng, "train")
        assert math.isclose(story.log2_prob, math.log2(probs[story.text]), abs_tol=1e-9)


def test_monte_carlo_agrees_with_the_exact_entropy(world):
    for split in SPLITS:
        mc, (bits, chars) = monte_carlo_entropy(world, split, 2000), story_entropy(world, split)
        assert abs(mc["bits"] - bits) < 3 * mc["bits_se"] and abs(mc["chars"] - chars) < 3 * mc["chars_se"]


def test_floor_target_and_lzma_bound(world):
    for split in SPLITS:
        floor = entropy_floor_bpc(world, split)
        assert 0.3 <= floor <= 1.0
        assert compression_bpc(world.corpus(split) + "\n") > floor


def test_render_shapes_and_png(world):
    event = next(e for _, _, e in world.events("train") if e.result == "shatters")
    frames = [render(world, event, stage) for stage in STAGES]
    assert all(f.shape == (32, 32, 3) and f.dtype == np.uint8 for f in frames)
    assert not np.array_equal(frames[0], frames[2])
    assert scenes(world, "val", limit=2).shape == (2, 3, 32, 32, 3)
    assert render(TinyWorld(WorldConfig(image_size=48)), event, "result").shape == (48, 48, 3)
    with pytest.raises(ValueError, match="stage"): render(world, event, "after")
    Image = pytest.importorskip("PIL.Image")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png_bytes(frames[1]))).convert("RGB")), frames[1])


def test_captions_say_what_each_picture_shows(world):
    event = next(e for _, _, e in world.events("train") if e.action == "drop")
    what, action, result = (caption(world, event, stage) for stage in STAGES)
    assert what == f"a {event.size} {event.colour} {event.material} {event.kind} {event.place}"
    assert action == f"someone drops the {event.what} {event.place}" and result == f"the {event.what} {event.place} {event.result}"
    assert caption(world, dataclasses.replace(event, size="odd"), "what").startswith("an odd ")
    with pytest.raises(ValueError, match="stage"): caption(world, event, "after")
    rows = captions(world, "test", limit=5)
    assert len(rows) == 5 and rows[0] == tuple(caption(world, next(e for _, _, e in world.events("test")), s) for s in STAGES)
    # the pictures of a split hold out its surfaces, as its stories do
    surfaces = {split: {e.surface for _, _, e in world.events(split)} for split in SPLITS}
    assert not surfaces["train"] & surfaces["test"] and not surfaces["train"] & surfaces["val"]


def test_save_triplet_grid(world, tmp_path):
    path = save_triplet_grid(world, tmp_path/"grid.png", n=3)
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_facts_graph_is_typed_and_rules_are_distributions(world):
    g = facts_graph(world, "val")
    assert all("type" in d for _, d in g.nodes(data=True)) and all("relation" in d for *_, d in g.edges(data=True))
    for node, kind in g.nodes(data="type"):
        if kind == "rule":
            total = sum(d["probability"] for *_, d in g.out_edges(node, data=True) if d["relation"] == "result")
            assert math.isclose(total, 1.0)
    assert sum(kind == "event" for _, kind in g.nodes(data="type")) == len(world.events("val"))


def test_questions_have_consistent_answers(world):
    qs = questions(world, "test")
    assert len(qs) == world.config.questions and {q["hops"] for q in qs} == {1, 2}
    for q in qs:
        events = world.episodes("test")[q["story"]].events
        if q["type"] in ("where", "where-result"): assert q["answer"] in {e.place for e in events}
        if q["type"] == "who": assert q["answer"] in {e.agent for e in events}
        if q["type"] == "material": assert q["answer"] in {e.material for e in events}


def test_summary(world):
    info = summary(world)
    assert set(info["splits"]) == set(SPLITS) and info["rules"] == 56
    assert info["splits"]["val"]["entropy_floor_bpc"] == round(entropy_floor_bpc(world, "val"), 6)
    assert "shatters" in info["vocabulary"]["results"] and "drop" in info["vocabulary"]["actions"]
