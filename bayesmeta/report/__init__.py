"""Reports comparing evaluated runs: one self-contained HTML page, plus Markdown and JSON tables.

``bayesmeta report RUN_DIR [RUN_DIR ...] [--out DIR]`` calls :func:`build_report`.
"""

from bayesmeta.report.build import build_report
from bayesmeta.report.loading import RunResult, load_run, load_runs

__all__ = ["build_report", "RunResult", "load_run", "load_runs"]
