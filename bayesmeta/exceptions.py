"""The one exception hierarchy of bayesmeta.

Every error that bayesmeta raises on purpose derives from :class:`BayesMetaError`, so a caller can
catch the library's errors without catching torch's. The subclasses also derive from the matching
builtin (``ValueError``, ``KeyError``...) so that generic ``except ValueError`` code keeps working.

Messages follow one pattern: the argument's name, what was expected, what was given.
"""

from __future__ import annotations

__all__ = [
    "BayesMetaError",
    "ShapeError",
    "InvalidValueError",
    "ConfigError",
    "CheckpointError",
    "DataError",
    "NumericalError",
    "DistributedError",
]


class BayesMetaError(Exception):
    """Base class of every error raised by bayesmeta."""


class ShapeError(BayesMetaError, ValueError):
    """A tensor has the wrong number of dimensions or the wrong size along one of them."""


class InvalidValueError(BayesMetaError, ValueError):
    """An argument has a value outside its domain (NaN, a negative variance, a label >= n_way...)."""


class ConfigError(BayesMetaError, ValueError):
    """A configuration (YAML file or constructor options) names an unknown key or a bad value."""


class CheckpointError(BayesMetaError, RuntimeError):
    """A checkpoint is missing, truncated, unsafe to load or from a different configuration."""


class DataError(BayesMetaError, ValueError):
    """A dataset cannot supply what was asked of it (too few classes or examples per class)."""


class NumericalError(BayesMetaError, ArithmeticError):
    """A computation produced NaN/Inf or failed numerically where it cannot be recovered."""


class DistributedError(BayesMetaError, RuntimeError):
    """A multi-process run cannot continue: a process died or the process group failed."""
