"""Training and evaluation (imported on demand: ``import cnnzoo`` does not load it).

``train(resolve_config({"model": "resnet20", "data": "digits"}))`` runs a recipe and writes a
run folder; ``evaluate_checkpoint(run_dir)`` measures it again. See docs/training.md.

The names below load their modules on first use (PEP 562), so that reading the recipes
(``cnnzoo.train.config``, plain Python) does not import torch: ``cnnzoo train --help`` stays fast.
"""

import importlib

_EXPORTS = {
    "CheckpointError": "checkpoint", "load_checkpoint": "checkpoint",
    "RECIPES": "config", "Recipe": "config", "TrainConfig": "config", "get_recipe": "config",
    "load_yaml": "config", "lr_factor": "config", "resolve_config": "config",
    "Trainer": "engine", "TrainingDiverged": "engine", "compute_loss": "engine", "train": "engine",
    "EvalResult": "evaluate", "evaluate": "evaluate", "evaluate_checkpoint": "evaluate",
    "plot_confusion": "evaluate",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # Importing the torch modules also binds the submodule ``evaluate`` as an attribute of this
    # package; binding every exported name afterwards makes ``evaluate`` the function again.
    modules = ("config",) if _EXPORTS[name] == "config" else ("checkpoint", "engine", "evaluate", "config")
    for module in modules:
        mod = importlib.import_module(f".{module}", __name__)
        globals().update({n: getattr(mod, n) for n, m in _EXPORTS.items() if m == module})
    return globals()[name]


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
