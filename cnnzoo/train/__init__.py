"""Training and evaluation (imported on demand: ``import cnnzoo`` does not load it).

``train(resolve_config({"model": "resnet20", "data": "digits"}))`` runs a recipe and writes a
run folder; ``evaluate_checkpoint(run_dir)`` measures it again. See docs/training.md.
"""

from .checkpoint import CheckpointError, load_checkpoint
from .config import RECIPES, Recipe, TrainConfig, get_recipe, load_yaml, lr_factor, resolve_config
from .engine import Trainer, TrainingDiverged, compute_loss, train
from .evaluate import EvalResult, evaluate, evaluate_checkpoint, plot_confusion

__all__ = [
    "CheckpointError", "load_checkpoint", "RECIPES", "Recipe", "TrainConfig", "get_recipe", "load_yaml",
    "lr_factor", "resolve_config", "Trainer", "TrainingDiverged", "compute_loss", "train", "EvalResult",
    "evaluate", "evaluate_checkpoint", "plot_confusion",
]
