"""The arithmetic of every study: curves (lists of points), speed-ups read off them, seed spreads, random init's
budget frontier and the head start placed on it, learning speed at equal loss and the lead a grown run holds.

Pure functions on numbers and lists, no files: the studies (report, sweep_report, ladder, ladder_search,
headtohead, diagnosis) read runs and write pages; what they compute is here, unit-tested on synthetic curves.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

Curve = list[dict[str, Any]]  # points: {"tokens", "val_loss", "flops", "elapsed_s", ...}


def x_to_reach(xs: Sequence[float], ys: Sequence[float], target: float) -> float | None:
    """First x at which the curve y(x) reaches y <= target, linearly interpolated; None if it never does."""
    prev = None
    for x, y in zip(xs, ys, strict=True):
        if y is None or not math.isfinite(y):
            continue
        if y <= target:
            if prev is None:
                return float(x)
            x0, y0 = prev
            return float(x0 + (y0 - target) / (y0 - y) * (x - x0)) if y0 != y else float(x)
        prev = (x, y)
    return None


def ratio(reference: float, needed: float | None) -> float | None:
    if needed is None or needed <= 0:
        return None
    return reference / needed


def mean_curve(curves: Sequence[Curve]) -> Curve:
    """Point-wise mean of curves evaluated at the same steps (seeds of one arm)."""
    if not curves:
        return []
    n = min(len(c) for c in curves)
    out = []
    for i in range(n):
        pts = [c[i] for c in curves]
        point = {k: statistics.fmean(p[k] for p in pts) for k in ("tokens", "val_loss", "flops", "elapsed_s")}
        out.append(point)
    return out


def spread(values: Sequence[float | None]) -> dict[str, Any]:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"n": len(values), "reached": 0, "mean": None, "std": None, "min": None, "max": None}
    return {"n": len(values), "reached": len(vals), "mean": statistics.fmean(vals),
            "std": statistics.stdev(vals) if len(vals) > 1 else 0.0, "min": min(vals), "max": max(vals)}


def speedups(grown: Curve, random: Curve, small_tokens: float, small_flops: float, small_elapsed: float) -> dict:
    """Speedups of the grown arm over the random arm, both curves of the same full budget.

    The target is random's final validation loss. speedup_tokens compares tokens of the big model
    only; the *_incl_small variants (and speedup_flops, which only differs from speedup_tokens
    once the small model's cost is added) charge the grown arm for pretraining the small model.
    """
    target = random[-1]["val_loss"]
    xs = [p["tokens"] for p in grown]
    ys = [p["val_loss"] for p in grown]
    need_tokens = x_to_reach(xs, ys, target)
    need_flops = x_to_reach([p["flops"] for p in grown], ys, target)
    need_time = x_to_reach([p["elapsed_s"] for p in grown], ys, target)
    return {
        "target_val_loss": target,
        "grown_tokens_to_target": need_tokens,
        "grown_flops_to_target": need_flops,
        "grown_elapsed_s_to_target": need_time,
        "reached_at_start": need_tokens == 0.0,
        "speedup_tokens": ratio(random[-1]["tokens"], need_tokens),
        "speedup_tokens_incl_small": ratio(random[-1]["tokens"], None if need_tokens is None
                                           else need_tokens + small_tokens),
        "speedup_flops": ratio(random[-1]["flops"], None if need_flops is None else need_flops + small_flops),
        "speedup_wall_clock_incl_small": ratio(random[-1]["elapsed_s"], None if need_time is None
                                               else need_time + small_elapsed),
    }


def summarize(arms: dict[str, dict[int, Curve]], small_curve: Curve, headline: tuple[str, str] = ("grown", "random"),
              small_elapsed: float | None = None) -> dict[str, Any]:
    """Top-level numbers: speedups on the seed-mean curves, per-seed speedups and the seed spread."""
    grown_name, random_name = headline
    small_tokens = small_curve[-1]["tokens"]
    small_flops = small_curve[-1]["flops"]
    small_s = small_curve[-1]["elapsed_s"] if small_elapsed is None else small_elapsed
    g_mean = mean_curve(list(arms[grown_name].values()))
    r_mean = mean_curve(list(arms[random_name].values()))
    top = speedups(g_mean, r_mean, small_tokens, small_flops, small_s)
    per_seed = []
    for seed in sorted(set(arms[grown_name]) & set(arms[random_name])):
        s = speedups(arms[grown_name][seed], arms[random_name][seed], small_tokens, small_flops, small_s)
        per_seed.append({"seed": seed, **s})
    keys = ("speedup_tokens", "speedup_tokens_incl_small", "speedup_flops", "speedup_wall_clock_incl_small")
    seed_spread: dict[str, Any] = {k: spread([p[k] for p in per_seed]) for k in keys}
    seed_spread["final_val_loss"] = {name: spread([c[-1]["val_loss"] for c in curves.values()])
                                     for name, curves in arms.items()}
    return {**top, "per_seed": per_seed, "seed_spread": seed_spread}


def mean(values: dict[int, float]) -> float | None:
    return statistics.fmean(values.values()) if values else None


def pick_random(arms: dict[str, dict[str, Any]], budget: int) -> str | None:
    """The random arm of a budget: among its learning rates, the lowest seed-0 final loss (or the lowest mean
    where no seed 0 has finished)."""
    candidates = [n for n, a in arms.items() if a["init"] == "random" and a["tokens"] == budget
                  and a["final_val_loss"]]
    with_seed0 = [n for n in candidates if 0 in arms[n]["final_val_loss"]]
    if with_seed0:
        return min(with_seed0, key=lambda n: arms[n]["final_val_loss"][0])
    return min(candidates, key=lambda n: mean(arms[n]["final_val_loss"]), default=None)


def random_frontier(arms: dict[str, dict[str, Any]]) -> tuple[dict[int, str | None], list[tuple[int, float]]]:
    """Random init's arm at every budget (pick_random) and its seed-mean final loss per budget, by budget: the
    frontier, on which only budgets that end below every smaller one count (`envelope`)."""
    budgets = sorted({a["tokens"] for a in arms.values()})
    chosen = {b: pick_random(arms, b) for b in budgets}
    return chosen, envelope([(b, mean(arms[chosen[b]]["final_val_loss"])) for b in budgets if chosen[b]])


def envelope(points: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """The points [(budget, loss)] sorted by budget that end below every smaller budget: a larger budget ending no
    lower was not searched well enough (its learning rates too low or too high), and random init given more tokens
    reaches at least the smaller budget's loss, so it is left out rather than read as tokens needed."""
    kept: list[tuple[int, float]] = []
    for budget, loss in points:
        if not kept or loss < kept[-1][1]:
            kept.append((budget, loss))
    return kept


def flattens(frontier: list[tuple[int, float]]) -> bool:
    """Whether random's frontier is convex in log-tokens: each segment gains less loss per doubling of the
    budget than the one before (what makes extending its last segment a lower bound)."""
    slopes = [(l0 - l1) / (math.log(b1) - math.log(b0))
              for (b0, l0), (b1, l1) in zip(frontier, frontier[1:], strict=False)]
    return len(slopes) >= 2 and all(s > 0 for s in slopes) and all(
        later <= earlier for earlier, later in zip(slopes, slopes[1:], strict=False))


def tokens_to_reach(loss: float, frontier: list[tuple[int, float]]) -> tuple[float | None, str]:
    """Tokens random needs to reach `loss` on its budget frontier [(budget, final loss)] sorted by budget:
    (tokens, "") when bracketed, else a bound and ">" or "<". Below the largest budget's loss the lower bound is
    random's last segment extended in log-tokens where the frontier flattens (see `flattens`; a curve that keeps
    flattening needs at least that many tokens), else the largest budget itself."""
    if not frontier:
        return None, ""
    if loss < frontier[-1][1]:
        if flattens(frontier):
            (b0, l0), (b1, l1) = frontier[-2:]
            per_log_token = (l0 - l1) / (math.log(b1) - math.log(b0))
            return math.exp(math.log(b1) + (l1 - loss) / per_log_token), ">"
        return float(frontier[-1][0]), ">"
    if loss > frontier[0][1]:
        return float(frontier[0][0]), "<"
    for (b0, l0), (b1, l1) in zip(frontier, frontier[1:], strict=False):
        if l1 <= loss <= l0:
            if l0 == l1:
                return float(b0), ""
            t = (l0 - loss) / (l0 - l1)
            return math.exp(math.log(b0) + t * (math.log(b1) - math.log(b0))), ""
    return float(frontier[0][0]), ""  # equal to the smallest budget's loss


def kept_bound(needed_bound: str, start_bound: str, gained: float) -> str | None:
    """The bound on kept = gained / head start (gained = tokens random needs - B) from the bounds on its terms:
    "" exact, ">" or "<", None where the two push it opposite ways."""
    sides = {needed_bound} if needed_bound else set()
    if start_bound:  # a smaller head start makes a positive fraction larger and a negative one smaller
        sides.add({"<": ">", ">": "<"}[start_bound] if gained >= 0 else start_bound)
    return "" if not sides else sides.pop() if len(sides) == 1 else None


def head_start(start: float | None, needed: float | None, needed_bound: str, budget: int,
               frontier: list[tuple[int, float]]) -> dict[str, Any]:
    """A row's head-start fields (see HEAD_START): the start loss, the tokens random needs to reach it (and its
    bound), the speed-up that keeping it would give, and the fraction `kept` (None where its bounds conflict)."""
    if start is None or not frontier:
        return {}
    tokens, bound = tokens_to_reach(start, frontier)
    row = {"start_loss": start, "head_start_tokens": tokens, "head_start_bound": bound,
           "speedup_if_kept": 1 + tokens / budget, "kept": None, "kept_bound": ""}
    side = None if needed is None else kept_bound(needed_bound, bound, needed - budget)
    if side is not None:
        row["kept"], row["kept_bound"] = (needed - budget) / tokens, side
    return row


DROP = 0.1  # learning speed: tokens to fall this much in loss
LEVELS = tuple(round(3.2 - 0.1 * i, 2) for i in range(19))  # validation loss 3.2 ... 1.4
PEAK = 0.999  # an evaluation at >= PEAK x the run's largest learning rate is in the stable phase


TRAIN_WINDOW = 11  # log points in the training loss's running mean


def stable_points(metrics: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """(tokens, val_loss) of the evaluations at the peak learning rate (all after step 0 if fewer than 3)."""
    vals = [m for m in metrics if m.get("val_loss") is not None and m["step"] > 0]
    peak = max((m.get("lr") or 0.0 for m in metrics), default=0.0)
    stable = [m for m in vals if (m.get("lr") or 0.0) >= PEAK * peak]
    return [(m["tokens"], m["val_loss"]) for m in (stable if len(stable) >= 3 else vals)]


def running_mean(points: list[tuple[float, float]], window: int) -> list[tuple[float, float]]:
    """(x, centred running mean of y over `window` points), for the points with a full window."""
    half = window // 2
    return [(points[i][0], statistics.fmean(p[1] for p in points[i - half : i + half + 1]))
            for i in range(half, len(points) - half)]


def train_points(metrics: list[dict[str, Any]], window: int = TRAIN_WINDOW) -> list[tuple[float, float]]:
    """(tokens, training loss smoothed by a centred running mean of `window` log points), at the peak learning
    rate (every logged point if the stable phase holds fewer than 3 windows)."""
    logged = [m for m in metrics if m.get("train_loss") is not None]
    peak = max((m.get("lr") or 0.0 for m in logged), default=0.0)
    stable = [m for m in logged if (m.get("lr") or 0.0) >= PEAK * peak]
    return running_mean([(m["tokens"], m["train_loss"]) for m in (stable if len(stable) >= 3 * window else logged)],
                        window)


def tokens_per_drop(points: list[tuple[float, float]], levels=LEVELS, drop: float = DROP) -> dict[str, float]:
    """{L: tokens from the first crossing of L to the first crossing of L - drop} for the levels the curve
    starts above and reaches L - drop of."""
    if len(points) < 2:
        return {}
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    found = {}
    for level in levels:
        if ys[0] <= level:
            continue
        start, end = x_to_reach(xs, ys, level), x_to_reach(xs, ys, level - drop)
        if start is not None and end is not None:
            found[f"{level:.2f}"] = end - start
    return found


LEAD_AT = (0.1, 0.25, 0.5, 0.75)  # fractions of a run at which its lead over random init is read


def lead(grown: list[tuple[float, float]], random: list[tuple[float, float]], at=LEAD_AT) -> dict[str, float | None]:
    """{fraction: tokens random init needs to reach the grown run's (smoothed training) loss at that fraction of
    the grown run, minus the tokens the grown run has trained}; None where random never gets there. Read on the
    same seed and schedule, this is how much of the head start a grown run still holds at each point."""
    if not grown or not random:
        return {}
    xs, ys = [p[0] for p in random], [p[1] for p in random]
    end = grown[-1][0]
    found: dict[str, float | None] = {}
    for frac in at:
        tokens, loss = min(grown, key=lambda p: abs(p[0] - frac * end))
        needed = x_to_reach(xs, ys, loss)
        found[f"{frac:g}"] = None if needed is None else needed - tokens
    return found
