"""Task containers, task families, episode samplers and bundled datasets."""

from bayesmeta.tasks.batch import SupportSet, TaskBatch

__all__ = ["SupportSet", "TaskBatch"]
