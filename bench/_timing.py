"What the benches share: timings as medians of repeats interleaved across the functions compared (only their ratios mean much), and the command line that runs measurements and writes their JSON."
import argparse
import json
import platform
import statistics
import time

import torch

from wakea_edu.core import atomic_write, source_changed, source_commit


def interleaved_medians(fns: dict, repeats: int, calls: int = 1, warmup: int = 1) -> tuple[dict, dict]:
    "({name: median seconds per call}, {name: last result}), calling the functions in turn each round."
    times, results, names = {name: [] for name in fns}, {}, list(fns)
    for round_ in range(warmup + repeats):
        # each round starts one further along, so no function always runs first (or right after the same other one)
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            fn = fns[name]
            start = time.perf_counter()
            for _ in range(calls): results[name] = fn()
            if round_ >= warmup: times[name].append((time.perf_counter() - start) / calls)
    return {name: statistics.median(t) for name, t in times.items()}, results


def run_measurements(description: str, measurements: dict, results_path, floors: dict, threads: int) -> dict:
    """A bench's command line: run `measurements` (or `--only` some of them, merged into the existing results), record the
    commit, thread count and config of each, check `floors`, write the JSON atomically and print it on one line."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(measurements)}")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(measurements)
    if unknown := [n for n in names if n not in measurements]: parser.error(f"unknown measurement {unknown[0]!r}")
    torch.set_num_threads(threads)
    result = json.loads(results_path.read_text()) if args.only and results_path.exists() else {}
    commit, dirty = source_commit(), source_changed()
    result |= {"threads": threads, "torch": torch.__version__, "python": platform.python_version(),
               "machine": platform.machine(), "commit": commit, "commit_dirty": dirty}
    runs = result.setdefault("runs", {})
    for name in names:
        figures = measurements[name]()
        # with --only, older figures stay in the file: each measurement keeps the commit and threads it ran with
        runs[name] = {"commit": commit, "commit_dirty": dirty, "threads": torch.get_num_threads(), "config": figures.pop("config")}
        result |= figures
        torch.set_num_threads(threads)   # a measurement may change it for its own comparison
    result["floors"] = floors
    measured = {key: result[key] for key in floors if result.get(key) is not None}
    result["floors_met"] = len(measured) == len(floors) and all(value >= floors[key] for key, value in measured.items())
    result["floors_failed"] = sorted(key for key in floors if result.get(key) is None or result[key] < floors[key])
    atomic_write(results_path, json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
    return result
