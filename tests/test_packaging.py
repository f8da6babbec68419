"""The wheel works without the repo: built, installed with no extras into a fresh venv, and run from elsewhere.

Slow (a venv and torch install): about a minute or two on a 2-core machine. The torch to put in the
venv is `$WAKEA_SMOKE_TORCH` (default the CPU build `torch==2.13.0`).
"""
import os, subprocess, sys, venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sh(*cmd, **kw):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=900, **kw)
    assert r.returncode == 0, f"{cmd} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def test_wheel_installs_and_runs_without_the_repo(tmp_path):
    sh(sys.executable, "-m", "build", "--wheel", "--outdir", tmp_path/"dist", ROOT)
    wheel, = (tmp_path/"dist").glob("wakea_edu-*.whl")
    venv.create(tmp_path/"venv", with_pip=True)
    bin_ = tmp_path/"venv"/"bin"
    sh(bin_/"python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
       os.environ.get("WAKEA_SMOKE_TORCH", "torch==2.13.0"))
    sh(bin_/"python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check", wheel)

    away = tmp_path/"elsewhere"
    away.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "WAKEA_"))}
    env.update(HF_HUB_OFFLINE="1", NO_PROXY="*", PIP_NO_INDEX="1")
    run = lambda *c: sh(*c, cwd=away, env=env)

    where = run(bin_/"python", "-c", "import wakea_edu; print(wakea_edu.__file__)").strip()
    assert Path(where).resolve().is_relative_to((tmp_path/"venv").resolve()), where
    assert "doctor" in run(bin_/"wakea-edu", "--help")
    report = run(bin_/"wakea-edu", "doctor")
    assert "[OK] core" in report and "[SKIP] nbdev" in report, report
    run(bin_/"wakea-edu", "world", "generate", "--out", away/"world", "--seed", "1")
    assert (away/"world"/"corpus_train.txt").stat().st_size > 0
