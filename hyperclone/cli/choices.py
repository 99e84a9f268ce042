"""Typed choices of the command line, made from the wings' own lists, so every `--help` lists them and a wrong
value is refused by the parser with the list of right ones."""

from __future__ import annotations

from enum import Enum

from hyperclone.grow.options import DEPTH_MODES, DTYPE_CHOICES, MODES, TIE_CHOICES
from hyperclone.train.options import ATTENTION, DTYPES, LOG_SINKS, RESETS, SAVE_DTYPES, SCHEDULES, STRATEGIES


def _choices(name: str, values: tuple[str, ...]) -> type[Enum]:
    return Enum(name, [(v.replace("-", "_"), v) for v in values], type=str)


Mode = _choices("Mode", MODES)
Tie = _choices("Tie", TIE_CHOICES)
DepthMode = _choices("DepthMode", DEPTH_MODES)
GrowDtype = _choices("GrowDtype", DTYPE_CHOICES)
ConvertDtype = _choices("ConvertDtype", ("float32", "bfloat16", "float16"))
Schedule = _choices("Schedule", SCHEDULES)
TrainDtype = _choices("TrainDtype", DTYPES)
MomentsReset = _choices("MomentsReset", RESETS)
Method = _choices("Method", ("hyperclone", "msg"))
Strategy = _choices("Strategy", STRATEGIES)
Attention = _choices("Attention", ATTENTION)
SaveDtype = _choices("SaveDtype", SAVE_DTYPES)
LogSink = _choices("LogSink", LOG_SINKS)


def value(choice: Enum | str | None) -> str | None:
    """The plain string of a choice (typer passes enum members; the Python API takes strings)."""
    return choice.value if isinstance(choice, Enum) else choice
