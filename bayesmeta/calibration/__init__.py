"""Post-hoc calibration: transforms of a predictive after adaptation, fitted on validation tasks.

Metrics (:mod:`bayesmeta.metrics`) are pure functions of a predictive; calibrators are fitted
objects that take predictives, never learners (DESIGN.md section 1). One file per calibrator:

| calibrator | for | what it returns |
|---|---|---|
| :class:`TemperatureScaling` | classification | a predictive with logits divided by ``tau`` |
| :class:`VarianceScaling` | regression | a predictive widened by ``s`` about its mean |
| :class:`SplitConformal` | both | sets ``[T, Q, C]`` / intervals ``[T, Q, Dy, 2]`` with coverage >= 1 - alpha |

Every calibrator has ``fit(predictive, targets, mask=None)`` returning the fitted calibrator and
``to_dict()``; :func:`bayesmeta.evaluate` fits one on validation episodes (``calibrator=``).
See ``docs/calibration.md`` for when to use which.
"""

from bayesmeta.calibration.apply import CALIBRATORS, Calibrator, make_calibrator
from bayesmeta.calibration.conformal import (
    SplitConformal,
    conformal_quantile,
    min_calibration_points,
)
from bayesmeta.calibration.scores import CLASSIFICATION_SCORES, REGRESSION_SCORES
from bayesmeta.calibration.set_metrics import conformal_metrics
from bayesmeta.calibration.temperature import TemperatureScaling, fit_temperature
from bayesmeta.calibration.variance import VarianceScaling

__all__ = [
    "CALIBRATORS",
    "Calibrator",
    "make_calibrator",
    "CLASSIFICATION_SCORES",
    "REGRESSION_SCORES",
    "SplitConformal",
    "TemperatureScaling",
    "VarianceScaling",
    "conformal_metrics",
    "conformal_quantile",
    "fit_temperature",
    "min_calibration_points",
]
