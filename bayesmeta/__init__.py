"""bayesmeta: probabilistic, Bayesian meta-learning on PyTorch, Pyro and GPyTorch.

Every method is a hierarchical model plus an inference method for the per-task parameters:
``adapt(support) -> posterior`` and ``predict(posterior, query_x) -> Predictive``. See
DESIGN.md and README.md.
"""

from bayesmeta.evaluation import EvaluationResult, evaluate
from bayesmeta.exceptions import (
    BayesMetaError,
    CheckpointError,
    ConfigError,
    DataError,
    InvalidValueError,
    NumericalError,
    ShapeError,
)
from bayesmeta.inference import (
    ANP,
    BMAML,
    CNP,
    DKT,
    IMAML,
    MAML,
    NP,
    PLATIPUS,
    VERSA,
    ALPaCA,
    Ensemble,
    MatchingNet,
    MetaLearner,
    ProtoNet,
    Reptile,
    StepOutput,
    TaskPosterior,
)
from bayesmeta.models import MLP, Conv4
from bayesmeta.predictive import CategoricalPredictive, GaussianPredictive, Predictive
from bayesmeta.tasks import (
    ClinicalSampler,
    FewShotSampler,
    GPCurves,
    LinearGaussian,
    Sinusoid,
    SupportSet,
    TaskBatch,
    fixed_episodes,
    medmnist,
    mednist,
    omniglot,
)
from bayesmeta.training import MetaTrainer, load_checkpoint

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
