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

Learners are imported on first use (PEP 562, :mod:`bayesmeta._lazy`): using MAML does not import
GPyTorch (DKT) or the neural processes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bayesmeta._lazy import lazy_exports

if TYPE_CHECKING:  # explicit re-exports for type checkers and IDEs; at run time see _EXPORTS
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

#: public name -> module defining it, imported on first access (PEP 562; bayesmeta._lazy)
_EXPORTS: dict[str, str] = {
    "ALPaCA": "bayesmeta.inference.alpaca",
    "ALPaCAPosterior": "bayesmeta.inference.alpaca",
    "ANP": "bayesmeta.inference.anp",
    "MetaLearner": "bayesmeta.inference.base",
    "StepOutput": "bayesmeta.inference.base",
    "TaskPosterior": "bayesmeta.inference.base",
    "BMAML": "bayesmeta.inference.bmaml",
    "CNP": "bayesmeta.inference.cnp",
    "DKT": "bayesmeta.inference.dkt",
    "DKTPosterior": "bayesmeta.inference.dkt",
    "Ensemble": "bayesmeta.inference.ensemble",
    "EnsemblePosterior": "bayesmeta.inference.ensemble",
    "GradientLearner": "bayesmeta.inference.gradient_base",
    "IMAML": "bayesmeta.inference.imaml",
    "NP": "bayesmeta.inference.latent_np",
    "MAML": "bayesmeta.inference.maml",
    "MAMLPosterior": "bayesmeta.inference.maml",
    "MatchingNet": "bayesmeta.inference.matching",
    "MatchingPosterior": "bayesmeta.inference.matching",
    "NeuralProcessPosterior": "bayesmeta.inference.neural_process",
    "ParticleLearner": "bayesmeta.inference.particles",
    "ParticlePosterior": "bayesmeta.inference.particles",
    "PLATIPUS": "bayesmeta.inference.platipus",
    "ProtoNet": "bayesmeta.inference.protonet",
    "ProtoPosterior": "bayesmeta.inference.protonet",
    "Reptile": "bayesmeta.inference.reptile",
    "VERSA": "bayesmeta.inference.versa",
    "VERSAPosterior": "bayesmeta.inference.versa",
}

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

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS, __all__)
