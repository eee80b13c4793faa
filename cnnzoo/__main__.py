"""``python -m cnnzoo`` is the ``cnnzoo`` command (and what ``torchrun -m cnnzoo`` runs)."""

import sys

from .cli import main

sys.exit(main())
