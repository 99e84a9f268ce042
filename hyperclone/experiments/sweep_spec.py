"""Sweep files: a small YAML or JSON description of the arms `hyperclone experiment --sweep` runs.

```yaml
preset: cpu-tiny          # the corpus, tokenizer, small model, token budget and batch shape
seeds: [0]                # default seeds of every arm
arms:
  - name: random          # random init of the grown shape; `lr` as a list expands into one arm per value
    init: random
    lr: [1e-3, 2e-3, 4e-3]
  - name: noisy-0db       # grown from the small model with hyperclone.grow.engine options
    init: grown
    grow: {mode: noisy, noise_db: 0}
    lr: 1e-3
    seeds: [0, 1]
  - name: carry
    init: grown
    moments: carry        # fresh (default) | carry: the small model's AdamW moments, grown
    moments_reset: first  # none | first (zero the carried first moment)
    warmup: 0.0           # also: schedule (cosine|wsd), decay_frac, min_lr_ratio, tokens, width
  - name: better-small    # grown from a small model pretrained for 4x the preset's budget (trained once,
    init: grown           # in DIR/runs/small-<tokens>-s0, and charged to this arm's "incl. small")
    small_tokens: 3200000
  - name: public-small    # grown from a small model pretrained on another corpus that the experiment's never
    init: grown           # repeats (a public model, trained on other text): small-<tokens>-site-packages-s0
    small_tokens: 12800000
    small_corpus: site-packages
  - name: stable-small    # grown from the preset's small model trained without the learning-rate decay (its
    init: grown           # peak to the end: the stable-phase checkpoint a WSD run would decay from), in
    small_decay: false    # DIR/runs/small-nodecay-s0 (with small_tokens: small-<tokens>-nodecay-s0)
  - name: mix             # not function-preserving on purpose: 20% of a fresh init mixed into every matrix
    init: grown
    grow: {mode: noisy, noise_db: 0, perturb: "mix:0.2"}
  - name: kd              # distillation anchor toward the small model it grew from (train --teacher)
    init: grown
    kd: {alpha: 0.5, until: 0.3}
  - name: sparkling       # asymmetric continuation: copy block 0 keeps the carried moments, the other copies
    init: grown           # start from zero moments and re-warm to 1.3x the learning rate over 2% of the steps
    moments: carry
    moments_reset: copies
    copies: {lr: 1.3, warmup: 0.02}
  - name: stack           # final shape: width x2 and 8 layers, new layers as copies of the stack (G_stack)
    init: grown
    layers: 8
    grow: {mode: noisy, noise_db: 0, depth_mode: stack}
  - name: msg             # Masked Structural Growth to the same shape (hyperclone.baselines.msg), masks ramped
    init: msg             # over the first ramp_frac of the run; depth_start_frac > 0 grows depth as a later stage
    layers: 8
    msg: {ramp_frac: 0.1, depth_start_frac: 0}
  - name: mup-like        # per-group learning rates (train --lr-scale), any init: the first matching glob sets
    init: random          # a parameter's multiplier of the schedule's rate, the rest stay at 1x
    lr_scale: {"*proj.weight": 0.5}
```

Every error is one line naming the file and the arm.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from hyperclone.common.errors import HyperCloneError
from hyperclone.experiments.corpora import PUBLIC_CORPORA
from hyperclone.grow.options import DEPTH_MODES
from hyperclone.grow.perturb import parse_perturbation
from hyperclone.grow.plan import MODES
from hyperclone.train.config import default as train_default
from hyperclone.train.moments import RESETS
from hyperclone.train.options import SCHEDULES

TOP_KEYS = ("preset", "seeds", "arms", "compare", "report")
# how a sweep's grown arms are compared with random init: with the sweep's best random arm of their shape, read
# off both runs' curves (sweep.md), or on a budget ladder's random frontier, the sweep run in the ladder's own
# folder (search.md: budget-matched like the ladder itself; hyperclone.experiments.ladder_search)
COMPARE = ("best-random", "ladder")
ARM_KEYS = ("name", "init", "lr", "seeds", "width", "layers", "tokens", "warmup", "schedule", "decay_frac",
            "min_lr_ratio", "grow", "msg", "moments", "moments_reset", "small_tokens",
            "small_decay", "small_corpus", "kd", "copies", "lr_scale")
GROW_KEYS = ("mode", "noise_db", "seed", "tie", "ffn", "depth_mode", "experts", "top_k", "perturb")
COPIES_KEYS = ("lr", "warmup")  # asymmetric continuation: the copies' LR multiplier and its rise (train --copies-lr)
KD_KEYS = ("alpha", "until")  # the distillation anchor toward the arm's own small model (train --teacher)
MOE_KEYS = ("experts", "top_k")  # the only grow keys of a random arm: the mixture-of-experts shape it starts at
MSG_KEYS = ("ramp_frac", "depth_start_frac")
INITS = ("grown", "random", "msg")


class SmallModel(NamedTuple):
    """Which small model an arm grows from: its pretraining budget (None: the preset's), whether its learning
    rate decays, and the corpus it was pretrained on (None: the experiment's own; else a name in PUBLIC_CORPORA)."""

    tokens: int | None = None
    decay: bool = True
    corpus: str | None = None


PRESET_SMALL = SmallModel()  # the preset's own small model


@dataclass(frozen=True)
class SweepArm:
    name: str
    init: str  # grown | random | msg
    lr: float
    seeds: tuple[int, ...]
    width: int | None = None  # None: the preset's
    layers: int | None = None  # final number of layers; None: the small model's
    tokens: int | None = None  # None: the preset's
    warmup: float | None = None  # None: the preset's
    schedule: str | None = None
    decay_frac: float = train_default("decay_frac")
    min_lr_ratio: float = train_default("min_lr_ratio")
    grow: dict[str, Any] = field(default_factory=dict)
    msg: dict[str, Any] = field(default_factory=dict)  # init msg: ramp_frac, depth_start_frac
    moments: str = "fresh"
    moments_reset: str = "none"
    small_tokens: int | None = None  # the small model's pretraining budget (grown, msg); None: the preset's
    small_decay: bool = True  # False: the small model keeps its peak learning rate to the end (no decay)
    small_corpus: str | None = None  # the small model pretrained on this public corpus instead of the experiment's
    kd: dict[str, Any] = field(default_factory=dict)  # alpha, until: distil from the small model it grew from
    copies: dict[str, Any] = field(default_factory=dict)  # lr (rho), warmup: asymmetric continuation
    lr_scale: dict[str, float] = field(default_factory=dict)  # glob -> LR multiplier (train --lr-scale)

    @property
    def small_model(self) -> SmallModel:
        """The small model the arm grows from; PRESET_SMALL is the preset's own."""
        return SmallModel(self.small_tokens, self.small_decay, self.small_corpus)

    def as_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))


@dataclass(frozen=True)
class Sweep:
    preset: str
    arms: tuple[SweepArm, ...]
    compare: str = "best-random"  # one of COMPARE
    report: str = "search"  # compare: ladder: the report's file stem (search.md, search.json, search_*.png)


def load_sweep(path: str | Path) -> Sweep:
    """Read and check a sweep file; raise a one-line HyperCloneError on anything wrong."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise HyperCloneError(f"cannot read the sweep file {path}: {err.strerror}") from None
    try:
        if path.suffix == ".json":
            raw = json.loads(text)
        else:
            import yaml

            raw = yaml.safe_load(text)
    except Exception as err:  # noqa: BLE001 - yaml and json raise many kinds; all mean "not parseable"
        raise HyperCloneError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: "
                              f"{str(err).splitlines()[0]}") from None
    return parse_sweep(raw, str(path))


def _fail(where: str, msg: str) -> None:
    raise HyperCloneError(f"{where}: {msg}")


def _unknown(where: str, got: dict[str, Any], allowed: tuple[str, ...]) -> None:
    bad = [k for k in got if k not in allowed]
    if bad:
        _fail(where, f"unknown key {bad[0]!r} (allowed: {', '.join(allowed)})")


def _number(where: str, key: str, value: Any, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (positive and value <= 0):
        _fail(where, f"{key} must be a {'positive ' if positive else ''}number, got {value!r}")
    return float(value)


def _options(here: str, arm: dict[str, Any], key: str, allowed: tuple[str, ...], not_mapping: str, init: str,
             wrong_init: str) -> dict[str, Any]:
    """An arm's nested options (msg, kd, copies): a mapping of known keys, on arms of `init` only."""
    opts = arm.get(key, {}) or {}
    if not isinstance(opts, dict):
        _fail(here, not_mapping)
    _unknown(f"{here}: {key}", opts, allowed)
    if opts and arm["init"] != init:
        _fail(here, wrong_init)
    return opts


def _lr_scale(here: str, value: Any) -> dict[str, float]:
    """An arm's per-group learning rates: a mapping of parameter-name globs to positive multipliers."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        _fail(here, "lr_scale must be a mapping of parameter-name globs to multipliers, e.g. {'*proj.weight': 0.5}")
    return {glob: _number(here, f"lr_scale[{glob!r}]", mult) for glob, mult in value.items()}


def _seeds(where: str, value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(s, int) and not isinstance(s, bool)
                                                             for s in value):
        _fail(where, f"seeds must be a non-empty list of integers, got {value!r}")
    return tuple(value)


def _positive_int(here: str, key: str, value: Any) -> int | None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        _fail(here, f"{key} must be a positive integer, got {value!r}")
    return value


def _arm_grow(here: str, a: dict[str, Any]) -> dict[str, Any]:
    """The arm's grow options (hyperclone.grow.engine's), checked; a random arm takes only its MoE shape."""
    grow_opts = a.get("grow", {}) or {}
    if not isinstance(grow_opts, dict):
        _fail(here, "grow must be a mapping of grow options")
    _unknown(f"{here}: grow", grow_opts, GROW_KEYS)
    shape_only = a["init"] == "random" and set(grow_opts) <= set(MOE_KEYS)
    if a["init"] != "grown" and ((grow_opts and not shape_only) or a.get("moments", "fresh") != "fresh"):
        _fail(here, "grow and moments only apply to init: grown (a random arm takes grow: {experts, top_k}, "
                    "its mixture-of-experts shape)")
    for key in MOE_KEYS:
        if key in grow_opts:
            _positive_int(here, f"grow.{key}", grow_opts[key])
    if "top_k" in grow_opts and "experts" not in grow_opts:
        _fail(here, "grow.top_k needs grow.experts")
    if grow_opts.get("depth_mode", "identity") not in DEPTH_MODES:
        _fail(here, f"grow.depth_mode must be one of {', '.join(DEPTH_MODES)}, got {grow_opts['depth_mode']!r}")
    if grow_opts.get("mode", "symmetric") not in MODES:
        _fail(here, f"grow.mode must be one of {', '.join(MODES)}, got {grow_opts.get('mode')!r}")
    if "noise_db" in grow_opts:
        _number(here, "grow.noise_db", grow_opts["noise_db"], positive=False)
    if "perturb" in grow_opts:
        try:
            parse_perturbation(grow_opts["perturb"])
        except HyperCloneError as err:
            _fail(here, f"grow.perturb: {err}")
    return dict(grow_opts)


def _arm_msg(here: str, a: dict[str, Any]) -> dict[str, Any]:
    msg_opts = _options(here, a, "msg", MSG_KEYS, "msg must be a mapping of MSG options", "msg",
                        "msg options only apply to init: msg")
    if "ramp_frac" in msg_opts and not 0 < _number(here, "msg.ramp_frac", msg_opts["ramp_frac"]) <= 1:
        _fail(here, f"msg.ramp_frac must be in (0, 1], got {msg_opts['ramp_frac']!r}")
    if "depth_start_frac" in msg_opts and not 0 <= _number(
            here, "msg.depth_start_frac", msg_opts["depth_start_frac"], positive=False) < 1:
        _fail(here, f"msg.depth_start_frac must be in [0, 1), got {msg_opts['depth_start_frac']!r}")
    return dict(msg_opts)


def _arm_moments(here: str, a: dict[str, Any]) -> tuple[str, str]:
    """(moments, moments_reset): whether the small model's AdamW moments are carried, and which are zeroed."""
    if a.get("moments", "fresh") not in ("fresh", "carry"):
        _fail(here, f"moments must be fresh or carry, got {a.get('moments')!r}")
    if a.get("moments_reset", "none") not in RESETS:
        _fail(here, f"moments_reset must be one of {', '.join(RESETS)}, got {a.get('moments_reset')!r}")
    if a.get("moments_reset", "none") != "none" and a.get("moments") != "carry":
        _fail(here, "moments_reset needs moments: carry")
    return a.get("moments", "fresh"), a.get("moments_reset", "none")


def _arm_small_model(here: str, a: dict[str, Any]) -> tuple[int | None, bool, str | None]:
    """(small_tokens, small_decay, small_corpus): which small model a grown or MSG arm starts from."""
    small_tokens = a.get("small_tokens")
    if small_tokens is not None:
        if a["init"] == "random":
            _fail(here, "small_tokens (the small model's budget) only applies to init: grown or msg")
        small_tokens = int(_number(here, "small_tokens", small_tokens))
    small_decay = a.get("small_decay", True)
    if not isinstance(small_decay, bool):
        _fail(here, f"small_decay must be true or false, got {small_decay!r}")
    if not small_decay and a["init"] == "random":
        _fail(here, "small_decay (the small model's schedule) only applies to init: grown or msg")
    small_corpus = a.get("small_corpus")
    if small_corpus is not None:
        if a["init"] == "random":
            _fail(here, "small_corpus (the small model's corpus) only applies to init: grown or msg")
        if small_corpus not in PUBLIC_CORPORA:
            _fail(here, f"small_corpus must be one of {', '.join(PUBLIC_CORPORA)}, got {small_corpus!r}")
    return small_tokens, small_decay, small_corpus


def _arm_kd_copies(here: str, a: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(kd, copies): the distillation anchor's and asymmetric continuation's options of a grown arm."""
    kd_opts = _options(here, a, "kd", KD_KEYS, "kd must be a mapping with alpha and until", "grown",
                       "kd (distillation from the small model) only applies to init: grown")
    if kd_opts and not 0 < _number(here, "kd.alpha", kd_opts.get("alpha")) <= 1:
        _fail(here, f"kd.alpha must be in (0, 1], got {kd_opts.get('alpha')!r}")
    if "until" in kd_opts and not 0 < _number(here, "kd.until", kd_opts["until"]) <= 1:
        _fail(here, f"kd.until must be in (0, 1], got {kd_opts['until']!r}")
    copies_opts = _options(here, a, "copies", COPIES_KEYS, "copies must be a mapping with lr and warmup", "grown",
                           "copies (asymmetric continuation) only applies to init: grown")
    if copies_opts:
        _number(here, "copies.lr", copies_opts.get("lr"))
        warm = copies_opts.get("warmup", train_default("copies_warmup"))
        if not 0 <= _number(here, "copies.warmup", warm, positive=False) <= 1:
            _fail(here, f"copies.warmup must be in [0, 1], got {copies_opts['warmup']!r}")
    return dict(kd_opts), dict(copies_opts)


def _parse_arm(where: str, number: int, a: Any, seeds: tuple[int, ...]) -> list[SweepArm]:
    """Arm `number` (from 1) of the file, every key checked in the order the keys are documented; `lr` as a list
    gives one SweepArm per value."""
    here = f"{where}: arm {number}"
    if not isinstance(a, dict):
        _fail(here, "each arm is a mapping")
    if isinstance(a.get("name"), str):
        here = f"{where}: arm {a['name']!r}"
    _unknown(here, a, ARM_KEYS)
    name = a.get("name")
    if not isinstance(name, str) or not name or any(c in name for c in "/\\ "):
        _fail(here, f"name must be a non-empty string without spaces or slashes, got {name!r}")
    if a.get("init") not in INITS:
        _fail(here, f"init must be one of {', '.join(INITS)}, got {a.get('init')!r}")
    lrs = a.get("lr")
    if lrs is None:
        _fail(here, "lr is required (a number or a list of numbers)")
    lr_values = [_number(here, "lr", v) for v in (lrs if isinstance(lrs, list) else [lrs])]
    grow_opts = _arm_grow(here, a)
    msg_opts = _arm_msg(here, a)
    moments, moments_reset = _arm_moments(here, a)
    if a.get("schedule") is not None and a["schedule"] not in SCHEDULES:
        _fail(here, f"schedule must be one of {', '.join(SCHEDULES)}, got {a['schedule']!r}")
    width = _positive_int(here, "width", a.get("width"))
    layers = _positive_int(here, "layers", a.get("layers"))
    if grow_opts.get("depth_mode") == "stack" and layers is None:
        _fail(here, "grow.depth_mode: stack needs layers (the final number of layers)")
    tokens = None if a.get("tokens") is None else int(_number(here, "tokens", a["tokens"]))
    warmup = None if a.get("warmup") is None else _number(here, "warmup", a["warmup"], positive=False)
    small_tokens, small_decay, small_corpus = _arm_small_model(here, a)
    kd_opts, copies_opts = _arm_kd_copies(here, a)
    lr_scale = _lr_scale(here, a.get("lr_scale"))
    arm_seeds = _seeds(here, a["seeds"]) if "seeds" in a else seeds
    decay_frac = _number(here, "decay_frac", a.get("decay_frac", SweepArm.decay_frac))
    min_lr_ratio = _number(here, "min_lr_ratio", a.get("min_lr_ratio", SweepArm.min_lr_ratio), positive=False)
    return [SweepArm(name=name if len(lr_values) == 1 and not isinstance(lrs, list) else f"{name}-lr{lr:g}",
                     init=a["init"], lr=lr, seeds=arm_seeds, width=width, layers=layers, tokens=tokens,
                     warmup=warmup, schedule=a.get("schedule"), decay_frac=decay_frac, min_lr_ratio=min_lr_ratio,
                     grow=dict(grow_opts), msg=dict(msg_opts), moments=moments, moments_reset=moments_reset,
                     small_tokens=small_tokens, small_decay=small_decay, small_corpus=small_corpus,
                     kd=dict(kd_opts), copies=dict(copies_opts), lr_scale=dict(lr_scale))
            for lr in lr_values]


def parse_sweep(raw: Any, where: str = "sweep") -> Sweep:
    """The sweep a parsed YAML/JSON file describes, every key checked, each with its own one-line error."""
    if not isinstance(raw, dict):
        _fail(where, "a sweep file holds a mapping with keys preset, seeds, arms")
    _unknown(where, raw, TOP_KEYS)
    if not isinstance(raw.get("preset"), str):
        _fail(where, "preset (a preset name such as cpu-tiny) is required")
    seeds = _seeds(where, raw.get("seeds", [0]))
    if not isinstance(raw.get("arms"), list) or not raw["arms"]:
        _fail(where, "arms must be a non-empty list")
    arms: list[SweepArm] = []
    for number, a in enumerate(raw["arms"], start=1):
        arms += _parse_arm(where, number, a, seeds)
    names = [arm.name for arm in arms]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        _fail(where, f"two arms are named {dup!r}")
    compare = raw.get("compare", "best-random")
    if compare not in COMPARE:
        _fail(where, f"compare must be one of {', '.join(COMPARE)}, got {compare!r}")
    report = raw.get("report", "search")
    if not isinstance(report, str) or not report or any(c in report for c in "/\\ .") or report == "sweep":
        _fail(where, f"report must be a file stem without dots, spaces or slashes (not 'sweep'), got {report!r}")
    if "report" in raw and compare != "ladder":
        _fail(where, "report (the search report's name) needs compare: ladder")
    return Sweep(preset=raw["preset"], arms=tuple(arms), compare=compare, report=report)
