"""Diagnostics: the ArviZ bridge (InferenceData export, summaries, LOO, PPC plots).

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

__all__ = [
    "to_inference_data",
    "save_inference_data",
    "load_inference_data",
    "posterior_summary",
    "loo",
    "plot_ppc",
]
