"""Every example script runs end to end with --smoke (DESIGN.md section 7)."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs_with_smoke(script: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out.png"
    monkeypatch.setattr(sys, "argv", [str(script), "--smoke", "--out", str(out)])
    runpy.run_path(str(script), run_name="__main__")
    assert out.is_file() and out.stat().st_size > 1000
