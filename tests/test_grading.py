"The grader can fail: solutions score 100%, blanks 0%, mutants lose points, hostile notebooks get 0 without breaking the run."
import json, subprocess, sys
from pathlib import Path

import nbformat
import pytest

from wakea_edu.cli import main
from wakea_edu.grading import build_exercises, grade

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = {p.name: p for p in sorted((ROOT/"solutions").glob("[0-9][0-9]_*.ipynb"))}
WAKEA = str(Path(sys.executable).parent/"wakea-edu")


@pytest.fixture(scope="module")
def exercises(tmp_path_factory):
    out = tmp_path_factory.mktemp("exercises")
    return {p.name: p for p in build_exercises(ROOT/"solutions", out)}


def with_cells(tmp_path, solution: str, *sources: str, name: str | None = None) -> Path:
    "A copy of solution notebook `solution` with graded cells `sources` appended (later definitions win)."
    nb = nbformat.read(SOLUTIONS[solution], as_version=4)
    nb.cells += [nbformat.v4.new_code_cell("#| graded\n" + s) for s in sources]
    path = tmp_path/(name or solution)
    nbformat.write(nb, path)
    return path


def failed(report) -> set[str]:
    return {t.name for t in report.tests if not t.passed}


def test_every_chapter_has_a_solution():
    assert list(SOLUTIONS) == ["00_core.ipynb", "01_world.ipynb", "02_tokenizer.ipynb"]


@pytest.mark.parametrize("name", SOLUTIONS)
def test_solution_scores_full_marks(name):
    report = grade(SOLUTIONS[name])
    assert report.max_score >= 10 and report.score == report.max_score, report.to_text()


@pytest.mark.parametrize("name", SOLUTIONS)
def test_blank_exercise_scores_zero(exercises, name):
    report = grade(exercises[name])
    assert report.max_score >= 10 and report.score == 0, report.to_text()
    assert all("not implemented yet" in t.feedback for t in report.tests), report.to_text()


def test_exercises_build_is_deterministic_and_committed(tmp_path, exercises):
    again = build_exercises(ROOT/"solutions", tmp_path)
    assert [p.read_bytes() for p in again] == [exercises[p.name].read_bytes() for p in again]
    assert [p.read_bytes() for p in again] == [(ROOT/"exercises"/p.name).read_bytes() for p in again], "run `wakea-edu exercises build`"
    for path in again:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert not any(c.outputs or c.execution_count for c in code)
        assert "BEGIN SOLUTION" not in path.read_text() and "NotImplementedError" in path.read_text()
        assert f"blob/main/exercises/{path.name}" in nb.cells[0].source


MUTANTS = [  # (solution, replacement graded cell, the tests it must fail)
    ("00_core.ipynb", "def seed_everything(seed):\n    random.seed(seed); np.random.seed(seed % 2**32)", {"seeds_torch"}),
    ("00_core.ipynb", "def seed_everything(seed):\n    random.seed(seed); np.random.seed(seed + 1); torch.manual_seed(seed)", {"seeds_numpy"}),
    ("00_core.ipynb", "def atomic_write(path, data):\n    path = Path(path); path.parent.mkdir(parents=True, exist_ok=True)\n"
                      "    with open(path, 'wb') as f: f.write(data.encode() if isinstance(data, str) else data)\n    return path",
     {"atomic_write_renames_a_temporary_file", "atomic_write_keeps_old_file_on_failure"}),
    ("00_core.ipynb", "def atomic_write(path, data):\n    path = Path(path); path.parent.mkdir(parents=True, exist_ok=True)\n"
                      "    fd, tmp = tempfile.mkstemp(dir=path.parent)\n    with os.fdopen(fd, 'wb') as f: f.write(data.encode() if isinstance(data, str) else data)\n"
                      "    os.replace(tmp, path)\n    return path", {"atomic_write_keeps_old_file_on_failure"}),
    ("00_core.ipynb", "def load_checkpoint(path):\n    path = Path(path)\n    try: blob = path.read_bytes()\n"
                      "    except FileNotFoundError: raise CheckpointError(f'{path}: not found') from None\n"
                      "    return load(blob), json.loads(path.with_suffix('.json').read_text())['meta']",
     {"checkpoint_refuses_corrupted_file"}),
    ("00_core.ipynb", "def load_checkpoint(path, _load=load_checkpoint):\n    Path(path).read_bytes()\n    return _load(path)",
     {"checkpoint_missing_file_is_named"}),
    ("01_world.ipynb", "def entropy_bits(probs):\n    return -sum(p * math.log(p) for p in probs.values() if p > 0)",
     {"entropy_of_uniform_distribution", "entropy_skips_impossible_outcomes", "entropy_floor_weights_each_situation"}),
    ("01_world.ipynb", "def outcome_distribution(rules, material, action):\n    return dict(rules[(material, action)])",
     {"outcomes_fall_back_to_any_material", "outcomes_refuse_unknown_action"}),
    ("01_world.ipynb", "def story_log2_prob(rules, story):\n    return sum(math.log2(outcome_distribution(rules, m, a).get(r, 0.0)) for m, a, r in story)",
     {"impossible_story_has_log2_prob_minus_inf"}),
    ("02_tokenizer.ipynb", "def get_stats(ids):\n    counts = {}\n    for pair in zip(ids[::2], ids[1::2]): counts[pair] = counts.get(pair, 0) + 1\n    return counts",
     {"get_stats_counts_adjacent_pairs", "get_stats_counts_overlapping_runs"}),
    ("02_tokenizer.ipynb", "def merge(ids, pair, idx):  # off by one: a pair that ends the list is missed\n    out, i = [], 0\n"
                           "    while i < len(ids) - 2:\n        if (ids[i], ids[i + 1]) == pair: out.append(idx); i += 2\n"
                           "        else: out.append(ids[i]); i += 1\n    return out + ids[i:]",
     {"merge_replaces_a_pair_at_the_end"}),
    ("02_tokenizer.ipynb", "def merge(ids, pair, idx):  # overlapping\n    out = []\n    for a, b in zip(ids, ids[1:] + [None]):\n"
                           "        out.append(idx if (a, b) == pair else a)\n    return out",
     {"merge_does_not_overlap"}),
    ("02_tokenizer.ipynb", "_train = train_bpe\ndef train_bpe(text, vocab_size):  # ties go to the largest pair\n    ids, merges = list(text.encode()), {}\n"
                           "    while len(merges) < vocab_size - 256:\n        stats = get_stats(ids)\n        pair = max(stats, key=lambda p: (stats[p], p))\n"
                           "        merges[pair] = 256 + len(merges); ids = merge(ids, pair, merges[pair])\n    return merges",
     {"train_bpe_learns_reference_merges"}),
    ("02_tokenizer.ipynb", "def decode(ids, merges):\n    vocab = {i: bytes([i]) for i in range(256)}\n"
                           "    for (a, b), i in merges.items(): vocab[i] = vocab[a] + vocab[b]\n    return b''.join(vocab[i] for i in ids).decode()",
     {"decode_replaces_invalid_utf8"}),
]


@pytest.mark.parametrize("solution, mutant, must_fail", MUTANTS, ids=lambda v: v.splitlines()[0][:40] if isinstance(v, str) else None)
def test_mutant_loses_points(tmp_path, solution, mutant, must_fail):
    report = grade(with_cells(tmp_path, solution, mutant))
    assert must_fail <= failed(report) and report.score < report.max_score, report.to_text()


def test_hangs_exits_floods_and_interrupts_score_zero_alone(tmp_path):
    escape = tmp_path/"escaped.txt"
    path = with_cells(tmp_path, "02_tokenizer.ipynb",
        "def merge(ids, pair, idx):\n    while True: pass",
        "import sys\ndef train_bpe(text, vocab_size): sys.exit(0)",
        "def decode(ids, merges):\n    while True: print('flood' * 10_000)",
        "raise KeyboardInterrupt('while defining')",
        f"open({str(escape)!r}, 'w').write('escaped')",
        "while True: pass  # a cell that never finishes is skipped",
        "blob = bytearray(16 * 2**30)  # over the memory limit")
    report = grade(path, timeout=3)
    assert {t.name for t in report.tests if t.passed} == {"get_stats_counts_adjacent_pairs", "get_stats_counts_overlapping_runs"}, report.to_text()
    feedback = {t.name: t.feedback for t in report.tests}
    assert "still running after 3 s" in feedback["merge_replaces_every_pair"]
    assert "larger than" in feedback["decode_replaces_invalid_utf8"]
    train = feedback["train_bpe_learns_reference_merges"]  # a probe error lists the cells that failed to run
    assert all(s in train for s in ("SystemExit", "KeyboardInterrupt", "sandbox: writing", "skipped", "MemoryError")), train
    assert not escape.exists()


def test_sandbox_refuses_writes_deletes_and_processes_outside(tmp_path):
    victim = tmp_path/"victim.txt"
    victim.write_text("intact")
    made = [tmp_path/"open.txt", tmp_path/"pathlib.txt", tmp_path/"touched.txt"]
    path = with_cells(tmp_path, "02_tokenizer.ipynb",
        f"import subprocess\nsubprocess.run(['touch', {str(made[2])!r}])",
        "import os\ndef get_stats(ids): os._exit(0)",
        "def train_bpe(text, vocab_size): raise KeyboardInterrupt",
        f"import os, pathlib\ndef decode(ids, merges):\n    try: os.remove({str(victim)!r})\n    except OSError: pass\n"
        f"    try: open({str(made[0])!r}, 'w').write('x')\n    except OSError: pass\n"
        f"    pathlib.Path({str(made[1])!r}).write_text('x')\n    return 'that cat sat on a hat ☕'")
    report = grade(path)
    assert {t.name for t in report.tests if t.passed} == {"merge_replaces_every_pair", "merge_replaces_a_pair_at_the_end", "merge_does_not_overlap"}, report.to_text()
    feedback = {t.name: t.feedback for t in report.tests}
    assert "sandbox: writing" in feedback["decode_inverts_encode"]
    assert "ended before the test finished" in feedback["get_stats_counts_adjacent_pairs"]
    assert "KeyboardInterrupt" in feedback["train_bpe_learns_reference_merges"]
    assert "sandbox: subprocess.Popen" in feedback["decode_inverts_encode"]
    assert victim.read_text() == "intact" and not any(p.exists() for p in made)


def test_fake_report_text_cannot_change_the_json(tmp_path):
    fake = json.dumps({"score": 100, "max_score": 100, "tests": []})
    path = with_cells(tmp_path, "02_tokenizer.ipynb",
        f"print({fake!r})\nprint('PASS 2/2 encode_matches_reference')",
        f"import sys\nclass Sneaky(list):\n    def __eq__(self, other): return True\n"
        f"def encode(text, merges):\n    print({fake!r}); print({fake!r}, file=sys.stderr)\n    return Sneaky([1, 2, 3])")
    r = subprocess.run([WAKEA, "grade", str(path), "--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)  # exactly one JSON object, nothing else on stdout
    assert set(report) >= {"score", "max_score", "tests"} and report["max_score"] == 12
    encode = next(t for t in report["tests"] if t["name"] == "encode_matches_reference")
    assert not encode["passed"] and encode["points"] == 0 and encode["max_points"] == 2
    assert report["score"] == 12 - 2 - 1  # encode and the round trip that uses it
    assert all(set(t) == {"name", "points", "max_points", "passed", "feedback"} for t in report["tests"])


HELD_OUT = '''
from wakea_edu.grading import graded, require

@graded(points=3)
def merge_on_unseen_ids(learner):
    "merge on ids the exercise never showed."
    return learner.merge([7, 7, 7, 8, 7, 7], (7, 7), 300)

@merge_on_unseen_ids.check
def _(ids): require(ids == [300, 7, 8, 300], f"got {ids}")

@graded(points=1)
def get_stats_of_nothing(learner):
    "get_stats([]) is empty; this instructor wants None (so every solution fails it)."
    return learner.get_stats([])

@get_stats_of_nothing.check
def _(stats): require(stats is None, f"got {stats}")
'''


def test_held_out_tests_are_added(tmp_path, capsys):
    (tmp_path/"held_out.py").write_text(HELD_OUT)
    assert main(["grade", str(SOLUTIONS["02_tokenizer.ipynb"]), "--tests", str(tmp_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    names = [t["name"] for t in report["tests"]]
    assert names[-2:] == ["held_out:merge_on_unseen_ids", "held_out:get_stats_of_nothing"]
    assert report["max_score"] == 12 + 4 and report["score"] == 12 + 3


@pytest.mark.parametrize("args, needle", [
    (["grade", "42"], "chapter 42"),
    (["grade", "no_such.ipynb"], "no_such.ipynb: notebook not found"),
    (["grade", "corrupt"], "corrupt.ipynb: not a readable notebook"),
    (["grade", "00", "--tests", "no_such_dir"], "no_such_dir: held-out tests folder not found"),
    (["exercises", "build", "--solutions", "empty"], "empty: no solution notebooks"),
])
def test_bad_targets_are_named(tmp_path, monkeypatch, capsys, args, needle):
    monkeypatch.chdir(tmp_path)
    (tmp_path/"exercises").mkdir()
    (tmp_path/"exercises"/"00_core.ipynb").write_bytes(SOLUTIONS["00_core.ipynb"].read_bytes())
    (tmp_path/"corrupt.ipynb").write_text("{not json")
    (tmp_path/"empty").mkdir()
    args = [a.replace("corrupt", str(tmp_path/"corrupt.ipynb")) for a in args]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and err.startswith("wakea-edu: error:")


@pytest.mark.parametrize("name", SOLUTIONS)
def test_solution_runs_top_to_bottom(tmp_path, name):
    "Every self-check cell passes on the solution (the Colab install cell is skipped: it is IPython, and Colab-only)."
    nb = nbformat.read(SOLUTIONS[name], as_version=4)
    code = "\n\n".join(c.source for c in nb.cells if c.cell_type == "code" and "#| hide" not in c.source)
    r = subprocess.run([sys.executable, "-"], input=code, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
