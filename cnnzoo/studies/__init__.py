"""Studies: each claim of the classic CNN papers as one experiment, with a table, plots and a verdict.

A study is data (:class:`Study`): the claim, the grid of configurations at each scale
(``smoke``: seconds on tiny data; ``cpu``: CIFAR-10 on a 2-core machine; ``paper``: the papers'
recipes, for a GPU), an optional analysis that needs no training, and a judge that turns the
results into a verdict. One shared runner (:func:`run_study`, :mod:`cnnzoo.studies.runner`)
trains the grid through :func:`cnnzoo.train.train` and writes ``results.json``, ``table.md`` and
PNGs. See docs/studies.md.

Reading the studies imports no torch (``cnnzoo study list`` and ``--help`` stay fast).
"""

from __future__ import annotations

from typing import Any

from ._study import (
    CONTRADICTED,
    NOT_VISIBLE,
    REPRODUCED,
    SCALES,
    VERDICTS,
    Cell,
    Diff,
    Part,
    Results,
    Scale,
    Study,
    Verdict,
    mean_std,
)

__all__ = ["CONTRADICTED", "NOT_VISIBLE", "REPRODUCED", "SCALES", "STUDIES", "VERDICTS", "Cell", "Diff",
           "Part", "Results", "Scale", "Study", "Verdict", "get_study", "mean_std", "run_study"]

_MODULES = ("degradation", "units", "shortcuts", "factorization", "heads", "se")


def _load() -> dict[str, Study]:
    import importlib

    studies = [importlib.import_module(f".{m}", __name__).STUDY for m in _MODULES]
    return {s.name: s for s in studies}


STUDIES: dict[str, Study] = _load()


def get_study(name: str) -> Study:
    """The study called ``name``; ``ValueError`` naming the studies otherwise."""
    if name not in STUDIES:
        raise ValueError(f"unknown study {name!r}; choose one of {', '.join(STUDIES)} "
                         "(see cnnzoo study list)")
    return STUDIES[name]


def run_study(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """See :func:`cnnzoo.studies.runner.run_study`."""
    from .runner import run_study as run

    return run(*args, **kwargs)
