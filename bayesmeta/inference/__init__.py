"""Meta-learners: one file per method, all implementing :class:`MetaLearner`."""

from bayesmeta.inference.base import MetaLearner, StepOutput, TaskPosterior
from bayesmeta.inference.dkt import DKT, DKTPosterior
from bayesmeta.inference.maml import MAML, MAMLPosterior
from bayesmeta.inference.protonet import ProtoNet, ProtoPosterior

__all__ = [
    "DKT",
    "DKTPosterior",
    "MAML", "MAMLPosterior", "MetaLearner", "ProtoNet", "ProtoPosterior", "StepOutput", "TaskPosterior"]
