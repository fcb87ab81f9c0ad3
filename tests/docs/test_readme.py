"""README's example runs (at smoke size), and README keeps to what the issue asks of it: the two
commands, a short example, and how to build and open the documentation site."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_is_short_and_points_to_the_site() -> None:
    assert "make demo" in README and "make test" in README
    assert "make docs" in README and "site/index.html" in README
    (example,) = python_blocks(README)
    assert len(example.strip().splitlines()) <= 12


def test_readme_example_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    (example,) = python_blocks(README)
    # the same code at smoke size: 3 meta-steps, 4 test tasks
    small = re.sub(r"\bsteps=\d+", "steps=3", example)  # meta-steps, not inner_steps
    small = re.sub(r"\bn_episodes=\d+", "n_episodes=4", small)
    assert small != example
    namespace: dict = {}
    exec(compile(small, "README.md", "exec"), namespace)
    lo, hi = namespace["lo"], namespace["hi"]
    assert lo.shape == hi.shape == namespace["batch"].query_y.shape
    assert bool((lo < hi).all())
