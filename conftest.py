"""Bridge nbdev's cell flags to nbval.

nbval knows nothing of nbdev's `#|` directives, and `nbdev-clean` strips cell tags, so a cell
flagged `#| slow`, `#| cuda`, `#| network` or `#| eval: false` would otherwise run under test.
Here every such notebook cell is marked skipped before the run; the kernel simply never sees it.

`nbdev-clean` also blanks `execution_count`, and nbval refuses a cell with outputs but no count
("Unrun reference cell has outputs"); a committed output is a run one, so it gets a count back.
"""
import re

SKIP_FLAGS = re.compile(r"^\s*#\|\s*(slow|cuda|network|eval:\s*false)\s*$", re.MULTILINE)


def nbdev_skip_reason(source: str):
    "The nbdev flag that keeps a cell out of tests, or None."
    m = SKIP_FLAGS.search(source)
    return m.group(1).replace(" ", "") if m else None


def pytest_collection_modifyitems(config, items):
    for item in items:
        cell = getattr(item, "cell", None)
        options = getattr(item, "options", None)
        if cell is None or options is None: continue  # not an nbval cell
        if nbdev_skip_reason(cell.source): options["skip"] = True
        if cell.execution_count is None and cell.get("outputs"): cell.execution_count = 0
