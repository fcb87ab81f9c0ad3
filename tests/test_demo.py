"""The default job (`make demo`, i.e. `bayesmeta demo`) end to end through the CLI, shrunk to
seconds with --smoke."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bayesmeta.cli import main


def test_cli_demo_smoke_trains_evaluates_and_prints_a_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--smoke", "--out", str(tmp_path), "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("method"))
    table = lines[start:]
    assert table[0].split()[:4] == ["method", "tasks", "accuracy", "(%)"]
    assert table[2].startswith("maml") and table[3].startswith("protonet")
    for run, row in (("maml_sinusoid_smoke", table[2]), ("protonet_omniglot_5w1s_smoke", table[3])):
        summary = json.loads((tmp_path / run / "eval" / "summary.json").read_text())
        assert row.split()[1] == str(summary["n_tasks"])  # the printed row is this run's evaluation
        nll = summary["metrics"]["nll"]
        assert f"{nll['mean']:.3f} ± {(nll['high'] - nll['low']) / 2:.3f}" in row
        assert (tmp_path / run / "checkpoints" / "last.pt").is_file()
    acc = json.loads((tmp_path / "protonet_omniglot_5w1s_smoke" / "eval" / "summary.json").read_text())["metrics"]["accuracy"]
    assert f"{100 * acc['mean']:.2f}" in table[3]
