"""Sub-commands of the ``cnnzoo`` CLI (thin: argument parsing and calls into the library)."""
