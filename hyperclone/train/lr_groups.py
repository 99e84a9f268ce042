"""Per-group learning rates (issue 25, item 5): ``--lr-scale GLOB=MULT`` trains every parameter whose name
matches the glob (fnmatch, e.g. ``*proj.weight``: the attention and MLP matrices of llama-like families) at MULT
times the schedule's learning rate. The first matching rule wins; unmatched parameters keep 1x. This is how a
mu-P-style width rule is written (hidden matrices at base width / width, embeddings and norms at 1x), or a
lower peak for some blocks than others.

The AdamW parameter groups are split by weight decay (matrices decay, vectors do not) and by multiplier; each
group carries its ``lr_scale``, and the training loop sets the group's lr to ``lr_scale x`` the schedule's at
every step, so the schedule's shape (warmup, decay) applies to every group alike."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase
from typing import Any

from hyperclone.common.errors import HyperCloneError

Rule = tuple[str, float]


def parse_lr_scale(specs: Iterable[str]) -> tuple[Rule, ...]:
    """'GLOB=MULT' strings to (glob, multiplier) rules, in order; a malformed one is a one-line error."""
    rules = []
    for spec in specs:
        glob, sep, value = str(spec).rpartition("=")
        try:
            mult = float(value)
        except ValueError:
            mult = float("nan")
        if not sep or not glob or not mult > 0 or mult == float("inf"):
            raise HyperCloneError(f"--lr-scale takes GLOB=MULT with a positive multiplier (e.g. '*proj.weight=0.5'), "
                                  f"got {spec!r}")
        rules.append((glob, mult))
    return tuple(rules)


def scale_of(name: str, rules: Sequence[Rule]) -> float:
    """The learning-rate multiplier of the parameter `name`: the first rule whose glob matches it, else 1."""
    return next((mult for glob, mult in rules if fnmatchcase(name, glob)), 1.0)


def param_groups(model, weight_decay: float, rules: Sequence[Rule] = ()) -> list[dict[str, Any]]:
    """AdamW's parameter groups: by decay (>= 2-D parameters) and by learning-rate multiplier, in a fixed order
    (so a resumed optimizer's groups line up). A rule that matches no trainable parameter is refused: it is
    almost always a misspelt name."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    for glob, _ in rules:
        if not any(fnmatchcase(n, glob) for n, _ in named):
            raise HyperCloneError(f"--lr-scale {glob!r} matches no parameter of the model (names look like "
                                  f"{named[0][0] if named else 'none'})")
    groups: dict[tuple[bool, float], list] = {}
    for name, p in named:
        groups.setdefault((p.ndim >= 2, scale_of(name, rules)), []).append(p)
    order = sorted(groups, key=lambda key: (not key[0], key[1]))
    return [{"params": groups[key], "weight_decay": weight_decay if key[0] else 0.0, "lr_scale": key[1]}
            for key in order]
