"""Multi-process meta-training: the same run on 1 and on N processes, and what differs.

    .venv/bin/python examples/tutorials/distributed.py [--nproc 2] [--steps 200] [--runs runs/tutorials/distributed] [--smoke]

Writes a MAML sinusoid config and trains it twice: once in one process
(``bayesmeta train CONFIG --run-dir D``) and once with ``torchrun --standalone
--nproc_per_node=N -m bayesmeta train CONFIG --run-dir D`` (each meta-batch of tasks is split
across the processes and the meta-gradients are all-reduced), then compares the final
meta-parameters: the trajectory does not depend on the number of processes, up to float32
all-reduce rounding. Where ``bayesmeta.distributed`` is not installed (an older bayesmeta), only
the single-process run is made and the script says so. ``--smoke``: two steps, seconds.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from bayesmeta.training import load_checkpoint

# --8<-- [start:config]
CONFIG = """\
method: {{name: maml, inner_lr: 0.01, inner_steps: 1}}
model: {{name: mlp, hidden: [40, 40]}}
tasks: {{name: sinusoid, k_shot: 10, n_query: 10}}
training: {{steps: {steps}, meta_batch_size: 25, lr: 0.001, seed: 0, checkpoint_every: 100}}
evaluation: {{n_episodes: 100, seed: 1234, tasks_per_batch: 50}}
"""
# --8<-- [end:config]


def train(config: Path, run_dir: Path, nproc: int) -> list[str]:
    """``bayesmeta train`` in a fresh process, under torchrun when ``nproc > 1``; returns the command."""
    if nproc == 1:
        cmd = [sys.executable, "-m", "bayesmeta", "train", str(config), "--run-dir", str(run_dir), "--no-progress"]
    else:
        # `python -m torch.distributed.run` is the `torchrun` command, from the same environment
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "bayesmeta", "train", str(config), "--run-dir", str(run_dir), "--no-progress"]
    subprocess.run(cmd, check=True)
    return cmd


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nproc", type=int, default=2, help="processes of the distributed run")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--runs", type=Path, default=None,
                    help="run directories go here (default: runs/tutorials/distributed; with --smoke a temporary folder)")
    ap.add_argument("--smoke", action="store_true", help="two steps, seconds (CI)")
    ap.add_argument("--out-dir", type=Path, default=None, help="unused (no figure); accepted like the other tutorials")
    args = ap.parse_args(argv)
    args.runs = args.runs or (Path(tempfile.mkdtemp(prefix="bayesmeta-smoke-")) if args.smoke else Path("runs/tutorials/distributed"))
    steps = 2 if args.smoke else args.steps
    args.runs.mkdir(parents=True, exist_ok=True)
    config = args.runs / "maml_sinusoid.yaml"
    config.write_text(CONFIG.format(steps=steps), encoding="utf-8")

    single = args.runs / "one_process"
    train(config, single, 1)
    if importlib.util.find_spec("bayesmeta.distributed") is None:
        print("bayesmeta.distributed is not in this installation: only the single-process run was made")
        return
    multi = args.runs / f"{args.nproc}_processes"
    print("ran:", " ".join(train(config, multi, args.nproc)))

    # --8<-- [start:compare]
    a = load_checkpoint(single / "checkpoints" / "last.pt")["learner"]
    b = load_checkpoint(multi / "checkpoints" / "last.pt")["learner"]
    diff = max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())
    # --8<-- [end:compare]
    print(f"after {steps} steps, largest parameter difference between 1 and {args.nproc} processes: {diff:.2e}")
    if diff > 1e-3:  # float32 all-reduce rounding accumulates to ~1e-6..1e-5 over a few hundred Adam steps
        raise SystemExit(f"the {args.nproc}-process run diverged from the single-process run ({diff:.2e})")
    assert torch.isfinite(torch.tensor(diff))


if __name__ == "__main__":
    main()
