"""An MSG arm for the experiment: grow the trained small model by Masked Structural Growth and train it with
the same recipe (TrainConfig) as the other arms.

The MSG model runs at the target size from step 0 (the masks only scale the new parts' contribution), so its
training FLOPs per token are the target model's from the first step: the experiment should cost this arm
with the grown model's `model_stats`, like the grown and random arms.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from hyperclone.baselines.msg.layout import CONFIG_KEY, RAMP_FRAC, Stage, make_layout
from hyperclone.baselines.msg.masked import prepare_msg
from hyperclone.common.errors import HyperCloneError
from hyperclone.grow.plan import GrowthSpec
from hyperclone.train.config import TrainConfig, TrainResult
from hyperclone.train.loop import train

HOOK = "hyperclone.baselines.msg.masked:train_hook"


def msg_stages(total_steps: int, width: int = 2, layers: int | None = None, ramp_frac: float = RAMP_FRAC,
               depth_start_frac: float = 0.0) -> list[Stage]:
    """The usual schedules as stages: width growth ramped over the first `ramp_frac` of the run, and (if
    `layers` is given) depth growth starting at `depth_start_frac` of the run with a ramp of the same length.
    depth_start_frac = 0 grows width and depth together in one stage."""
    ramp = max(1, round(ramp_frac * total_steps))
    return stages_in_steps(width, layers, ramp, round(depth_start_frac * total_steps) if layers else 0)


def stages_in_steps(width: int, layers: int | None, ramp_steps: int, depth_start: int = 0) -> list[Stage]:
    """Stages in optimizer steps: width (and depth, if `layers`) ramped over `ramp_steps` from step 0; with
    depth_start > 0, depth is a second stage starting at that step with a ramp of the same length."""
    if ramp_steps < 0 or depth_start < 0:
        raise HyperCloneError("--ramp-steps and --depth-start must not be negative")
    if layers is None:
        return [Stage(GrowthSpec(width=width), start=0, ramp=ramp_steps)]
    if depth_start <= 0:
        return [Stage(GrowthSpec(width=width, layers=layers), start=0, ramp=ramp_steps)]
    return [Stage(GrowthSpec(width=width), start=0, ramp=ramp_steps),
            Stage(GrowthSpec(width=1, layers=layers), start=depth_start, ramp=ramp_steps)]


def _prepared_layout_matches(small: Path, start_dir: Path, stages: list[Stage]) -> bool:
    from transformers import AutoConfig

    from hyperclone.grow.families import get_family

    config = AutoConfig.from_pretrained(small)
    wanted = make_layout(get_family(config.model_type), config, stages).to_json()
    stored = json.loads((start_dir / "config.json").read_text()).get(CONFIG_KEY)
    return stored == json.loads(json.dumps(wanted))


def run_msg_arm(cfg: TrainConfig, small: str | Path, start_dir: str | Path, stages: list[Stage] | None = None,
                width: int = 2, layers: int | None = None, ramp_frac: float = RAMP_FRAC, seed: int | None = None
                ) -> TrainResult:
    """Train an MSG arm with the recipe `cfg` (its `model` is ignored): the MSG start checkpoint of `small`
    (the trained small model's folder) is written to `start_dir` once (kept and checked on reruns, so the
    arm resumes like the others), then trained with the MSG step hook. Stages default to `msg_stages` for
    this run's length. The final checkpoint is plain if the ramp ends within the run."""
    small, start_dir = Path(small), Path(start_dir)
    total = cfg.tokens // cfg.batch_tokens
    stages = stages if stages is not None else msg_stages(total, width, layers, ramp_frac)
    seed = cfg.seed if seed is None else seed
    if (start_dir / "config.json").exists():
        if not _prepared_layout_matches(small, start_dir, stages):
            raise HyperCloneError(f"{start_dir} holds an MSG start with another growth schedule; delete it or "
                                  "use another folder")
    else:
        prepare_msg(small, start_dir, stages, seed=seed)
    schedule = [{"start": s.start, "ramp": s.ramp} for s in stages]
    extra = {**cfg.extra, "msg": {"stages": schedule, "seed": seed, "start_model": str(start_dir)}}
    return train(replace(cfg, model=start_dir, step_hook=HOOK, extra=extra))
