"""Every chapter runs from a copy outside the repository, as on Colab or from an installed package.

Each chapter notebook is copied alone into a temporary folder (with the repo's nbval bridge,
conftest.py, which is test machinery, not something a chapter reads) and run there under nbval in
CI mode: a chapter that reads `../bench`, `../datasets` or any other file of the checkout fails
here. The package itself is the one installed in this environment.
"""
import os, shutil, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted(p for p in (ROOT/"nbs").glob("[0-9][0-9]_*.ipynb") if int(p.name[:2]) < 89)  # 89-91: the machinery


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_runs_outside_the_repository(tmp_path, chapter):
    shutil.copy(chapter, tmp_path/chapter.name)
    shutil.copy(ROOT/"conftest.py", tmp_path/"conftest.py")
    env = {**os.environ, "WAKEA_FAST": "1", "WAKEA_QUIET": "1", "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "--nbval-lax", "--nbval-current-env", "--nbval-cell-timeout=600",
                          "-p", "no:cacheprovider", "-p", "no:xdist", chapter.name],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stdout[-4000:]
