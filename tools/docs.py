"""Build the Quarto docs site and README.md (`make docs`); `--check` only verifies both.

README.md is `nbs/index.ipynb` rendered to Markdown with its stored outputs (nbconvert, so no
Quarto is needed); `--check` fails when the committed README.md differs from that.

With `quarto` on PATH this is `nbdev-docs` (the site lands in `_docs/`). Without it, the notebooks
are still processed as nbdev would for Quarto (`_proc/`), each chapter is checked to carry its API
docs, and the HTML render is reported as skipped. (`nbdev-proc-nbs` itself would try to download
Quarto, which cannot work offline.)
"""
import json, os, shutil, subprocess, sys
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


def readme_text() -> str:
    "`nbs/index.ipynb` as Markdown, outputs included."
    import nbformat
    from nbconvert import MarkdownExporter
    nb = nbformat.read(ROOT/"nbs"/"index.ipynb", as_version=4)
    body, _ = MarkdownExporter().from_notebook_node(nb)
    return "<!-- Generated from nbs/index.ipynb by `make docs`: edit the notebook, not this file. -->\n\n" + body.strip() + "\n"


def process_notebooks() -> list[str]:
    "What `nbdev-proc-nbs` does, minus its attempt to download Quarto; returns the problems found."
    from nbdev.doclinks import _build_modidx
    from nbdev.quarto import nbdev_sidebar, refresh_quarto_yml
    from nbdev.serve import proc_nbs
    os.chdir(ROOT)
    refresh_quarto_yml()
    _build_modidx()
    nbdev_sidebar()
    return check_processed(Path(proc_nbs(n_workers=0)))


def main(argv: list[str]) -> int:
    readme, text = ROOT/"README.md", readme_text()
    check = "--check" in argv
    if check and (not readme.exists() or readme.read_text() != text):
        print("README.md is out of date with nbs/index.ipynb: run `make docs` and commit"); return 1
    if not check:
        from wakea_edu.core import atomic_write
        atomic_write(readme, text)
        if shutil.which("quarto"): return subprocess.run([str(Path(sys.executable).parent/"nbdev-docs")], cwd=ROOT).returncode
    problems = process_notebooks()
    for p in problems: print("docs:", p)
    if problems: return 1
    print(f"README.md current; {len(list((ROOT/'nbs').glob('[0-9]*.ipynb')))} chapters processed into _proc/ with their API docs")
    if not check: print("quarto is not on PATH: the HTML render was SKIPPED (install Quarto, then `make docs` builds _docs/)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
