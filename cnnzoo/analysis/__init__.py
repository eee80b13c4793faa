"""Measuring models: parameters, multiply-adds, receptive fields, factorization, latency.

* :func:`profile` - params, MACs (FLOPs = 2 x MACs), other ops, activation memory, receptive
  field and effective stride, per layer and per stage.
* :func:`receptive_field` - the theoretical field of any layer of any model (multi-branch too).
* :func:`factorize` - replace stride-1 5x5 / 7x7 convs by stacks of 3x3 convs.
* :func:`measure_latency` - median wall-clock time of a forward pass.
"""

from .factorize import FactorizeReport, factorize, factorized_stack
from .latency import Latency, measure_latency
from .profile import LayerRow, ProfileResult, profile
from .receptive_field import GLOBAL, RF, receptive_field, rf_of_stack

__all__ = [
    "FactorizeReport", "GLOBAL", "RF", "LayerRow", "Latency", "ProfileResult", "factorize",
    "factorized_stack", "measure_latency", "profile", "receptive_field", "rf_of_stack",
]
