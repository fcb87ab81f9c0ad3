"""Lazy imports (issue 14): ``import bayesmeta`` loads no heavy optional stack, the API is intact.

Behavioural checks in a fresh interpreter (``sys.modules`` after the import), never wall time.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import bayesmeta
import bayesmeta.inference

HEAVY = ("gpytorch", "linear_operator", "pyro", "arviz", "matplotlib", "pandas", "scipy", "sklearn")


def _loaded_after(code: str) -> list[str]:
    """Top-level packages of :data:`HEAVY` present in ``sys.modules`` after running ``code``."""
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "code",
    [
        "import bayesmeta",
        "import bayesmeta.inference",
        "from bayesmeta import MAML, MLP, Conv4, Sinusoid, ProtoNet, BMAML, PLATIPUS, TaskBatch",
        "from bayesmeta.inference import MAML, VERSA",
        "import bayesmeta.cli, bayesmeta.config, bayesmeta.report, bayesmeta.study, bayesmeta.diagnostics",
    ],
)
def test_import_does_not_load_optional_stacks(code: str) -> None:
    assert _loaded_after(code) == []


def test_dkt_loads_gpytorch_when_used() -> None:
    # the probe can fail: building a DKT must import GPyTorch (it is what makes the above meaningful)
    assert "gpytorch" not in _loaded_after("from bayesmeta import DKT")
    assert "gpytorch" in _loaded_after("from bayesmeta import DKT, MLP\nDKT(MLP(1, None))")


@pytest.mark.parametrize("package", [bayesmeta, bayesmeta.inference], ids=lambda p: p.__name__)
def test_every_public_name_resolves_and_is_listed(package) -> None:
    listed = dir(package)
    for name in package.__all__:
        assert name in listed, name
        obj = getattr(package, name)
        # the lazy attribute is the object its defining module holds (same identity)
        assert obj is getattr(sys.modules[obj.__module__], name), name
    assert len(set(package.__all__)) == len(package.__all__)


def test_unknown_attribute_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        bayesmeta.no_such_name  # noqa: B018
    with pytest.raises(ImportError):
        exec("from bayesmeta.inference import NoSuchLearner", {})


def test_star_import_gives_the_public_api() -> None:
    ns: dict[str, object] = {}
    exec("from bayesmeta import *", ns)
    assert set(bayesmeta.__all__) <= set(ns)


def test_submodules_stay_reachable_as_attributes() -> None:
    # eager imports used to make ``bayesmeta.metrics`` reachable after ``import bayesmeta``
    assert callable(bayesmeta.metrics.nll)
