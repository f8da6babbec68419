"""Grading time under OS isolation (bubblewrap namespaces) against best effort (limits and the audit hook only).

Grades two solution notebooks — chapter 03 (7 tests) and chapter 06 (10 tests, torch-heavy) — with `jobs=2`, each
mode in turn, interleaved, `REPEATS` times. Cold: `wakea-edu grade` as a learner runs it, a fresh process that starts
its workers (each imports torch once). Warm: `grade` again in one process, where the workers are kept between calls.
Figures are medians. Floor: OS isolation costs at most 1.5x best effort, cold and warm.
Where OS isolation is unavailable the ratio is null and says why. Prints one JSON object on its last line (with the
commit, config and thread count) and writes it to wakea_edu/data/bench/grading.json.
"""
import os

THREADS = 1
os.environ["OMP_NUM_THREADS"] = str(THREADS)
os.environ.setdefault("WAKEA_QUIET", "1")

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from wakea_edu.core import atomic_write, source_changed, source_commit
from wakea_edu.grading import grade
from wakea_edu.sandbox import os_isolation

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ["03_attention.ipynb", "06_pretraining.ipynb"]
REPEATS, JOBS = 3, 2
RESULTS = Path(__file__).resolve().parents[1] / "wakea_edu" / "data" / "bench" / "grading.json"  # shipped: chapters show it installed


def timed_grade(notebook: Path, isolation: str, cold: bool) -> float:
    "Seconds to grade `notebook` (which must score full marks): in a fresh `wakea-edu grade` process if `cold`."
    start = time.perf_counter()
    if cold:
        cli = [str(Path(sys.executable).parent/"wakea-edu"), "grade", str(notebook), "--json", "--jobs", str(JOBS), "--isolation", isolation]
        report = json.loads(subprocess.run(cli, capture_output=True, text=True, check=True).stdout)
        score, max_score = report["score"], report["max_score"]
    else:
        report = grade(notebook, jobs=JOBS, isolation=isolation)
        score, max_score = report.score, report.max_score
    seconds = time.perf_counter() - start
    assert score == max_score, (notebook, isolation, score, max_score)   # a solution scores everything in either mode
    return seconds


def main():
    available, what = os_isolation()
    modes = ["os", "best-effort"] if available else ["best-effort"]
    for mode in modes: grade(ROOT/"solutions"/NOTEBOOKS[0], jobs=JOBS, isolation=mode)   # start the warm workers
    times = {(nb, mode, how): [] for nb in NOTEBOOKS for mode in modes for how in ("cold", "warm")}
    for _ in range(REPEATS):
        for nb in NOTEBOOKS:
            for mode in modes:
                for how in ("cold", "warm"): times[nb, mode, how].append(timed_grade(ROOT/"solutions"/nb, mode, how == "cold"))
    result = {"commit": source_commit(), "commit_dirty": source_changed(), "threads": THREADS, "config": {"notebooks": NOTEBOOKS, "jobs": JOBS, "repeats": REPEATS},
              "os_isolation": what if available else None, "os_skipped": None if available else what}
    for (nb, mode, how), ts in times.items(): result[f"grade_s_{nb[:2]}_{mode.replace('-', '_')}_{how}"] = round(statistics.median(ts), 2)
    ratios = [statistics.median(times[nb, "os", how]) / statistics.median(times[nb, "best-effort", how])
              for nb in NOTEBOOKS for how in ("cold", "warm")] if available else []
    result["os_over_best_effort"] = round(max(ratios), 3) if ratios else None
    result["floors"] = {"os_over_best_effort": 1.5}
    result["floors_met"] = None if not ratios else max(ratios) <= 1.5
    atomic_write(RESULTS, json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
