"""Peak memory of a MAML meta-step against the number of inner steps, second vs first order.

Setup: Omniglot-shaped 5-way 1-shot episodes (5 queries per class), Conv4 with 64 filters,
meta-batch of 8 tasks, inner steps K in (1, 5, 10). The measure is ``peak_rss_delta_mb``: the
growth of the process's peak resident memory during one meta-step (forward + backward), each
configuration in a fresh subprocess after a warm-up step with K = 0 (so imports, weights and
allocator pools are already counted in the baseline). ``saved_tensors_hooks`` would give exact
autograd-graph bytes, but torch.func.grad does not support them (torch 2.13).

    .venv/bin/python benchmarks/bench_maml_memory.py

Prints one JSON object.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys

import torch


def one(steps: int, first_order: bool) -> dict[str, float]:
    from bayesmeta.inference import MAML
    from bayesmeta.models import Conv4
    from bayesmeta.tasks import TaskBatch

    torch.manual_seed(0)
    t, n_way, q = 8, 5, 5
    g = torch.Generator().manual_seed(0)
    batch = TaskBatch(
        torch.rand(t, n_way, 1, 28, 28, generator=g), torch.arange(n_way).repeat(t, 1),
        torch.rand(t, n_way * q, 1, 28, 28, generator=g), torch.arange(n_way).repeat_interleave(q).repeat(t, 1),
        n_way=n_way,
    )
    learner = MAML(Conv4(out_features=n_way), inner_lr=0.4, inner_steps=steps, first_order=first_order,
                   task_kind="classification")
    warm = MAML(Conv4(out_features=n_way), inner_steps=0, task_kind="classification")
    warm.meta_loss(batch).loss.backward()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    learner.meta_loss(batch).loss.backward()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_rss_delta_mb": (after - before) / 1024}


def main() -> None:
    if len(sys.argv) == 3:
        print(json.dumps(one(int(sys.argv[1]), sys.argv[2] == "fo")))
        return
    rows = []
    for steps in (1, 5, 10):
        for order in ("so", "fo"):
            out = subprocess.run([sys.executable, __file__, str(steps), order], capture_output=True, text=True, check=True)
            rows.append({"inner_steps": steps, "order": "second" if order == "so" else "first",
                         **json.loads(out.stdout.strip().splitlines()[-1])})
    print(json.dumps({
        "benchmark": "maml_meta_step_memory",
        "setup": {"tasks": 8, "n_way": 5, "k_shot": 1, "n_query": 5, "backbone": "conv4-64"},
        "torch": torch.__version__,
        "rows": rows,
    }, indent=2))


if __name__ == "__main__":
    main()
