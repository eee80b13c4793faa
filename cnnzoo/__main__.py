"""``python -m cnnzoo`` is the ``cnnzoo`` command (and what ``torchrun -m cnnzoo`` runs)."""

import sys

try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C before main() can handle it: one line, as everywhere else
    print("cnnzoo: interrupted", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
