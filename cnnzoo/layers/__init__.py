"""Bricks shared by the model families."""

from .classifier import HEAD_TYPES, ClassifierHead
from .conv_norm_act import ConvNormAct, NormActConv
from .create_act import get_act_layer
from .create_norm import get_norm_layer
from .drop import DropPath, Scale, drop_path_or_identity, scale_or_identity
from .squeeze_excite import SqueezeExcite, get_attn_layer

__all__ = [
    "HEAD_TYPES", "ClassifierHead", "ConvNormAct", "NormActConv", "get_act_layer", "get_norm_layer",
    "DropPath", "Scale", "drop_path_or_identity", "scale_or_identity", "SqueezeExcite",
    "get_attn_layer",
]
