"""bayesmeta: probabilistic, Bayesian meta-learning on PyTorch, Pyro and GPyTorch.

Every method is a hierarchical model plus an inference method for the per-task parameters:
``adapt(support) -> posterior`` and ``predict(posterior, query_x) -> Predictive``. See
DESIGN.md and README.md.

Names are imported on first use (PEP 562, :mod:`bayesmeta._lazy`), so that ``import bayesmeta``
costs almost nothing over ``import torch`` and GPyTorch, Pyro, ArviZ and matplotlib load only
with the code that needs them; ``__all__`` and ``dir()`` list the whole public API.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bayesmeta._lazy import lazy_exports
from bayesmeta.exceptions import (
    BayesMetaError,
    CheckpointError,
    ConfigError,
    DataError,
    InvalidValueError,
    NumericalError,
    ShapeError,
)

if TYPE_CHECKING:  # explicit re-exports for type checkers and IDEs; at run time see _EXPORTS
    from bayesmeta.evaluation import EvaluationResult, evaluate
    from bayesmeta.inference.alpaca import ALPaCA
    from bayesmeta.inference.anp import ANP
    from bayesmeta.inference.base import MetaLearner, StepOutput, TaskPosterior
    from bayesmeta.inference.bmaml import BMAML
    from bayesmeta.inference.cnp import CNP
    from bayesmeta.inference.dkt import DKT
    from bayesmeta.inference.ensemble import Ensemble
    from bayesmeta.inference.imaml import IMAML
    from bayesmeta.inference.latent_np import NP
    from bayesmeta.inference.maml import MAML
    from bayesmeta.inference.matching import MatchingNet
    from bayesmeta.inference.platipus import PLATIPUS
    from bayesmeta.inference.protonet import ProtoNet
    from bayesmeta.inference.reptile import Reptile
    from bayesmeta.inference.versa import VERSA
    from bayesmeta.models.conv import Conv4
    from bayesmeta.models.mlp import MLP
    from bayesmeta.predictive import CategoricalPredictive, GaussianPredictive, Predictive
    from bayesmeta.tasks.batch import SupportSet, TaskBatch
    from bayesmeta.tasks.clinical import ClinicalSampler
    from bayesmeta.tasks.datasets import omniglot
    from bayesmeta.tasks.episodes import fixed_episodes
    from bayesmeta.tasks.gp_curves import GPCurves
    from bayesmeta.tasks.medical import medmnist, mednist
    from bayesmeta.tasks.regression import LinearGaussian, Sinusoid
    from bayesmeta.tasks.sampler import FewShotSampler
    from bayesmeta.training import MetaTrainer, load_checkpoint

#: public name -> module defining it, imported on first access (PEP 562; bayesmeta._lazy)
_EXPORTS: dict[str, str] = {
    "EvaluationResult": "bayesmeta.evaluation",
    "evaluate": "bayesmeta.evaluation",
    "ALPaCA": "bayesmeta.inference.alpaca",
    "ANP": "bayesmeta.inference.anp",
    "MetaLearner": "bayesmeta.inference.base",
    "StepOutput": "bayesmeta.inference.base",
    "TaskPosterior": "bayesmeta.inference.base",
    "BMAML": "bayesmeta.inference.bmaml",
    "CNP": "bayesmeta.inference.cnp",
    "DKT": "bayesmeta.inference.dkt",
    "Ensemble": "bayesmeta.inference.ensemble",
    "IMAML": "bayesmeta.inference.imaml",
    "NP": "bayesmeta.inference.latent_np",
    "MAML": "bayesmeta.inference.maml",
    "MatchingNet": "bayesmeta.inference.matching",
    "PLATIPUS": "bayesmeta.inference.platipus",
    "ProtoNet": "bayesmeta.inference.protonet",
    "Reptile": "bayesmeta.inference.reptile",
    "VERSA": "bayesmeta.inference.versa",
    "Conv4": "bayesmeta.models.conv",
    "MLP": "bayesmeta.models.mlp",
    "CategoricalPredictive": "bayesmeta.predictive",
    "GaussianPredictive": "bayesmeta.predictive",
    "Predictive": "bayesmeta.predictive",
    "SupportSet": "bayesmeta.tasks.batch",
    "TaskBatch": "bayesmeta.tasks.batch",
    "ClinicalSampler": "bayesmeta.tasks.clinical",
    "omniglot": "bayesmeta.tasks.datasets",
    "fixed_episodes": "bayesmeta.tasks.episodes",
    "GPCurves": "bayesmeta.tasks.gp_curves",
    "medmnist": "bayesmeta.tasks.medical",
    "mednist": "bayesmeta.tasks.medical",
    "LinearGaussian": "bayesmeta.tasks.regression",
    "Sinusoid": "bayesmeta.tasks.regression",
    "FewShotSampler": "bayesmeta.tasks.sampler",
    "MetaTrainer": "bayesmeta.training",
    "load_checkpoint": "bayesmeta.training",
}

__version__ = "0.1.0"

__all__ = [
    "ALPaCA",
    "ANP",
    "BMAML",
    "CNP",
    "DKT",
    "IMAML",
    "NP",
    "PLATIPUS",
    "VERSA",
    "BayesMetaError",
    "CategoricalPredictive",
    "CheckpointError",
    "ClinicalSampler",
    "ConfigError",
    "Conv4",
    "DataError",
    "Ensemble",
    "EvaluationResult",
    "FewShotSampler",
    "GPCurves",
    "GaussianPredictive",
    "InvalidValueError",
    "LinearGaussian",
    "MAML",
    "MLP",
    "MatchingNet",
    "MetaLearner",
    "MetaTrainer",
    "NumericalError",
    "Predictive",
    "ProtoNet",
    "Reptile",
    "ShapeError",
    "Sinusoid",
    "StepOutput",
    "SupportSet",
    "TaskBatch",
    "TaskPosterior",
    "evaluate",
    "fixed_episodes",
    "load_checkpoint",
    "medmnist",
    "mednist",
    "omniglot",
]

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS, __all__)
