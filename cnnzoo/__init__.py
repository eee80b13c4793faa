"""cnnzoo: the classic CNN lineage, faithful, composable and measurable.

``import cnnzoo`` gives the registry (``create_model``, ``list_models``, ``get_model_meta``...) and
the sub-packages (``cnnzoo.analysis``, ``cnnzoo.models``, ``cnnzoo.train``...). Each is imported on
first use (PEP 562), so that ``import cnnzoo`` itself, and with it ``cnnzoo --help`` and
``cnnzoo list``, does not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_REGISTRY_API = ("ModelMeta", "create_model", "get_model_meta", "list_models", "register_alias",
                 "register_model")
_SUBPACKAGES = ("analysis", "data", "interop", "layers", "models", "train")

__all__ = [*_REGISTRY_API, "__version__"]

if TYPE_CHECKING:  # what the lazy attributes are, for type checkers and IDEs
    from . import analysis, data, interop, layers, models, train  # noqa: F401
    from ._registry import (  # noqa: F401
        ModelMeta,
        create_model,
        get_model_meta,
        list_models,
        register_alias,
        register_model,
    )


def __getattr__(name: str) -> Any:
    if name in _REGISTRY_API:
        value = getattr(importlib.import_module("._registry", __name__), name)
    elif name in _SUBPACKAGES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later look-ups find it directly
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_REGISTRY_API, *_SUBPACKAGES})
