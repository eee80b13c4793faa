"""Model families; importing this registers every model."""

from . import densenet, googlenet, resnet, vgg  # noqa: F401
