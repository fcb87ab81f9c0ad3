"""Meta-learners: one file per method, all implementing :class:`MetaLearner`.

| family | learners |
|---|---|
| gradient, point | :class:`MAML` (FOMAML, Meta-SGD, ANIL as options), :class:`Reptile`, :class:`IMAML` |
| gradient, particles / Gaussian | :class:`BMAML` (SVGD), :class:`PLATIPUS` |
| amortized | :class:`ProtoNet`, :class:`MatchingNet`, :class:`VERSA`, :class:`CNP`, :class:`NP`, :class:`ANP` |
| conjugate | :class:`ALPaCA` (Bayesian linear head), :class:`DKT` (deep-kernel GP) |
| any | :class:`Ensemble` (uniform mixture of M independently initialized learners) |

The gradient family shares one base, :class:`GradientLearner` (backbone, inner-loop options,
support loss, noise model); :class:`ParticleLearner` adds the M-particle predictive.
"""

from bayesmeta.inference.alpaca import ALPaCA, ALPaCAPosterior
from bayesmeta.inference.anp import ANP
from bayesmeta.inference.base import MetaLearner, StepOutput, TaskPosterior
from bayesmeta.inference.bmaml import BMAML
from bayesmeta.inference.cnp import CNP
from bayesmeta.inference.dkt import DKT, DKTPosterior
from bayesmeta.inference.ensemble import Ensemble, EnsemblePosterior
from bayesmeta.inference.gradient_base import GradientLearner
from bayesmeta.inference.imaml import IMAML
from bayesmeta.inference.latent_np import NP
from bayesmeta.inference.maml import MAML, MAMLPosterior
from bayesmeta.inference.matching import MatchingNet, MatchingPosterior
from bayesmeta.inference.neural_process import NeuralProcessPosterior
from bayesmeta.inference.particles import ParticleLearner, ParticlePosterior
from bayesmeta.inference.platipus import PLATIPUS
from bayesmeta.inference.protonet import ProtoNet, ProtoPosterior
from bayesmeta.inference.reptile import Reptile
from bayesmeta.inference.versa import VERSA, VERSAPosterior

__all__ = [
    "ALPaCA",
    "ALPaCAPosterior",
    "ANP",
    "BMAML",
    "CNP",
    "DKT",
    "DKTPosterior",
    "Ensemble",
    "EnsemblePosterior",
    "GradientLearner",
    "IMAML",
    "MAML",
    "MAMLPosterior",
    "MatchingNet",
    "MatchingPosterior",
    "MetaLearner",
    "NP",
    "ParticleLearner",
    "NeuralProcessPosterior",
    "PLATIPUS",
    "ParticlePosterior",
    "ProtoNet",
    "ProtoPosterior",
    "Reptile",
    "StepOutput",
    "TaskPosterior",
    "VERSA",
    "VERSAPosterior",
]
