"""Medical few-shot risk studies: ``bayesmeta study STUDY.yaml`` trains, evaluates and reports.

See :mod:`bayesmeta.study.config` for the YAML format and protocols, :mod:`bayesmeta.study.run`
for the output layout, and ``docs/medical.md`` for a worked study.
"""

from bayesmeta.study.config import PROTOCOLS, load_study, resolve_study
from bayesmeta.study.report import write_study_report
from bayesmeta.study.run import DatasetResult, Fold, StudyResult, plan_folds, run_study

__all__ = [
    "PROTOCOLS",
    "load_study",
    "resolve_study",
    "plan_folds",
    "run_study",
    "Fold",
    "DatasetResult",
    "StudyResult",
    "write_study_report",
]
