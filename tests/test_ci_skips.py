"""Skips are reported, and impossible in CI: tests/conftest.py turns a skip into a failure when
the ``CI`` variable is set. Checked on a throw-away test file run by a child pytest that loads the
suite's real conftest."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).resolve().parent / "conftest.py"


def _run(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    shutil.copy(CONFTEST, tmp_path / "conftest.py")
    (tmp_path / "test_skipping.py").write_text(
        "import pytest\n\n"
        "def test_needs_a_browser():\n    pytest.skip('no browser here')\n\n"
        "@pytest.mark.xfail(reason='known', strict=True)\n"
        "def test_expected_failure():\n    assert False\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )


def test_a_skip_in_ci_is_a_failure_naming_its_reason(tmp_path: Path) -> None:
    res = _run(tmp_path, "true")
    assert res.returncode == 1, res.stdout
    assert "skipped in CI" in res.stdout and "no browser here" in res.stdout
    assert "1 failed, 1 xfailed" in res.stdout  # an xfail stays an xfail


def test_outside_ci_a_skip_is_allowed_and_its_reason_printed(tmp_path: Path) -> None:
    res = _run(tmp_path, None)
    assert res.returncode == 0, res.stdout
    assert "SKIPPED [1]" in res.stdout and "no browser here" in res.stdout
    assert "1 skipped, 1 xfailed" in res.stdout


@pytest.mark.parametrize("value,on", [("true", True), ("1", True), ("", False), ("false", False), ("0", False)])
def test_ci_variable_parsing(monkeypatch: pytest.MonkeyPatch, value: str, on: bool) -> None:
    spec = importlib.util.spec_from_file_location("suite_conftest", CONFTEST)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    monkeypatch.setenv("CI", value)
    assert module._in_ci() is on


def test_ci_entry_point_sets_ci_and_make_test_reports_skips() -> None:
    root = Path(__file__).resolve().parents[1]
    ci = (root / ".ci" / "run").read_text()
    assert "export CI=true" in ci
    assert ci.index("export CI=true") < ci.index("\nmake test\n") < ci.index("\nmake test-slow\n")
    make = (root / "Makefile").read_text()
    test_recipe = make.split("\ntest:")[1].split("\n\n")[0]
    assert "-rs" in test_recipe and '-m "not slow"' in test_recipe
