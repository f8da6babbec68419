"The sandbox holds: each escape of the audit-hook era is contained under OS isolation, limits hold in every mode."
import json, os, socket, subprocess, time
from pathlib import Path

import nbformat
import pytest

from wakea_edu import sandbox
from wakea_edu.grading import grade
from wakea_edu.sandbox import Limits, SandboxError, WarmSandbox, os_isolation, resolve_isolation, run_python

OS_OK, OS_WHY = os_isolation()
needs_os = pytest.mark.skipif(not OS_OK, reason=f"OS isolation unavailable: {OS_WHY}")
MODES = [pytest.param("os", marks=needs_os), "best-effort"]

# a process started below the audit hook: _posixsubprocess.fork_exec is what subprocess calls after auditing
SPAWN = """
import _posixsubprocess, os
r, w = os.pipe()
_posixsubprocess.fork_exec([b"/bin/sleep", b"{seconds}"], [b"/bin/sleep"], True, (w,), None, None, -1, -1, -1, -1, -1, -1,
                           r, w, True, True, -1, None, None, None, -1, None, False)
print("spawned")
"""


def sleepers(seconds: str) -> list[int]:
    "Host processes running `sleep SECONDS`."
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry/"cmdline").read_bytes().split(b"\0")[:2] == [b"/bin/sleep", seconds.encode()]:
                found.append(int(entry.name))
        except OSError: pass
    return found


def test_limits_refuse_bad_values():
    for bad in ({"wall_s": float("nan")}, {"cpu_s": -1}, {"memory_mb": 0}, {"output_bytes": float("inf")}, {"processes": True}):
        with pytest.raises(ValueError, match=next(iter(bad))): Limits(**bad)


def test_isolation_requests(monkeypatch):
    with pytest.raises(ValueError, match="isolation must be one of"): resolve_isolation("container")
    monkeypatch.setattr(sandbox, "os_isolation", lambda: (False, "no bubblewrap here"))
    assert resolve_isolation("auto") == "best-effort"
    with pytest.raises(SandboxError, match="no bubblewrap here"): resolve_isolation("os")


@pytest.mark.parametrize("mode", MODES)
def test_runs_code_and_stops_hangs_and_floods(mode):
    ok = run_python("print(6 * 7)", isolation=mode)
    assert (ok.stdout, ok.returncode, ok.ok, ok.isolation) == ("42\n", 0, True, mode)
    hang = run_python("while True: pass", Limits(wall_s=1, cpu_s=5), isolation=mode)
    assert hang.timed_out and not hang.ok and hang.returncode is None
    flood = run_python("while True: print('x' * 10_000)", isolation=mode)
    assert flood.output_exceeded and not flood.ok and len(flood.stdout) <= Limits().output_bytes
    crash = run_python("raise SystemExit(3)", isolation=mode)
    assert crash.returncode == 3 and not crash.ok


@pytest.mark.parametrize("mode", MODES)
def test_spawned_processes_do_not_outlive_the_run(mode):
    "A process in its own session, started below the audit hook: the namespace ends it, or the subreaper does."
    result = run_python(SPAWN.format(seconds="987.25"), isolation=mode, audit=False)
    assert result.stdout == "spawned\n", result.stderr   # the spawn itself worked
    hung = run_python(SPAWN.format(seconds="987.5") + "while True: pass", Limits(wall_s=1), isolation=mode, audit=False)
    assert hung.timed_out
    time.sleep(0.2)
    assert sleepers("987.25") == sleepers("987.5") == []


@needs_os
def test_os_writes_outside_fail_by_every_api(tmp_path):
    target = tmp_path/"escape"
    code = f"""
import sqlite3, os, shutil
for attempt in (lambda: sqlite3.connect({str(target) + '.db'!r}).execute("create table t (x)"),
                lambda: open({str(target) + '.txt'!r}, "w").write("x"),
                lambda: os.open({str(target) + '.raw'!r}, os.O_CREAT | os.O_WRONLY),
                lambda: shutil.copy("/usr/bin/env", {str(target) + '.bin'!r})):
    try: attempt(); print("wrote")
    except Exception as e: print(type(e).__name__)
"""
    result = run_python(code, isolation="os", audit=False)
    assert "wrote" not in result.stdout and len(result.stdout.split()) == 4, result
    assert list(tmp_path.iterdir()) == []


@needs_os
def test_os_cannot_signal_or_see_processes_outside():
    victim = subprocess.Popen(["/bin/sleep", "30"])
    try:
        code = f"""
import os, signal
try: os.kill({victim.pid}, signal.SIGKILL); print("sent")
except ProcessLookupError: print("no such process")
print(len([p for p in os.listdir("/proc") if p.isdigit()]))
"""
        result = run_python(code, isolation="os", audit=False)
        said, visible = result.stdout.split("\n")[:2]
        assert said == "no such process" and int(visible) <= 4, result   # bwrap's init, enter/python, maybe a child
        assert victim.poll() is None
    finally: victim.kill(); victim.wait()


@needs_os
def test_os_no_network_even_from_a_child():
    listener = socket.socket(); listener.bind(("127.0.0.1", 0)); listener.listen(); listener.settimeout(0)
    port = listener.getsockname()[1]
    child = f"import socket\ntry: socket.create_connection(('127.0.0.1', {port}), timeout=2); print('connected')\nexcept OSError as e: print(type(e).__name__)"
    code = f"import subprocess, sys\nprint(subprocess.run([sys.executable, '-c', {child!r}], capture_output=True, text=True).stdout.strip())"
    try:
        result = run_python(code, isolation="os", audit=False)
        assert result.stdout.strip() == "ConnectionRefusedError", result
        with pytest.raises(BlockingIOError): listener.accept()
    finally: listener.close()


@needs_os
def test_os_cannot_read_files_outside(tmp_path):
    secret = tmp_path/"held_out.py"; secret.write_text("SECRET = 'the held-out answer'")
    result = run_python(f"print(open({str(secret)!r}).read())", isolation="os", audit=False)
    assert "held-out answer" not in result.stdout + result.stderr and "FileNotFoundError" in result.stderr
    home = run_python("import os; print(sorted(os.listdir('/')))", isolation="os", audit=False)
    assert "home" not in home.stdout and "root" in home.stdout   # /root only holds the mounted interpreter, if that


@needs_os
def test_os_disk_is_capped():
    code = """
import os
written = 0
try:
    for i in range(400):
        with open(f"/tmp/fill{i}", "wb") as f: f.write(b"x" * 500_000)
        written += 500_000
except OSError as e: print(type(e).__name__, e.errno)
print(written // 2**20)
"""
    result = run_python(code, Limits(disk_mb=16), isolation="os", audit=False)
    error, megabytes = result.stdout.split("\n")[:2]
    assert error == "OSError 28" and int(megabytes) <= 16, result   # ENOSPC at the tmpfs cap


@pytest.mark.parametrize("mode", MODES)
def test_warm_sandbox_kills_what_a_job_left(mode):
    with WarmSandbox("wakea_edu.sandbox:_demo_job", isolation=mode) as worker:
        first = worker.run({"spawn": True}, Limits(wall_s=5))
        pid = json.loads(first["result"])["spawned"]
        assert first["exitcode"] == 0 and not first["timed_out"]
        assert json.loads(worker.run({"alive": pid}, Limits(wall_s=5))["result"]) == {"alive": False}
    if mode == "best-effort":  # no namespace: the pid is the host's, and it is gone there too
        assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def hostile_notebook(path: Path, secret: Path, host_pid: int, port: int) -> Path:
    "Chapter 02's functions, each right (the library's own) after one escape attempt; get_stats is honest."
    lib = "from wakea_edu.text.tokenizer import {0} as _ref\n"
    cells = [
        "def get_stats(ids):\n    counts = {}\n    for pair in zip(ids, ids[1:]): counts[pair] = counts.get(pair, 0) + 1\n    return counts",
        lib.format("merge") + f"import sqlite3\ndef merge(ids, pair, idx):\n    sqlite3.connect({str(secret.parent/'escape.db')!r}).execute('create table t (x)')\n    return _ref(ids, pair, idx)",
        f"def train_bpe(text, vocab_size):\n    raise RuntimeError(open({str(secret)!r}).read())",  # echoed in the feedback
        f"import os, signal\ndef encode(text, merges):\n    os.kill({host_pid}, signal.SIGKILL)\n    raise RuntimeError('unreachable')",
        f"import socket\ndef decode(ids, merges):\n    socket.create_connection(('127.0.0.1', {port}), timeout=1)\n    raise RuntimeError('unreachable')",
    ]
    nb = nbformat.v4.new_notebook(metadata={"wakea": {"chapter": "02"}})
    nb.cells = [nbformat.v4.new_code_cell("#| graded\n" + s) for s in cells]
    nbformat.write(nb, path)
    return path


@needs_os
def test_hostile_submission_is_contained_by_the_grader(tmp_path):
    "Under OS isolation; best effort (the audit hook alone) is tested by test_grading.py's hostile notebooks."
    secret = tmp_path/"instructor"/"held_out.py"; secret.parent.mkdir(); secret.write_text("'the held-out answer'")
    victim = subprocess.Popen(["/bin/sleep", "30"])
    listener = socket.socket(); listener.bind(("127.0.0.1", 0)); listener.listen(); listener.settimeout(0)
    try:
        path = hostile_notebook(tmp_path/"02_hostile.ipynb", secret, victim.pid, listener.getsockname()[1])
        report = grade(path, timeout=20, isolation="os")
        assert report.isolation == "os"
        assert {t.name for t in report.tests if t.passed} == {"get_stats_counts_adjacent_pairs", "get_stats_counts_overlapping_runs"}
        assert "held-out answer" not in json.dumps(report.to_dict())
        assert victim.poll() is None and not (secret.parent/"escape.db").exists()
        with pytest.raises(BlockingIOError): listener.accept()
    finally:
        victim.kill(); victim.wait(); listener.close()


@needs_os
def test_grader_daemons_die_with_their_test(tmp_path):
    nb = nbformat.v4.new_notebook(metadata={"wakea": {"chapter": "02"}})
    nb.cells = [nbformat.v4.new_code_cell("#| graded\n" + SPAWN.format(seconds="986.5"))]
    nbformat.write(nb, tmp_path/"02_daemon.ipynb")
    report = grade(tmp_path/"02_daemon.ipynb", timeout=10, isolation="os")
    assert report.score == 0 and len(report.tests) >= 5
    time.sleep(0.2)
    assert sleepers("986.5") == []


@pytest.mark.skipif(os.environ.get("WAKEA_REQUIRE_OS_SANDBOX") != "1", reason="only where CI installed bubblewrap")
def test_ci_has_os_isolation():
    assert OS_OK, f"bubblewrap is installed but OS isolation does not work: {OS_WHY}"


HELD_OUT = '''
from wakea_edu.grading import graded, require

@graded(points=3)
def merge_on_unseen_ids(learner):
    return learner.merge([7, 7, 7, 8, 7, 7], (7, 7), 300)

@merge_on_unseen_ids.check
def _(ids): require(ids == [300, 7, 8, 300], "SECRET-EXPECTED-ANSWER")
'''


@pytest.mark.parametrize("mode", MODES)
def test_held_out_checks_never_reach_the_submission(tmp_path, mode):
    "The checks' code, where the expected answers live, is cut from the held-out file before it enters the child."
    (tmp_path/"tests").mkdir(); (tmp_path/"tests"/"instructor.py").write_text(HELD_OUT)
    # up the stack from the learner's function to the grader's frames: the test object, its check, the job
    snoop = ("import sys\ndef merge(ids, pair, idx):\n    found, f = [], sys._getframe()\n"
             "    while f:\n"
             "        for v in list(f.f_locals.values()):\n"
             "            try: code = v.verdict.__code__\n"
             "            except Exception: code = None\n"
             "            if code: found += [c for c in code.co_consts if isinstance(c, str)]\n"
             "            if isinstance(v, dict) and isinstance(v.get('text'), str): found.append(v['text'][-200:])\n"
             "        f = f.f_back\n"
             "    raise RuntimeError(repr(found))")
    nb = nbformat.v4.new_notebook(metadata={"wakea": {"chapter": "02"}})
    nb.cells = [nbformat.v4.new_code_cell("#| graded\n" + snoop)]
    nbformat.write(nb, tmp_path/"02_snoop.ipynb")
    report = grade(tmp_path/"02_snoop.ipynb", tests_dir=tmp_path/"tests", isolation=mode)
    held = next(t for t in report.tests if t.name == "instructor:merge_on_unseen_ids")
    assert not held.passed and "checked by the grader" in held.feedback   # the snoop ran and found only the stub
    assert "SECRET-EXPECTED-ANSWER" not in json.dumps(report.to_dict())


def test_private_tmp_is_mounted_before_the_environment():
    "An environment installed under /tmp (as CI's checkout may be) is bound on top of the private /tmp, not hidden by it."
    cmd = sandbox.bwrap_command(["true"], Limits())
    tmpfs = cmd.index("/tmp", cmd.index("--tmpfs"))
    binds = [i for i, arg in enumerate(cmd) if arg == "--ro-bind"]
    assert binds and tmpfs < min(binds)
    assert ["--dir", "/tmp"] not in [cmd[i:i + 2] for i in range(len(cmd) - 1)]   # /tmp keeps its 1777
