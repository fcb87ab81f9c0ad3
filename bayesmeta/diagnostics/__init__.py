"""Diagnostics: the ArviZ bridge (InferenceData export, summaries, LOO, PPC plots) and reference
posteriors (exact and NUTS) to score a learner's predictive against.

Every ArviZ call of the library lives in this subpackage; ArviZ itself is imported lazily.
"""

from bayesmeta.diagnostics.arviz_export import (
    load_inference_data,
    loo,
    plot_ppc,
    posterior_summary,
    save_inference_data,
    to_inference_data,
)
from bayesmeta.diagnostics.reference import (
    NUTSPosterior,
    exact_reference,
    gaussian_kl,
    gaussian_w2,
    nuts_posterior,
    score_against_reference,
)

__all__ = [
    "NUTSPosterior",
    "exact_reference",
    "gaussian_kl",
    "gaussian_w2",
    "nuts_posterior",
    "score_against_reference",
    "to_inference_data",
    "save_inference_data",
    "load_inference_data",
    "posterior_summary",
    "loo",
    "plot_ppc",
]
