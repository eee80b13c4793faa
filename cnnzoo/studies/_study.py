"""What a study is (plain data, no torch) and how a claim is judged from its results.

A :class:`Study` names a claim of a paper, the grid of training runs that tests it at each
:class:`Scale` (one :class:`Cell` per configuration, run once per seed), an optional analysis
computed without training, and a ``judge``: a function of the results that returns a
:class:`Verdict`. The shared runner (:mod:`cnnzoo.studies.runner`) does the rest.

Judging rule, the same for every study: two configurations differ only when their mean errors
over seeds differ by more than the larger of their two standard deviations (sample std,
``ddof=1``). With one seed the spread is unknown, so no trained difference counts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

REPRODUCED = "reproduced"
NOT_VISIBLE = "not visible at this scale"
CONTRADICTED = "contradicted"
VERDICTS = (REPRODUCED, NOT_VISIBLE, CONTRADICTED)
SCALES = ("smoke", "cpu", "paper")


@dataclass(frozen=True)
class Cell:
    """One configuration of a study's grid, trained once per seed.

    ``model`` and ``opts`` go to ``cnnzoo.create_model`` (through the training config, so they
    must be plain values); ``train`` overrides the scale's training values for this cell only.
    ``build(opts, num_classes, in_chans)`` builds the model instead, for a network the registry
    cannot make from plain options; ``model`` and ``opts`` still describe it in every record.
    """

    name: str
    model: str
    opts: Mapping[str, Any] = field(default_factory=dict)
    note: str = ""
    train: Mapping[str, Any] = field(default_factory=dict)
    build: Callable[..., Any] | None = None

    def describe(self) -> str:
        """``resnet20 unit=preact`` (the model and its options, as ``--opt`` would give them)."""
        opts = " ".join(f"{k}={_short(v)}" for k, v in self.opts.items())
        return f"{self.model} {opts}".strip()


def _short(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        text = ",".join(_short(x) for x in v)
        return text if len(text) <= 40 else f"[{len(v)} entries]"
    if isinstance(v, Mapping):
        return "{" + ",".join(f"{k}:{_short(x)}" for k, x in v.items()) + "}"
    return f"{v:g}" if isinstance(v, float) else str(v)


@dataclass(frozen=True)
class Scale:
    """A study's grid at one scale: the cells, the training values they share (``TrainConfig``
    keys: length, batch, subset, image size, recipe...), the default seeds and data.

    ``data`` ``None`` means the user must give ``--data`` (a dataset cnnzoo cannot assume is there).
    """

    cells: tuple[Cell, ...]
    train: Mapping[str, Any]
    about: str
    seeds: int = 1
    data: str | None = None


@dataclass(frozen=True)
class Part:
    """One checked statement of a claim: its verdict and the numbers behind it."""

    claim: str
    verdict: str
    numbers: str

    def to_dict(self) -> dict[str, str]:
        return {"claim": self.claim, "verdict": self.verdict, "numbers": self.numbers}


@dataclass(frozen=True)
class Verdict:
    """The study's verdict: contradicted if any part is, reproduced if every part is, else not
    visible at this scale."""

    parts: tuple[Part, ...]

    @property
    def verdict(self) -> str:
        found = {p.verdict for p in self.parts}
        if CONTRADICTED in found:
            return CONTRADICTED
        if found == {REPRODUCED}:
            return REPRODUCED
        return NOT_VISIBLE

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "parts": [p.to_dict() for p in self.parts]}


@dataclass(frozen=True)
class Study:
    """A claim as data. ``analyze(scale) -> dict`` (optional) measures models without training;
    its ``"tables"`` (``[{"title", "header", "rows"}]``) are printed in ``table.md``.
    ``plots`` are functions ``(results, out_dir) -> Path`` drawn after the shared error chart."""

    name: str
    title: str
    claim: str
    source: str
    paper: tuple[str, ...]
    scales: Mapping[str, Scale]
    judge: Callable[[Results], Verdict]
    analyze: Callable[[Scale], dict[str, Any]] | None = None
    plots: tuple[Callable[..., Any], ...] = ()
    notes: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------------
# Results and how two configurations are compared.


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (``None`` below two values)."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))


def pct(mean: float | None, std: float | None = None) -> str:
    """An error fraction in percent: ``12.34%`` or ``12.34 +- 0.56%``."""
    if mean is None:
        return "n/a"
    return f"{100 * mean:.2f}%" if std is None else f"{100 * mean:.2f} +- {100 * std:.2f}%"


class Results:
    """A study's cell records (``results.json``'s ``cells``) and analysis, by configuration."""

    def __init__(self, cells: Sequence[Mapping[str, Any]], analysis: Mapping[str, Any] | None = None):
        self.cells = list(cells)
        self.analysis = dict(analysis or {})

    def names(self) -> list[str]:
        return list(dict.fromkeys(c["cell"] for c in self.cells))

    def values(self, name: str, metric: str) -> list[float]:
        """``metric`` (e.g. ``test_error``) of configuration ``name``, one value per seed."""
        return [c[metric] for c in self.cells if c["cell"] == name and c.get(metric) is not None]

    def first(self, name: str, key: str) -> Any:
        return next((c[key] for c in self.cells if c["cell"] == name), None)


@dataclass(frozen=True)
class Diff:
    """``a`` against ``b`` on one metric over seeds: ``delta`` = mean(a) - mean(b)."""

    a: str
    b: str
    metric: str
    mean_a: float | None
    std_a: float | None
    mean_b: float | None
    std_b: float | None

    @classmethod
    def of(cls, results: Results, a: str, b: str, metric: str = "test_error") -> Diff:
        return cls(a, b, metric, *mean_std(results.values(a, metric)), *mean_std(results.values(b, metric)))

    @property
    def delta(self) -> float | None:
        return None if self.mean_a is None or self.mean_b is None else self.mean_a - self.mean_b

    @property
    def spread(self) -> float | None:
        """The larger standard deviation; ``None`` when either side has fewer than two seeds."""
        return None if self.std_a is None or self.std_b is None else max(self.std_a, self.std_b)

    def sign(self) -> int | None:
        """+1 (a above b) or -1 (a below b) when the difference exceeds one std, 0 when it does
        not, ``None`` when the spread is unknown (fewer than two seeds)."""
        if self.delta is None or self.spread is None:
            return None
        if abs(self.delta) <= self.spread:
            return 0
        return 1 if self.delta > 0 else -1

    def __str__(self) -> str:
        what = self.metric.replace("_", " ")
        if self.delta is None:
            return f"{what}: {self.a} or {self.b} has no result"
        return (f"{what} {self.a} {pct(self.mean_a, self.std_a)} vs {self.b} {pct(self.mean_b, self.std_b)}: "
                f"{100 * self.delta:+.2f} points")


def expect(claim: str, diff: Diff, higher: bool) -> Part:
    """A part saying ``diff.a`` has a higher (``higher=True``) or lower metric than ``diff.b``."""
    sign = diff.sign()
    numbers = str(diff)
    if sign is None:
        return Part(claim, NOT_VISIBLE, numbers + " (fewer than two seeds: the spread is unknown)")
    if sign == 0:
        return Part(claim, NOT_VISIBLE, numbers + " (within one std: no difference)")
    return Part(claim, REPRODUCED if (sign > 0) == higher else CONTRADICTED, numbers)


def no_worse(claim: str, diff: Diff) -> Part:
    """A part saying ``diff.a`` is not worse than ``diff.b``: a difference within one std is none."""
    sign = diff.sign()
    numbers = str(diff)
    if sign is None:
        return Part(claim, NOT_VISIBLE, numbers + " (fewer than two seeds: the spread is unknown)")
    if sign > 0:
        return Part(claim, CONTRADICTED, numbers)
    return Part(claim, REPRODUCED, numbers + (" (within one std: no difference)" if sign == 0 else ""))


def exact(claim: str, holds: bool, numbers: str) -> Part:
    """A part about a deterministic measurement (parameters, multiply-adds): it holds or not."""
    return Part(claim, REPRODUCED if holds else CONTRADICTED, numbers)
