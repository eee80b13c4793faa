"""cnnzoo: the classic CNN lineage, faithful, composable and measurable.

``import cnnzoo`` gives the registry (``create_model``, ``list_models``, ``get_model_meta``...),
``save_weights``, and every public sub-package as an attribute: ``cnnzoo.analysis``,
``cnnzoo.data``, ``cnnzoo.export``, ``cnnzoo.features``, ``cnnzoo.interop``, ``cnnzoo.layers``,
``cnnzoo.models``, ``cnnzoo.predict``, ``cnnzoo.train``, ``cnnzoo.weights``. Each is imported on
first use (PEP 562), so that ``import cnnzoo`` itself, and with it ``cnnzoo --help`` and
``cnnzoo list``, does not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_REGISTRY_API = ("ModelMeta", "create_model", "get_model_meta", "list_models", "register_alias",
                 "register_model")
_WEIGHTS_API = ("save_weights",)
_SUBPACKAGES = ("analysis", "bench", "data", "export", "features", "interop", "layers", "models", "optimize",
                "predict", "studies", "train", "weights")

__all__ = [*_REGISTRY_API, *_WEIGHTS_API, "__version__"]

if TYPE_CHECKING:  # what the lazy attributes are, for type checkers and IDEs
    from . import (  # noqa: F401
        analysis,
        bench,
        data,
        export,
        features,
        interop,
        layers,
        models,
        optimize,
        predict,
        studies,
        train,
        weights,
    )
    from ._registry import (  # noqa: F401
        ModelMeta,
        create_model,
        get_model_meta,
        list_models,
        register_alias,
        register_model,
    )
    from .weights import save_weights  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _REGISTRY_API:
        value = getattr(importlib.import_module("._registry", __name__), name)
    elif name in _WEIGHTS_API:
        value = getattr(importlib.import_module(".weights", __name__), name)
    elif name in _SUBPACKAGES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later look-ups find it directly
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_REGISTRY_API, *_WEIGHTS_API, *_SUBPACKAGES})
