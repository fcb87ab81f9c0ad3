"""Write your own MetaLearner and pass the contract suite: kernel regression in a learned embedding.

    .venv/bin/python examples/tutorials/custom_learner.py [--steps 2000] [--out-dir docs/assets/tutorials] [--smoke]

``KernelRegression`` predicts a query's target as a Gaussian whose mean is the kernel-weighted
average of its task's support targets (Nadaraya-Watson) in a meta-learned embedding, and whose
variance is the weighted spread of those targets plus a learned noise. It implements the three
methods of :class:`bayesmeta.MetaLearner`, then runs every check of the library's contract suite
(``tests/inference/test_contract.py``: shapes, pure ``adapt``, gradients to every meta-parameter,
determinism, the library's errors on bad input, no information shared between tasks or queries)
on it, meta-trains it on sinusoids and evaluates it like any built-in learner. ``--smoke``: a
few steps, seconds. Draws ``custom_learner.png``.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import nn

from bayesmeta import MLP, MetaTrainer, Sinusoid, evaluate, fixed_episodes
from bayesmeta.inference import MetaLearner, StepOutput, TaskPosterior
from bayesmeta.models import check_input_shape
from bayesmeta.predictive import GaussianPredictive
from bayesmeta.report.figures import plot_regression_task
from bayesmeta.tasks import SupportSet, TaskBatch

ROOT = Path(__file__).resolve().parents[2]
FIGURES = ROOT / "docs" / "assets" / "tutorials"


# --8<-- [start:learner]
@dataclass
class KernelPosterior(TaskPosterior):
    """What a task's support set leaves behind: its embedded inputs and its targets.

    Attributes:
        keys: ``[T, S, D]`` embedded support inputs.
        values: ``[T, S, Dy]`` support targets.
        mask: ``[T, S]`` bool, True where a support point is present.
    """

    keys: torch.Tensor
    values: torch.Tensor
    mask: torch.Tensor

    @property
    def n_tasks(self) -> int:
        return self.keys.shape[0]


class KernelRegression(MetaLearner):
    """Nadaraya-Watson regression with a meta-learned embedding, bandwidth and noise.

    Args:
        embedding: maps ``[N, *features]`` inputs to ``[N, D]`` embeddings.

    Shapes:
        ``adapt``: support ``[T, S, ...]`` -> keys ``[T, S, D]``.
        ``predict``: query_x ``[T, Q, ...]`` -> mean and variance ``[1, T, Q, Dy]``.
    """

    def __init__(self, embedding: nn.Module) -> None:
        super().__init__("regression")  # batches of the other kind are refused with a ShapeError
        self.embedding = embedding
        self.log_bandwidth = nn.Parameter(torch.zeros(()))
        self.log_noise = nn.Parameter(torch.tensor(-2.0))

    def _embed(self, x: torch.Tensor, name: str) -> torch.Tensor:
        check_input_shape(self.embedding, x, name)  # a wrong feature size names the argument
        return self.embedding(x.flatten(0, 1)).unflatten(0, x.shape[:2])

    def adapt(self, support: SupportSet) -> KernelPosterior:
        """Embed the support set; pure (nothing in ``self`` changes)."""
        self.check_batch(support, "support")
        mask = torch.ones(support.x.shape[:2], dtype=torch.bool, device=support.x.device)
        mask = mask if support.mask is None else support.mask
        return KernelPosterior(self._embed(support.x, "support_x"), support.y, mask)

    def predict(self, posterior: KernelPosterior, query_x: torch.Tensor) -> GaussianPredictive:
        """Kernel-weighted mean and spread of the support targets at each query point."""
        self.check_query_x(posterior, query_x)  # [T, Q, ...] with the posterior's T, else ShapeError
        q = self._embed(query_x, "query_x")                                        # [T, Q, D]
        d2 = ((q.unsqueeze(2) - posterior.keys.unsqueeze(1)) ** 2).sum(-1)         # [T, Q, S]
        logits = (-d2 / self.log_bandwidth.exp()).masked_fill(~posterior.mask.unsqueeze(1), float("-inf"))
        w = logits.softmax(-1).unsqueeze(-1)                                       # [T, Q, S, 1]
        y = posterior.values.unsqueeze(1)                                          # [T, 1, S, Dy]
        mean = (w * y).sum(2)                                                      # [T, Q, Dy]
        variance = (w * (y - mean.unsqueeze(2)) ** 2).sum(2) + self.log_noise.exp()
        return GaussianPredictive(mean.unsqueeze(0), variance.unsqueeze(0))       # M = 1

    def meta_loss(self, batch: TaskBatch) -> StepOutput:
        """Query negative log-likelihood of the predictive, averaged over present query points."""
        self.check_batch(batch)
        pred = self.predict(self.adapt(batch.support), batch.query_x)
        nll = -pred.log_prob(batch.query_y)                                        # [T, Q]
        w = torch.ones_like(nll) if batch.query_mask is None else batch.query_mask.to(nll.dtype)
        loss = (nll * w).sum() / w.sum()
        mse = (((pred.mean - batch.query_y) ** 2).mean(-1) * w).sum() / w.sum()
        return StepOutput(loss, {"loss": float(loss.detach()), "mse": float(mse.detach())})
# --8<-- [end:learner]


def run_contract_suite(factory) -> list[str]:  # type: ignore[no-untyped-def]
    """Run every check of ``tests/inference/test_contract.py`` that takes a learner on ``factory``.

    Returns the names of the checks that ran; raises (AssertionError, ...) at the first failure.
    """
    # --8<-- [start:contract]
    path = ROOT / "tests" / "inference" / "test_contract.py"
    spec = importlib.util.spec_from_file_location("test_contract", path)
    contract = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(contract)
    ran = []
    for name, check in vars(contract).items():
        if name.startswith("test_") and list(inspect.signature(check).parameters) == ["case"]:
            torch.manual_seed(0)
            check((factory(), contract.regression_batch))   # what the suite's `case` fixture gives
            ran.append(name)
    # --8<-- [end:contract]
    return ran


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--out-dir", type=Path, default=None,
                    help="where the figures go (default: docs/assets/tutorials; with --smoke a temporary folder)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, seconds (CI)")
    args = ap.parse_args(argv)
    args.out_dir = args.out_dir or (Path(tempfile.mkdtemp(prefix="bayesmeta-smoke-")) if args.smoke else FIGURES)
    steps, n_test = (3, 4) if args.smoke else (args.steps, 200)

    def factory() -> KernelRegression:
        return KernelRegression(MLP(1, 16, hidden=(40, 40)))

    ran = run_contract_suite(factory)
    print(f"contract suite: {len(ran)} checks passed: {', '.join(ran)}")

    torch.manual_seed(0)
    learner = factory()
    MetaTrainer(learner, Sinusoid(k_shot=10, n_query=10), steps=steps, meta_batch_size=25, seed=0,
                progress=not args.smoke).fit()
    episodes = fixed_episodes(Sinusoid(k_shot=10, n_query=50), n_episodes=n_test, seed=1234, tasks_per_batch=20)
    print(evaluate(learner, episodes, method="kernel regression", progress=False).table())

    task, truth = Sinusoid(k_shot=10, n_query=1).sample_with_params(1, generator=torch.Generator().manual_seed(7))
    grid = torch.linspace(-5, 5, 200).reshape(1, -1, 1)
    with torch.no_grad():
        pred = learner.predict(learner.adapt(task.support), grid)
    fig = Figure(figsize=(6, 3.2), layout="constrained")
    ax = fig.add_subplot()
    plot_regression_task(ax, grid, pred, truth=truth(grid), support=(task.support_x, task.support_y), label="kernel regression mean")
    ax.set_title(f"KernelRegression after {steps} meta-steps")
    ax.legend(fontsize=7)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out_dir / "custom_learner.png", dpi=90)


if __name__ == "__main__":
    main()
