"""Every tutorial page is backed by a script in examples/tutorials/ that runs with ``--smoke``,
and writes every figure its page shows.

Pages ``docs/tutorials/NAME.md`` and scripts ``examples/tutorials/NAME.py`` pair by name. The
figures committed under ``docs/assets/tutorials/`` were drawn by the same scripts at full size;
here each script draws them again at smoke size into a temporary folder.
"""

from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = ROOT / "docs" / "tutorials"
SCRIPTS = ROOT / "examples" / "tutorials"
ASSETS = ROOT / "docs" / "assets" / "tutorials"
TUTORIALS = sorted(p.stem for p in SCRIPTS.glob("*.py") if not p.name.startswith("_"))

# what the issue asks a tutorial for (names are the page/script stems)
REQUIRED = {"quickstart", "which_method", "calibration_report", "medical_study", "conformal",
            "custom_learner", "arviz_export", "distributed"}


def figures_of(page: Path) -> set[str]:
    """File names under docs/assets/tutorials/ that a page shows or includes."""
    return set(re.findall(r"assets/tutorials/([\w-]+\.(?:png|txt))", page.read_text(encoding="utf-8")))


def test_pages_and_scripts_pair_up() -> None:
    assert REQUIRED <= set(TUTORIALS)
    assert sorted(p.stem for p in PAGES.glob("*.md")) == TUTORIALS
    for name in TUTORIALS:
        text = (PAGES / f"{name}.md").read_text(encoding="utf-8")
        assert f"examples/tutorials/{name}.py" in text, f"{name}.md does not name its script"
        for fig in figures_of(PAGES / f"{name}.md"):
            assert (ASSETS / fig).is_file(), f"{name}.md shows {fig}, which is not committed"


@pytest.mark.parametrize("name", TUTORIALS)
def test_tutorial_runs_with_smoke(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # anything a script writes relative to the working directory lands here
    out = tmp_path / "figures"
    script = SCRIPTS / f"{name}.py"
    monkeypatch.setattr(sys, "argv", [str(script), "--smoke", "--out-dir", str(out)])
    runpy.run_path(str(script), run_name="__main__")
    for fig in figures_of(PAGES / f"{name}.md"):
        assert (out / fig).is_file() and (out / fig).stat().st_size > 100, f"{name}.py did not write {fig}"


def test_contract_runner_of_the_custom_learner_tutorial_catches_a_broken_learner() -> None:
    """The tutorial's run of the contract suite can fail: a learner whose ``adapt`` changes a
    meta-parameter (not pure) is caught."""
    import torch

    from bayesmeta import MLP

    tutorial = runpy.run_path(str(SCRIPTS / "custom_learner.py"))  # defines, does not run main()
    kernel_regression = tutorial["KernelRegression"]

    class Impure(kernel_regression):  # type: ignore[misc, valid-type]
        def adapt(self, support):  # type: ignore[no-untyped-def]
            with torch.no_grad():
                self.log_noise.add_(0.1)
            return super().adapt(support)

    assert len(tutorial["run_contract_suite"](lambda: kernel_regression(MLP(1, 8, hidden=(8,))))) >= 6
    with pytest.raises(AssertionError, match="log_noise"):
        tutorial["run_contract_suite"](lambda: Impure(MLP(1, 8, hidden=(8,))))
