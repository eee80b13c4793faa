"""Model families; importing this registers every model."""

from . import resnet  # noqa: F401
from . import googlenet  # noqa: F401
