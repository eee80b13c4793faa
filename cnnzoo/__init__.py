"""cnnzoo: the classic CNN lineage, faithful, composable and measurable.

``import cnnzoo`` builds, analyses and loads models; training code is imported only on demand.
"""

from . import analysis, models  # noqa: F401  (models: registers every model)
from ._registry import ModelMeta, create_model, get_model_meta, list_models, register_alias, register_model

__version__ = "0.1.0"

__all__ = [
    "ModelMeta", "create_model", "get_model_meta", "list_models", "register_alias", "register_model",
    "__version__",
]
