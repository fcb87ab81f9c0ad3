"""The uncertainty benchmark: ``bayesmeta benchmark SUITE`` runs every learner of a fixed suite on the
same test episodes under per-method CPU budgets, resumably, and writes records, a report and docs tables.

See :mod:`bayesmeta.benchmark.suites` (the suites and their methods), :mod:`bayesmeta.benchmark.run`
(budgets, resuming, the run folder), :mod:`bayesmeta.benchmark.records` (the JSON records and the
Markdown tables) and ``docs/benchmarks.md`` (the measured results).
"""

from bayesmeta.benchmark.records import (
    RECORD_KEYS,
    make_record,
    markdown_table,
    pooled_ece,
    update_docs,
    write_results,
)
from bayesmeta.benchmark.run import BenchmarkResult, MethodOutcome, run_benchmark
from bayesmeta.benchmark.suites import (
    DERIVED_METHODS,
    SUITES,
    MethodEntry,
    Suite,
    get_suite,
    select_methods,
    smoke_suite,
)

__all__ = [
    "SUITES",
    "DERIVED_METHODS",
    "RECORD_KEYS",
    "Suite",
    "MethodEntry",
    "BenchmarkResult",
    "MethodOutcome",
    "get_suite",
    "select_methods",
    "smoke_suite",
    "run_benchmark",
    "make_record",
    "markdown_table",
    "pooled_ece",
    "update_docs",
    "write_results",
]
