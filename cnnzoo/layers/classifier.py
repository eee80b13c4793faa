"""Classifier heads: global pooling + linear ("gap") or VGG's FC stack ("fc")."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
import torch.nn as nn

from .create_act import get_act_layer

HEAD_TYPES = ("gap", "fc")


class ClassifierHead(nn.Module):
    """The head every cnnzoo model ends with.

    ``head="gap"``: global average pool -> dropout(``drop_rate``) -> linear
    (GoogLeNet, ResNet, DenseNet).
    ``head="fc"``: adaptive average pool to ``fc_pool`` x ``fc_pool`` -> flatten ->
    [linear ``fc_hidden`` -> act -> dropout(``fc_dropout``)] x 2 -> dropout(``drop_rate``) -> linear
    (VGG; 4096 hidden units, pool 7, dropout 0.5 in the paper).

    ``forward(x, pre_logits=True)`` stops before the final linear layer ``fc``.
    """

    def __init__(self, in_chs: int, num_classes: int, head: str = "gap", drop_rate: float = 0.0,
                 fc_hidden: int = 4096, fc_pool: int = 7, fc_dropout: float = 0.5,
                 act_layer: Callable[[], nn.Module] | str = "relu"):
        super().__init__()
        if head not in HEAD_TYPES:
            raise ValueError(f"head={head!r} is not allowed; choose one of {list(HEAD_TYPES)}")
        if not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be a non-negative int, got {num_classes!r}")
        from ..models._builder import check_rate  # here: cnnzoo.models imports cnnzoo.layers

        check_rate("drop_rate", drop_rate)
        self.head_type = head
        act = get_act_layer(act_layer)
        if head == "gap":
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.pre_logits = nn.Flatten(1)
            self.num_features = in_chs
        else:
            for n, v in (("fc_hidden", fc_hidden), ("fc_pool", fc_pool)):
                if not isinstance(v, int) or v <= 0:
                    raise ValueError(f"{n} must be a positive int, got {v!r}")
            self.pool = nn.AdaptiveAvgPool2d(fc_pool)
            self.pre_logits = nn.Sequential(OrderedDict(
                flatten=nn.Flatten(1),
                fc1=nn.Linear(in_chs * fc_pool * fc_pool, fc_hidden),
                act1=act(),
                drop1=nn.Dropout(fc_dropout),
                fc2=nn.Linear(fc_hidden, fc_hidden),
                act2=act(),
                drop2=nn.Dropout(fc_dropout),
            ))
            self.num_features = fc_hidden
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.fc = self._make_fc(num_classes)

    def _make_fc(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes: int) -> None:
        """Replace the final linear layer (``num_classes=0`` leaves the pooled features)."""
        self.fc = self._make_fc(num_classes)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pre_logits(self.pool(x))
        if pre_logits:
            return x
        return self.fc(self.drop(x))
