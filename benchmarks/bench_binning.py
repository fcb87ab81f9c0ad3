"""ECE binning without dtype copies (issue 14): the previous ``bin_index`` against the current one.

Same 10^6 x 10 float32 probabilities as bench_ece.py (softmax of ``2 * randn``), 15 equal-width
bins, one thread; contenders interleaved (benchmarks/_timing.py), median of per-round ratios.
Also the whole ``ece`` against torchmetrics' ``multiclass_calibration_error`` in the same rounds.
The two ``bin_index`` versions must give identical bins (checked before timing).

    .venv/bin/python benchmarks/bench_binning.py [--repeats 15]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json

import torch
from _timing import interleaved, machine

from bayesmeta.metrics import ece
from bayesmeta.metrics._binning import bin_index


def previous_bin_index(conf: torch.Tensor, n_bins: int) -> torch.Tensor:
    """bayesmeta's equal-width ``bin_index`` before issue 14: int64 copies of the comparisons."""
    edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=conf.dtype, device=conf.device)
    idx = (conf * n_bins).long().clamp_(0, n_bins - 1)
    idx -= (conf < edges[idx]).long()
    idx += (conf >= edges[idx + 1]).long()
    return idx.clamp_(0, n_bins - 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--n", type=int, default=1_000_000)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from torchmetrics.functional.classification import multiclass_calibration_error

    g = torch.Generator().manual_seed(0)
    p = torch.softmax(2 * torch.randn(1, args.n, 10, generator=g), -1)
    y = torch.multinomial(p[0], 1, generator=g).squeeze(-1)[None]
    conf = p.max(-1).values
    same = torch.equal(bin_index(conf, None, 15, "equal_width"), previous_bin_index(conf, 15))
    res = interleaved(
        {
            "bin_index_previous": lambda: previous_bin_index(conf, 15),
            "bin_index": lambda: bin_index(conf, None, 15, "equal_width"),
            "ece_bayesmeta": lambda: ece(p, y, n_bins=15),
            "ece_torchmetrics": lambda: multiclass_calibration_error(p[0], y[0], num_classes=10, n_bins=15, norm="l1"),
        },
        "bin_index_previous",
        args.repeats,
    )
    tm = interleaved(
        {
            "ece_bayesmeta": lambda: ece(p, y, n_bins=15),
            "ece_torchmetrics": lambda: multiclass_calibration_error(p[0], y[0], num_classes=10, n_bins=15, norm="l1"),
        },
        "ece_bayesmeta",
        args.repeats,
    )
    print(json.dumps({
        "benchmark": "ece_binning_copies",
        "machine": machine(),
        "setup": {"n": args.n, "classes": 10, "bins": 15, "repeats": args.repeats},
        "same_bins_as_previous": same,
        "bin_index_over_previous": res["bin_index"]["ratio"],
        "torchmetrics_over_bayesmeta_ece": tm["ece_torchmetrics"]["ratio"],
        "timings": res,
    }, indent=2))


if __name__ == "__main__":
    main()
