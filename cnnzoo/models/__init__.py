"""Model families; importing this registers every model."""

from . import resnet  # noqa: F401
