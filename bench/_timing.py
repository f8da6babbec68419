"What the benches share: timings as medians of repeats interleaved across the functions compared (only their ratios mean much)."
import statistics
import time


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
