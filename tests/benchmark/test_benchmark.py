"""``bayesmeta benchmark``: records, identical episodes, budgets, resuming, results files, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bayesmeta.benchmark import (
    RECORD_KEYS,
    SUITES,
    get_suite,
    run_benchmark,
    smoke_suite,
    update_docs,
)
from bayesmeta.benchmark.run import episode_source, suite_configs
from bayesmeta.cli import main
from bayesmeta.evaluation import episode_fingerprint
from bayesmeta.exceptions import ConfigError
from bayesmeta.tasks import fixed_episodes


@pytest.fixture(scope="module")
def omniglot_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    root = tmp_path_factory.mktemp("bench")
    res = run_benchmark(
        "omniglot_5w1s", root / "runs", methods=["protonet+ts", "ensemble", "dkt"], smoke=True,
        results_dir=root / "results", progress=False,
    )  # fmt: skip
    return root, res


def test_classification_records_have_the_issue_schema(omniglot_run) -> None:
    root, res = omniglot_run
    records = json.loads((root / "results" / "uncertainty.json").read_text())
    assert isinstance(records, list)
    assert [r["method"] for r in records] == [
        "protonet",
        "protonet+ts",
        "dkt",
        "ensemble",
    ]  # suite order
    for r in records:
        for key in RECORD_KEYS:
            assert key in r, (r["method"], key)
        assert r["suite"] == "omniglot_5w1s"
        lo, hi = r["accuracy_ci"]
        assert 0.0 <= lo <= r["accuracy"] <= hi <= 1.0
        assert r["budget_s"] == SUITES["omniglot_5w1s"].smoke["budget_s"]
        assert 0.0 <= r["pooled_ece"] <= 1.0
    suite_json = json.loads((root / "results" / "omniglot_5w1s.json").read_text())
    assert suite_json["records"] == records
    assert suite_json["meta"]["complete"] and "core" in suite_json["meta"]["machine"]
    assert (root / "runs" / "omniglot_5w1s" / "report" / "report.html").is_file()
    assert (root / "runs" / "omniglot_5w1s" / "report" / "reliability.png").is_file()


def test_protonet_ts_is_protonet_temperature_scaled(omniglot_run) -> None:
    _, res = omniglot_run
    by = {r["method"]: r for r in res.records}
    raw, ts = by["protonet"], by["protonet+ts"]
    assert ts["temperature"] > 0
    # temperature scaling never changes a single member's top-1 prediction
    assert ts["accuracy"] == pytest.approx(raw["accuracy"], abs=1e-12)
    assert ts["steps"] == raw["steps"] and ts["cpu_s"] == raw["cpu_s"]  # no training of its own


def test_every_method_saw_the_same_episodes(omniglot_run) -> None:
    root, res = omniglot_run
    suite = smoke_suite(get_suite("omniglot_5w1s"))
    cfg = suite_configs(suite, suite.methods, 3)["protonet"]
    # an independent draw of the suite's test episodes gives the same fingerprint
    eps = fixed_episodes(
        episode_source(suite, cfg), suite.n_episodes, seed=suite.seed, tasks_per_batch=1
    )
    want = episode_fingerprint(eps)
    assert {r["episode_fingerprint"] for r in res.records} == {want}
    assert all(r["n_tasks"] == suite.n_episodes for r in res.records)


def test_rerun_skips_finished_methods(omniglot_run) -> None:
    root, _ = omniglot_run
    ckpt = root / "runs" / "omniglot_5w1s" / "protonet" / "checkpoints" / "last.pt"
    stamp = ckpt.stat().st_mtime_ns
    again = run_benchmark(
        "omniglot_5w1s", root / "runs", methods=["protonet+ts"], smoke=True, results_dir=root / "results",
        progress=False, report=False,
    )  # fmt: skip
    assert [o.status for o in again.outcomes] == ["skipped", "skipped"]
    assert ckpt.stat().st_mtime_ns == stamp
    # the other suite's / methods' records in uncertainty.json are kept
    records = json.loads((root / "results" / "uncertainty.json").read_text())
    assert {r["method"] for r in records} >= {"protonet", "protonet+ts"}


def test_steps_cap_and_cpu_budget_are_respected(tmp_path: Path) -> None:
    res = run_benchmark(
        "linear_gaussian",
        tmp_path,
        methods=["maml"],
        smoke=True,
        max_steps=2,
        progress=False,
        report=False,
    )
    (rec,) = res.records
    assert rec["steps"] == 2 and rec["stopped"] == "steps"
    # a budget far below one step's cost: training stops after the first step past it
    res = run_benchmark(
        "linear_gaussian", tmp_path / "b", methods=["maml"], smoke=True, max_steps=10_000, budget_s=1e-3,
        progress=False, report=False,
    )  # fmt: skip
    (rec,) = res.records
    assert rec["stopped"] == "budget" and 1 <= rec["steps"] < 10_000
    assert rec["cpu_s"] >= 0.0 and rec["budget_s"] == 1e-3


def test_partial_training_continues_from_its_checkpoint(tmp_path: Path) -> None:
    first = run_benchmark(
        "linear_gaussian",
        tmp_path,
        methods=["maml"],
        smoke=True,
        max_steps=2,
        progress=False,
        report=False,
    )
    assert first.records[0]["steps"] == 2
    more = run_benchmark(
        "linear_gaussian",
        tmp_path,
        methods=["maml"],
        smoke=True,
        max_steps=5,
        progress=False,
        report=False,
    )
    assert more.outcomes[0].status == "done" and more.records[0]["steps"] == 5
    lines = [
        json.loads(x)
        for x in (tmp_path / "linear_gaussian" / "maml" / "metrics.jsonl").read_text().splitlines()
    ]
    steps = [r["step"] for r in lines if "loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 5  # continued, no step logged twice


def test_wall_time_limit_leaves_methods_partial(tmp_path: Path) -> None:
    res = run_benchmark(
        "linear_gaussian", tmp_path, methods=["maml", "bmaml"], smoke=True, max_minutes=1e-9, progress=False,
        report=False,
    )  # fmt: skip
    assert [o.status for o in res.outcomes] == ["partial", "partial"] and not res.complete
    res = run_benchmark(
        "linear_gaussian",
        tmp_path,
        methods=["maml", "bmaml"],
        smoke=True,
        progress=False,
        report=False,
    )
    assert res.complete and [o.status for o in res.outcomes] == ["done", "done"]


def test_linear_gaussian_reference_scores_match_a_hand_computed_posterior(tmp_path: Path) -> None:
    res = run_benchmark(
        "linear_gaussian", tmp_path, methods=["alpaca"], smoke=True, progress=False, report=False
    )
    (rec,) = res.records
    from bayesmeta.runs import load_learner

    suite = smoke_suite(get_suite("linear_gaussian"))
    cfg = suite_configs(suite, suite.methods, 3)["alpaca"]
    learner, _ = load_learner(tmp_path / "linear_gaussian" / "alpaca")
    fam = episode_source(suite, cfg)
    kls = []
    for batch in fixed_episodes(fam, suite.n_episodes, seed=suite.seed, tasks_per_batch=1):
        x, y = batch.support_x[0, :, 0].double(), batch.support_y[0, :, 0].double()
        phi = torch.stack([x, torch.ones_like(x)], -1)  # features [x, 1], prior N(0, I), noise 0.3
        cov = torch.linalg.inv(phi.T @ phi / 0.09 + torch.eye(2, dtype=torch.float64))
        mean_w = cov @ phi.T @ y / 0.09
        xq = batch.query_x[0, :, 0].double()
        pq = torch.stack([xq, torch.ones_like(xq)], -1)
        m_ref, v_ref = pq @ mean_w, (pq @ cov * pq).sum(-1) + 0.09
        with torch.no_grad():
            torch.manual_seed(suite.seed)
            pred = learner(batch)
        m, v = pred.mean[0, :, 0].double(), pred.variance[0, :, 0].double()
        kls.append((0.5 * (torch.log(v / v_ref) + (v_ref + (m_ref - m) ** 2) / v - 1)).mean())
    # float32 predictives against a float64 closed form
    assert rec["kl"] == pytest.approx(float(torch.stack(kls).mean()), rel=1e-4, abs=1e-6)


def test_docs_block_is_regenerated_in_place(tmp_path: Path) -> None:
    doc = tmp_path / "b.md"
    doc.write_text("# Benchmarks\n\nintro\n")
    meta = {"suite": "linear_gaussian", "description": "d", "budget_s": 5.0, "max_steps": 9, "n_episodes": 4,
            "command": "bayesmeta benchmark linear_gaussian", "machine": "2-core test", "pending": []}  # fmt: skip
    rec = {"suite": "linear_gaussian", "method": "maml", "kind": "regression", "mse": 1.0, "mse_ci": [0.5, 1.5],
           "steps": 3, "cpu_s": 1.0}  # fmt: skip
    update_docs(doc, meta, [rec])
    update_docs(doc, meta, [{**rec, "mse": 2.0}])
    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\nintro\n")
    assert text.count("bayesmeta-benchmark:linear_gaussian:start") == 1
    assert "| maml | 2 [0.5, 1.5]" in text and "| maml | 1 [" not in text
    assert (
        "2-core test" in text
        and "bayesmeta benchmark linear_gaussian" in text
        and "5 CPU seconds" in text
    )


def test_unknown_suite_and_method_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown suite 'nope'.*sinusoid_5shot"):
        run_benchmark("nope", tmp_path)
    with pytest.raises(
        ConfigError, match="unknown method 'protonet' for suite 'linear_gaussian'.*maml"
    ):
        run_benchmark("linear_gaussian", tmp_path, methods=["protonet"], smoke=True)
    with pytest.raises(ConfigError, match="budget"):
        run_benchmark("linear_gaussian", tmp_path, budget_s=-1.0, smoke=True)
    assert not (tmp_path / "linear_gaussian").exists()  # nothing written before the checks


def test_cli_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = tmp_path / "bench.md"
    doc.write_text("# B\n")
    argv = ["benchmark", "linear_gaussian", "--smoke", "--run-dir", str(tmp_path / "r"), "--method", "maml",
            "--method", "bmaml_prior", "--results-dir", str(tmp_path / "res"), "--docs", str(doc), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "linear_gaussian: maml: done" in out
    data = json.loads((tmp_path / "res" / "linear_gaussian.json").read_text())
    assert [r["method"] for r in data["records"]] == ["maml", "bmaml_prior"]
    assert all(r["kl"] >= 0 and r["w2"] >= 0 for r in data["records"])
    assert "bayesmeta-benchmark:linear_gaussian:start" in doc.read_text()
    assert (tmp_path / "r" / "linear_gaussian" / "report" / "posterior_bands.png").is_file()
    assert main(argv) == 0 and "maml: skipped" in capsys.readouterr().out


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["benchmark", "nope", "--run-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bayesmeta: error: suite: unknown suite 'nope'") and err.count("\n") == 1
    assert (
        main(
            [
                "benchmark",
                "linear_gaussian",
                "--smoke",
                "--method",
                "xyz",
                "--run-dir",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "unknown method 'xyz'" in capsys.readouterr().err
    assert main(["benchmark", "--list"]) == 0
    assert "omniglot_5w1s" in capsys.readouterr().out


def _with_wild_maml() -> object:
    """The smoke linear_gaussian suite with MAML plus a MAML whose inner step overflows at once."""
    from dataclasses import replace

    from bayesmeta.benchmark import MethodEntry

    suite = smoke_suite(get_suite("linear_gaussian"))
    maml = next(m for m in suite.methods if m.label == "maml")
    wild = MethodEntry("wild", {**maml.method, "inner_lr": 1e30}, dict(maml.model))
    return replace(suite, methods=(maml, wild))


def test_a_diverging_method_is_recorded_and_the_suite_goes_on(tmp_path: Path) -> None:
    """A learner whose training diverges before any validation: its record says so (no metrics),
    the other methods are evaluated, the table shows a dash with the reason, and a rerun does not
    train it again."""
    suite = _with_wild_maml()
    res = run_benchmark(suite, tmp_path / "runs", results_dir=tmp_path / "res", docs=tmp_path / "b.md",
                        progress=False)  # fmt: skip
    by = {r["method"]: r for r in res.records}
    assert res.complete and set(by) == {"maml", "wild"}
    assert by["wild"]["stopped"] == "diverged" and "nan" in by["wild"]["diverged"]
    assert by["wild"]["episode_fingerprint"] is None and "mse" not in by["wild"]
    assert by["maml"]["stopped"] in ("budget", "steps") and by["maml"]["mse"] > 0
    text = (tmp_path / "b.md").read_text()
    assert "| wild (diverged) | –" in text and "training diverged" in text
    led = json.loads((tmp_path / "runs" / "linear_gaussian" / "wild" / "benchmark.json").read_text())
    assert led["diverged"]
    again = run_benchmark(suite, tmp_path / "runs", results_dir=tmp_path / "res", progress=False, report=False)
    assert [o.status for o in again.outcomes] == ["skipped", "skipped"]


def test_a_method_diverging_after_a_validated_checkpoint_is_evaluated_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Divergence after validation: the method is evaluated at its best validated checkpoint and
    its record keeps the error (stopped = "diverged")."""
    import bayesmeta.runs as runs
    from bayesmeta.exceptions import NumericalError

    first = run_benchmark("linear_gaussian", tmp_path, methods=["maml"], smoke=True, max_steps=2,
                          progress=False, report=False)  # fmt: skip
    assert first.records[0]["stopped"] == "steps"

    def diverge(*args: object, **kwargs: object) -> None:
        raise NumericalError("loss: NaN at step 3")

    monkeypatch.setattr(runs, "train_run", diverge)
    res = run_benchmark("linear_gaussian", tmp_path, methods=["maml"], smoke=True, max_steps=5,
                        progress=False, report=False)  # fmt: skip
    (rec,) = res.records
    assert rec["stopped"] == "diverged" and rec["diverged"] == "loss: NaN at step 3"
    assert rec["mse"] == pytest.approx(first.records[0]["mse"])  # the same (best) checkpoint
    assert rec["episode_fingerprint"] == first.records[0]["episode_fingerprint"]


def test_a_method_whose_evaluation_fails_is_recorded_and_the_suite_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A NumericalError while evaluating one method (an inner loop diverging on out-of-range
    inputs) gives that method a record without metrics and the error; the others are evaluated."""
    import bayesmeta.benchmark.run as run
    from bayesmeta.exceptions import NumericalError

    real = run._evaluate

    def evaluate(suite, entry, *args, **kwargs):  # type: ignore[no-untyped-def]
        if entry.label == "fomaml":
            raise NumericalError("adapt: the inner loop diverged (non-finite outputs) for task(s) [0]")
        return real(suite, entry, *args, **kwargs)

    monkeypatch.setattr(run, "_evaluate", evaluate)
    res = run_benchmark("linear_gaussian", tmp_path / "runs", methods=["maml", "fomaml"], smoke=True,
                        results_dir=tmp_path / "res", docs=tmp_path / "b.md", progress=False)  # fmt: skip
    by = {r["method"]: r for r in res.records}
    assert res.complete and by["maml"]["mse"] > 0
    assert by["fomaml"]["stopped"] in ("budget", "steps") and "mse" not in by["fomaml"]
    assert by["fomaml"]["error"].startswith("evaluation failed: adapt: the inner loop diverged")
    text = (tmp_path / "b.md").read_text()
    assert "| fomaml (evaluation failed) | –" in text and "evaluation failed: adapt" in text


def test_protonets_train_on_their_own_tasks_and_are_tested_on_the_suite_episodes(omniglot_run) -> None:
    """ProtoNets (and their ensemble) meta-train 20-way with their paper's schedule; the test and
    calibration episodes stay the suite's 5-way ones (same fingerprint as DKT's, checked above)."""
    root, res = omniglot_run
    suite = smoke_suite(get_suite("omniglot_5w1s"))
    cfgs = suite_configs(suite, suite.methods, 3)
    assert cfgs["protonet"]["tasks"]["n_way"] == 20 and cfgs["dkt"]["tasks"]["n_way"] == 5
    assert cfgs["protonet"]["training"]["meta_batch_size"] == 1
    assert cfgs["protonet"]["training"]["lr_decay_every"] == 2000
    assert cfgs["ensemble"]["tasks"]["n_way"] == 20
    for label in ("protonet", "dkt"):
        batch = next(iter(fixed_episodes(episode_source(suite, cfgs[label]), 1, seed=0)))
        assert batch.n_way == 5 and int(batch.support_y.max()) == 4, label  # 5-way test tasks for both
    summary = json.loads((root / "runs" / "omniglot_5w1s" / "protonet" / "eval" / "summary.json").read_text())
    assert summary["protocol"]["train_tasks"]["n_way"] == 20
    assert summary["protocol"]["tasks"]["n_way"] == 5


def test_a_tasks_override_the_suite_does_not_have_is_refused(tmp_path: Path) -> None:
    from dataclasses import replace

    from bayesmeta.benchmark import MethodEntry

    suite = smoke_suite(get_suite("omniglot_5w1s"))
    odd = replace(suite, methods=(MethodEntry("p", {"name": "protonet"}, {"name": "conv4", "hidden": 8},
                                              tasks={"prevalence": "natural"}),))  # fmt: skip
    with pytest.raises(ConfigError, match=r"method p: tasks overrides \['prevalence'\]"):
        run_benchmark(odd, tmp_path, progress=False)


@pytest.mark.parametrize("name", sorted(SUITES))
def test_every_suite_resolves_and_draws_its_test_and_calibration_episodes(name: str) -> None:
    """The full (not smoke) settings: every method's config resolves and builds, and one test and
    one calibration episode of the suite can be drawn (RetinaMNIST's rarest grade included)."""
    suite = get_suite(name)
    cfgs = suite_configs(suite, suite.methods, 3)
    assert set(cfgs) == {m.label for m in suite.methods if m.derived_from is None}
    cfg = next(iter(cfgs.values()))
    for split in ("test", "val"):
        (batch,) = fixed_episodes(episode_source(suite, cfg, split), 1, seed=0)
        if suite.kind == "classification":
            assert batch.n_way == suite.tasks["n_way"]  # the heads are sized by the training episodes
            assert int(batch.query_y.unique().numel()) == batch.n_way  # every class has queries
