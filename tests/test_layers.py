"The package's layers import one way: core <- world <- text <- multimodal <- reasoning, knowledge <- align <- serve <- recipes <- cli."
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1]/"wakea_edu"
# a module may import its own layer and the layers with a smaller number; reasoning and knowledge are peers (neither imports the other)
LAYERS = {"core": 0, "sandbox": 0, "world": 1, "text": 2, "multimodal": 3, "reasoning": 4, "knowledge": 4, "align": 5,
          "serve": 6, "scale": 6, "recipes": 7, "grading": 8, "graders": 9, "exercises": 9, "cli": 10}


def layer_of(module: str) -> str | None:
    "The layer of a dotted module name inside wakea_edu (None for the package root and nbdev's index)."
    parts = module.split(".")
    if parts[0] != "wakea_edu" or len(parts) < 2 or parts[1] in ("__init__", "_modidx"): return None
    return parts[1]


def imported_modules(path: Path, root: Path = PACKAGE.parent) -> list[tuple[int, str]]:
    "(line, absolute module name) of every import in a file under `root`, relative ones resolved, those inside functions included."
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import): found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            # `from .. import x`: x is a module when a file or folder of that name exists, else a name in the package root
            found += [(node.lineno, f"{module}.{a.name}" if node.module is None and _is_module(module, a.name) else module)
                      for a in node.names]
    return sorted(set(found))


def _is_module(package: str, name: str) -> bool:
    folder = PACKAGE.parent.joinpath(*package.split("."))
    return (folder/f"{name}.py").exists() or (folder/name).is_dir()


def modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if layer_of(".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts)))


def test_every_module_has_a_known_layer():
    unknown = {layer_of(".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts)) for p in modules()} - set(LAYERS)
    assert not unknown, f"add {sorted(unknown)} to LAYERS (and to COURSE.md's package layout)"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_one_way(path):
    source = layer_of(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts))
    wrong = [f"{path.relative_to(PACKAGE.parent)}:{line} imports {module} ({layer_of(module)} is above {source})"
             for line, module in imported_modules(path)
             if (target := layer_of(module)) and target != source and LAYERS[target] >= LAYERS[source]]
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_a_wrong_import(tmp_path):
    bad = tmp_path/"wakea_edu"/"text"/"probe.py"
    bad.parent.mkdir(parents=True)
    bad.write_text("from ..recipes.pretrain import train_run\n\ndef f():\n    import wakea_edu.cli\n")
    assert imported_modules(bad, tmp_path) == [(1, "wakea_edu.recipes.pretrain"), (4, "wakea_edu.cli")]
