"""Under torchrun: a learner whose meta-loss draws by task count (``torch.randn(T)``) in a
2-process run. Every rank writes how many ShardRandomnessWarnings it saw and a checksum of its
final weights to ``OUT_DIR/rank<r>.json`` (argv[1]). Used by tests/distributed/test_multiprocess.py."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import torch

from bayesmeta.distributed import init_distributed, shutdown
from bayesmeta.inference import MAML, StepOutput
from bayesmeta.models import MLP
from bayesmeta.tasks import Sinusoid
from bayesmeta.tasks.batch import TaskBatch
from bayesmeta.training import MetaTrainer, ShardRandomnessWarning


class BatchNoiseMAML(MAML):
    """MAML plus a draw shaped by the number of tasks (what the bundled learners avoid)."""

    def meta_loss(self, batch: TaskBatch) -> StepOutput:
        out = super().meta_loss(batch)
        noise = torch.randn(batch.n_tasks)
        return StepOutput(out.loss + 1e-3 * noise.mean(), out.metrics)


def main() -> None:
    ctx = init_distributed("cpu")
    torch.manual_seed(0)
    learner = BatchNoiseMAML(MLP(1, 1, hidden=(8,)), task_kind="regression")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        MetaTrainer(learner, Sinusoid(k_shot=3, n_query=3), steps=3, meta_batch_size=3, seed=1, progress=False,
                    distributed=ctx).fit()
    n = sum(issubclass(w.category, ShardRandomnessWarning) for w in seen)
    checksum = float(sum(p.detach().double().sum() for p in learner.parameters()))
    (Path(sys.argv[1]) / f"rank{ctx.rank}.json").write_text(json.dumps({"warnings": n, "checksum": checksum}))
    shutdown(ctx)


if __name__ == "__main__":
    main()
