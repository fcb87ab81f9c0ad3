"""Task containers, task families, episode samplers and bundled datasets."""

from bayesmeta.tasks.batch import SupportSet, TaskBatch
from bayesmeta.tasks.clinical import PREVALENCE_MODES, ClinicalSampler, prevalence_counts
from bayesmeta.tasks.datasets import OMNIGLOT_SPLITS, LabelledDataset, omniglot, omniglot_splits
from bayesmeta.tasks.episodes import TaskSource, concat_tasks, fixed_episodes, iter_episodes
from bayesmeta.tasks.gp_curves import GPCurves
from bayesmeta.tasks.medical import (
    MEDICAL_SPLITS,
    MEDMNIST_BUNDLED,
    MEDNIST_CLASSES,
    check_backbone_input,
    conform,
    from_torch_dataset,
    image_folder,
    medmnist,
    mednist,
    npz_dataset,
)
from bayesmeta.tasks.regression import LinearGaussian, Sinusoid, SinusoidParams
from bayesmeta.tasks.sampler import EpisodeIndices, FewShotSampler

__all__ = [
    "SupportSet",
    "TaskBatch",
    "Sinusoid",
    "SinusoidParams",
    "LinearGaussian",
    "LabelledDataset",
    "FewShotSampler",
    "EpisodeIndices",
    "omniglot",
    "omniglot_splits",
    "OMNIGLOT_SPLITS",
    "TaskSource",
    "fixed_episodes",
    "iter_episodes",
    "concat_tasks",
    "GPCurves",
    # medical imaging
    "medmnist",
    "mednist",
    "npz_dataset",
    "image_folder",
    "from_torch_dataset",
    "conform",
    "check_backbone_input",
    "MEDMNIST_BUNDLED",
    "MEDNIST_CLASSES",
    "MEDICAL_SPLITS",
    "ClinicalSampler",
    "PREVALENCE_MODES",
    "prevalence_counts",
]
