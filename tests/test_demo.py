"""The default job (`make demo`) end to end, shrunk to seconds with smoke=True."""

from __future__ import annotations

from pathlib import Path

from bayesmeta.demo import run_demo


def test_demo_smoke_trains_evaluates_and_prints_a_table(tmp_path: Path) -> None:
    table = run_demo(tmp_path, smoke=True, progress=False)
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["method", "tasks", "accuracy", "(%)"]
    assert lines[2].startswith("maml") and lines[3].startswith("protonet")
    for run in ("maml_sinusoid_smoke", "protonet_omniglot_5w1s_smoke"):
        assert (tmp_path / run / "eval" / "summary.json").is_file()
        assert (tmp_path / run / "checkpoints" / "last.pt").is_file()
