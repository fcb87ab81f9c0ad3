"""Lazy re-exports for package ``__init__`` modules (PEP 562).

``import bayesmeta`` must stay cheap (issue 14: at most 0.1 s over ``import torch``): GPyTorch,
Pyro, ArviZ and matplotlib are imported only by the code that uses them. A package lists its
public names and the module that defines each; :func:`lazy_exports` returns the module-level
``__getattr__`` and ``__dir__`` that import the defining module on first access and cache the
attribute in the package namespace (later lookups are plain dictionary hits). Submodules
(``bayesmeta.metrics``) are imported on attribute access too, as they were reachable before.

The public API is unchanged: ``from bayesmeta import MAML``, ``bayesmeta.MAML``, ``__all__`` and
``dir(bayesmeta)`` behave as with eager imports. Packages also import the names under
``typing.TYPE_CHECKING`` so that type checkers and IDEs see explicit re-exports.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, namespace: dict[str, Any], exports: Mapping[str, str], public: Iterable[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for a package whose names live in its submodules.

    Args:
        package: the package's ``__name__`` (used in the ``AttributeError`` message).
        namespace: the package's ``globals()``; resolved names are cached there.
        exports: public name -> absolute name of the module defining it.
        public: the package's ``__all__``.

    Returns:
        The two functions to bind as the package's ``__getattr__`` and ``__dir__``.
    """
    names = sorted(set(public))

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is not None:
            value = getattr(importlib.import_module(module), name)
        elif not name.startswith("_") and importlib.util.find_spec(f"{package}.{name}") is not None:
            # a submodule (``bayesmeta.metrics``): attribute access worked when every
            # subpackage was imported eagerly, so it keeps working
            value = importlib.import_module(f"{package}.{name}")
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(names))

    return __getattr__, __dir__
