"""What every cnnzoo model offers, whatever its family."""

from __future__ import annotations

import torch
import torch.nn as nn


class ZooModel(nn.Module):
    """Base of every family: ``forward = forward_head(forward_features(x))``.

    Subclasses build ``self.head`` (a :class:`~cnnzoo.layers.ClassifierHead`) and implement
    ``forward_features`` (input -> last feature map, after any final norm/activation).
    """

    head: nn.Module
    num_classes: int

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int) -> None:
        """New final linear layer for ``num_classes`` classes (0: return pooled features)."""
        self.head.reset(num_classes)
        self.num_classes = num_classes


def count_params(model: nn.Module, scope: str = "all") -> int:
    """Parameters of ``model``: ``"all"``, or only conv/linear ``"weights"`` (and their biases)."""
    if scope == "all":
        return sum(p.numel() for p in model.parameters())
    if scope == "weights":
        return sum(p.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))
                   for p in m.parameters(recurse=False))
    raise ValueError(f"scope must be 'all' or 'weights', got {scope!r}")


def init_weights(model: nn.Module) -> None:
    """He (fan-out) init for convs, unit/zero affine norms, small-normal linear layers."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d)) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
