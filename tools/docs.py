"""Build the Quarto docs site (`make docs`).

With `quarto` on PATH this is `nbdev-docs` (the site lands in `_docs/`). Without it, the notebooks
are still processed as nbdev would for Quarto (`_proc/`), each chapter is checked to carry its API
docs, and the HTML render is reported as skipped. (`nbdev-proc-nbs` itself would try to download
Quarto, which cannot work offline.)
"""
import json, shutil, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def exported_names(nb: Path) -> bool:
    "Whether the notebook exports anything (and so should show API docs)."
    return any("#| export" in "".join(c["source"]) for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code")


def check_processed(proc: Path) -> list[str]:
    "Problems with the processed chapters: missing notebooks, or exporting ones without API docs."
    problems = []
    for nb in sorted((ROOT/"nbs").glob("[0-9]*.ipynb")):
        out = proc/nb.name
        if not out.exists(): problems.append(f"{nb.name}: not processed"); continue
        if exported_names(nb) and "show_doc" not in out.read_text() and 'class="doc' not in out.read_text():
            problems.append(f"{nb.name}: processed without API docs")
    return problems


def main() -> int:
    if shutil.which("quarto"):
        return subprocess.run([str(Path(sys.executable).parent/"nbdev-docs")], cwd=ROOT).returncode
    from nbdev.doclinks import _build_modidx
    from nbdev.quarto import nbdev_sidebar, refresh_quarto_yml
    from nbdev.serve import proc_nbs
    import os
    os.chdir(ROOT)
    refresh_quarto_yml()
    _build_modidx()
    nbdev_sidebar()
    proc = proc_nbs(n_workers=0)
    problems = check_processed(Path(proc))
    for p in problems: print("docs:", p)
    n = len(list((ROOT/"nbs").glob("[0-9]*.ipynb")))
    print(f"processed {n} chapters into {Path(proc).relative_to(ROOT)}/ for Quarto, API docs present" if not problems else "")
    print("quarto is not on PATH: the HTML render was SKIPPED (install Quarto and re-run `make docs` for the site)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
