"""``bayesmeta`` CLI whose process of rank ``DIE_RANK`` dies (``os._exit``) after step
``DIE_STEP`` the first time it gets there (a marker file remembers that it happened), to test
what a multi-process run does when a process dies. Used by tests/distributed/test_multiprocess.py."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Any

from bayesmeta import training
from bayesmeta.cli import main

_init = training.MetaTrainer.__init__


@functools.wraps(_init)  # keeps the signature, which bayesmeta.config reads for its defaults
def _init_with_failure(self: training.MetaTrainer, *args: Any, **kwargs: Any) -> None:
    _init(self, *args, **kwargs)
    marker = Path(os.environ["DIE_MARKER"])
    rank, die_rank, die_step = int(os.environ["RANK"]), int(os.environ["DIE_RANK"]), int(os.environ["DIE_STEP"])

    def callback(step: int, out: Any) -> None:
        if rank == die_rank and step == die_step and not marker.exists():
            marker.write_text(f"rank {rank} died after step {step}\n")
            os._exit(17)  # no cleanup, no goodbye: like a killed process

    self.callback = callback


training.MetaTrainer.__init__ = _init_with_failure  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
