"Every chapter notebook opens the same way: a title, an Open-in-Colab badge for itself, a Colab-only install cell."
import json, re, tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REPO = tomllib.loads((ROOT/"pyproject.toml").read_text())["project"]["urls"]["Repository"]
CHAPTERS = sorted((ROOT/"nbs").glob("[0-9][0-9]_*.ipynb"))


def cells(nb_path):
    return json.loads(nb_path.read_text())["cells"]


def test_there_are_chapters():
    assert len(CHAPTERS) >= 2


@pytest.mark.parametrize("nb", CHAPTERS, ids=lambda p: p.name)
def test_chapter_opens_with_badge_and_colab_install(nb):
    first, second = cells(nb)[:2]
    title = "".join(first["source"])
    assert first["cell_type"] == "markdown" and re.match(rf"# {nb.name[:2]} — ", title)
    owner_repo = REPO.removeprefix("https://github.com/")
    badge = f"(https://colab.research.google.com/github/{owner_repo}/blob/main/nbs/{nb.name})"
    assert badge in title, f"{nb.name}: the Colab badge must link to {badge}"
    install = "".join(second["source"])
    assert second["cell_type"] == "code" and "#| hide" in install
    assert '"google.colab" in sys.modules' in install and f"git+{REPO}" in install


@pytest.mark.parametrize("nb", CHAPTERS, ids=lambda p: p.name)
def test_chapter_exports_and_has_outputs(nb):
    code = [c for c in cells(nb) if c["cell_type"] == "code"]
    assert any("#| default_exp" in "".join(c["source"]) for c in code)
    assert sum(bool(c.get("outputs")) for c in code) >= 2, f"{nb.name}: commit the notebook with its outputs"
