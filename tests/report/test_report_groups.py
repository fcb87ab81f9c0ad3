"""Reports compare like with like: groups by episode fingerprint, protocol, paired best, dedup."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bayesmeta.report import build_report, load_runs
from bayesmeta.report.figures import pit_figure
from bayesmeta.report.paired import holm, paired_bootstrap, select_best


def _report(out: Path) -> dict[str, Any]:
    return json.loads((out / "report.json").read_text(encoding="utf-8"))


def test_runs_on_different_episodes_go_in_separate_sections_without_a_best(make_run: Any, tmp_path: Path) -> None:
    a = make_run("maml", seed=0, episodes=0)
    b = make_run("protonet", seed=1, episodes=1, shift=3.0)  # far better, but on other tasks
    c = make_run("versa", seed=2, episodes=0, shift=3.0)
    build_report([a, b, c], tmp_path / "out")
    rep = _report(tmp_path / "out")
    assert [g["runs"] for g in rep["groups"]] == [["maml", "versa"], ["protonet"]]
    assert rep["groups"][1]["table"]["best"] == {}
    # within the group of identical episodes, the far better run is significantly best
    assert rep["groups"][0]["table"]["best"]["accuracy"] == "versa"
    text = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert text.count("<h2>") == 2


def test_unfingerprinted_runs_are_never_compared(make_run: Any, tmp_path: Path) -> None:
    a = make_run("maml", seed=0, episodes=None)
    b = make_run("versa", seed=1, episodes=None, shift=3.0)
    build_report([a, b], tmp_path / "out")
    rep = _report(tmp_path / "out")
    assert len(rep["groups"]) == 2 and all(g["table"]["best"] == {} for g in rep["groups"])
    assert "no episode fingerprint" in " ".join(rep["groups"][0]["notes"])


def test_same_run_dir_twice_is_shown_once(make_run: Any, tmp_path: Path) -> None:
    a = make_run("maml", seed=0)
    with pytest.warns(UserWarning, match="more than once"):
        runs = load_runs([a, a, Path(str(a) + "/")])
    assert len(runs) == 1
    with pytest.warns(UserWarning, match="more than once"):
        build_report([a, a], tmp_path / "out")
    rep = _report(tmp_path / "out")
    assert len(rep["runs"]) == 1 and rep["groups"][0]["table"]["best"] == {}
    assert "given more than once" in (tmp_path / "out" / "report.html").read_text(encoding="utf-8")


def test_identical_predictions_on_the_same_tasks_have_no_best(make_run: Any, tmp_path: Path) -> None:
    a = make_run("maml", seed=0)
    b = make_run("fomaml", seed=0)  # the very same numbers under another name
    build_report([a, b], tmp_path / "out")
    table = _report(tmp_path / "out")["groups"][0]["table"]
    assert table["best"] == {}
    assert table["paired_tests"]["accuracy"]
    assert all(t["p_value"] == 1.0 for pair in table["paired_tests"].values() for t in pair.values())


def test_protocol_section_lists_what_a_reviewer_needs(make_run: Any, tmp_path: Path) -> None:
    run = make_run("maml", seed=0)
    summary_path = run / "eval" / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary["protocol"] = {
        "method": {"name": "maml", "inner_lr": 0.01}, "model": {"name": "mlp", "hidden": [40, 40]},
        "tasks": {"name": "sinusoid", "k_shot": 5}, "steps_trained": 1234, "checkpoint": "best",
        "training_seed": 7, "evaluation_seed": 1234, "n_episodes": 12,
        "versions": {"bayesmeta": "0.1.0", "torch": "2.13.0", "python": "3.11"},
    }
    summary_path.write_text(json.dumps(summary))
    build_report([run], tmp_path / "out")
    text = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    for needle in ("Protocol", "maml (inner_lr=0.01)", "mlp (hidden=[40, 40])", "sinusoid (k_shot=5)",
                   "1234 (best checkpoint)", "training 7, evaluation 1234", "12 episodes, 12 tasks",
                   "torch 2.13.0", "episode fingerprint"):
        assert needle in text, needle
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "| steps trained | 1234 (best checkpoint) |" in md
    assert "per-task mean" in md and "pooled" in text


def test_protocol_rows_align_when_one_run_trained_on_other_tasks(make_run: Any, tmp_path: Path) -> None:
    """A ProtoNet trained 20-way beside a MAML trained on the test tasks: the training row is the
    ProtoNet's own, and the MAML's cell says its training tasks were the evaluation ones."""
    runs = [make_run("maml", seed=0), make_run("protonet", seed=1)]
    for run, train_way in zip(runs, (5, 20), strict=True):
        path = run / "eval" / "summary.json"
        summary = json.loads(path.read_text())
        summary["protocol"] = {
            "method": {"name": run.name}, "tasks": {"name": "omniglot", "n_way": 5},
            "train_tasks": {"name": "omniglot", "n_way": train_way}, "steps_trained": 10,
        }
        path.write_text(json.dumps(summary))
    build_report(runs, tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    row = next(line for line in md.splitlines() if line.startswith("| task settings (training)"))
    assert row == "| task settings (training) | same as evaluation | omniglot (n_way=20) |"
    assert "| steps trained | 10 | 10 |" in md
    assert "omniglot (n_way=20)" in (tmp_path / "out" / "report.html").read_text(encoding="utf-8")


# ------------------------------------------------------------------ paired test
def test_paired_bootstrap_interval_matches_scipy() -> None:
    import scipy.stats
    rng = np.random.default_rng(3)
    task = rng.normal(0, 1, 200)  # a large task effect shared by both runs: pairing removes it
    a = task + rng.normal(0.1, 0.2, 200)
    b = task + rng.normal(0.0, 0.2, 200)
    ours = paired_bootstrap(a, b, n_resamples=20_000, seed=1)
    ref = scipy.stats.bootstrap(
        (a, b), lambda x, y, axis=-1: x.mean(axis) - y.mean(axis), paired=True, vectorized=True,
        n_resamples=20_000, method="percentile", random_state=2,
    )
    se = ref.standard_error
    assert ours.diff == pytest.approx(float(a.mean() - b.mean()), abs=1e-12)
    # two independent Monte Carlo runs of 20k resamples: the 2.5%/97.5% quantiles agree to a
    # small fraction of the standard error (their MC sd is ~0.03 se); 0.15 se is 5 sd
    assert ours.low == pytest.approx(ref.confidence_interval.low, abs=0.15 * se)
    assert ours.high == pytest.approx(ref.confidence_interval.high, abs=0.15 * se)


@pytest.mark.parametrize("effect", [0.0, 0.05, 0.3])
def test_paired_bootstrap_decisions_agree_with_wilcoxon(effect: float) -> None:
    import scipy.stats
    rng = np.random.default_rng(int(effect * 100))
    task = rng.normal(0, 2, 150)
    a = task + effect + rng.normal(0, 0.3, 150)
    b = task + rng.normal(0, 0.3, 150)
    p_boot = paired_bootstrap(a, b, seed=0).p_value
    p_wil = scipy.stats.wilcoxon(a, b).pvalue
    # clear cases only (the two tests differ near the threshold): no effect / a large one
    if effect == 0.0:
        assert p_boot > 0.05 and p_wil > 0.05
    elif effect == 0.3:
        assert p_boot < 0.001 and p_wil < 0.001
    else:  # 0.05 with sd 0.42 of the difference over 150 tasks: z ~ 1.5, neither test rejects
        assert (p_boot < 0.05) == (p_wil < 0.05)


def test_unpaired_view_would_miss_what_the_paired_test_finds() -> None:
    """A small consistent gain under a big task effect: CIs of the two means overlap widely,
    yet the paired test is decisive, so pairing is what makes "best" meaningful."""
    rng = np.random.default_rng(0)
    task = rng.normal(0, 1, 100)
    a, b = task + 0.05 + rng.normal(0, 0.01, 100), task + rng.normal(0, 0.01, 100)
    best, tests = select_best({"a": a, "b": b}, "higher")
    assert best == "a" and tests["b"].p_value < 0.001
    best, _ = select_best({"a": a, "b": b}, "lower")
    assert best == "b"


def test_nominal_metrics_compare_distance_to_target() -> None:
    rng = np.random.default_rng(1)
    task = rng.normal(0, 0.02, 200)
    good = 0.9 + task + rng.normal(0, 0.01, 200)
    bad = 0.75 + task + rng.normal(0, 0.01, 200)
    best, tests = select_best({"bad": bad, "good": good}, "nominal", 0.9)
    assert best == "good" and tests["bad"].diff < 0


def test_holm_adjustment() -> None:
    # hand computation: sorted p 0.01, 0.02, 0.04 -> 3*0.01, max(.03, 2*.02), max(.04, 1*.04)
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.5]) == [0.5]


def test_three_runs_need_every_comparison_significant() -> None:
    rng = np.random.default_rng(2)
    task = rng.normal(0, 1, 80)
    a = task + 0.5 + rng.normal(0, 0.05, 80)
    b = a + rng.normal(0, 0.05, 80)  # tied with a
    c = task + rng.normal(0, 0.05, 80)
    best, tests = select_best({"a": a, "b": b, "c": c}, "higher")
    assert best is None and set(tests) <= {"a", "b", "c"} and len(tests) == 2


# ------------------------------------------------------------------ figures
def test_pit_titles_do_not_overlap() -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    counts = np.array([5, 8, 10, 12, 9, 11, 10, 9, 8, 6])
    labels = ["platipus (platipus_sinusoid_long_name)", "bmaml (bmaml_sinusoid_5shot_prior)", "versa (versa_sinusoid)", "np"]
    fig = pit_figure([(lb, counts) for lb in labels])
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    r = canvas.get_renderer()
    boxes = [ax.title.get_window_extent(r) for ax in fig.axes if ax.get_visible()]
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            assert not boxes[i].overlaps(boxes[j]), (labels[i], labels[j])
    # and every title stays inside the figure
    width = fig.bbox.width
    assert all(b.x0 >= 0 and b.x1 <= width for b in boxes)
