"""The medical risk study tutorial: runs examples/medical_risk_study.py into the site's figures.

    .venv/bin/python examples/tutorials/medical_study.py [--minutes 4] [--out-dir docs/assets/tutorials] [--smoke]

The study itself (meta-train a ProtoNet on MedNIST, test it on PneumoniaMNIST clinics, clinical
metrics with CIs over episodes, a referral rule fitted on validation episodes, referral and
decision curves) lives in ``examples/medical_risk_study.py`` so that there is one copy of it;
this script runs it and writes its figure as ``medical_referral.png``. ``--smoke``: seconds.
"""

from __future__ import annotations

import argparse
import runpy
import tempfile
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1]
FIGURES = EXAMPLES.parent / "docs" / "assets" / "tutorials"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=4.0, help="meta-training budget")
    ap.add_argument("--out-dir", type=Path, default=None,
                    help="where the figures go (default: docs/assets/tutorials; with --smoke a temporary folder)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, seconds (CI)")
    args = ap.parse_args(argv)
    args.out_dir = args.out_dir or (Path(tempfile.mkdtemp(prefix="bayesmeta-smoke-")) if args.smoke else FIGURES)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    study = runpy.run_path(str(EXAMPLES / "medical_risk_study.py"))  # defines main() without running it
    study["main"](["--minutes", str(args.minutes), "--out", str(args.out_dir / "medical_referral.png")]
                  + (["--smoke"] if args.smoke else []))


if __name__ == "__main__":
    main()
