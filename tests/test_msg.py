"""Masked Structural Growth: at ramp start the target-shape model computes the small model's function
(fp32 logits, max|dlogit| <= 1e-4 * max|logit|) for width, depth and both, in every supported family;
a stage whose mask is 0 has no effect at all; at c = 1 the folded model, saved and reloaded by plain
transformers, computes what the masked model computed; the train hook ramps and folds."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_models import make_tiny
from transformers import AutoModelForCausalLM

from hyperclone.baselines.msg.layout import CONFIG_KEY, SUPPORTED, Stage, tensor_rules
from hyperclone.baselines.msg.masked import MaskedModel, build_masked, prepare_msg, train_hook
from hyperclone.common.errors import HyperCloneError
from hyperclone.grow.families import get_family
from hyperclone.grow.plan import GrowthSpec

REL_TOL = 1e-4
WIDTH = GrowthSpec(width=2, ffn=3)  # hidden, heads, KV heads x2, MLP x3
DEPTH = GrowthSpec(width=1, layers=4)  # 2 -> 4 layers
BOTH = GrowthSpec(width=2, layers=3)


def ids(seed: int = 0) -> torch.Tensor:
    return torch.randint(3, 97, (2, 12), generator=torch.Generator().manual_seed(seed))


def logits(model: torch.nn.Module) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids()).logits


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def small_logits(folder) -> torch.Tensor:
    return logits(AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32))


@pytest.mark.parametrize("spec", [WIDTH, DEPTH, BOTH], ids=["width", "depth", "both"])
@pytest.mark.parametrize("tied", [False, True])
def test_llama_starts_as_the_small_model(tmp_path, spec, tied):
    src = make_tiny("llama", tmp_path / "src", tied=tied)
    masked = build_masked(src, spec, seed=1)
    assert masked.model.config.hidden_size == 48 * spec.width
    assert masked.model.config.num_hidden_layers == (spec.layers or 2)
    big = logits(masked.model)
    assert rel_err(big, small_logits(src)) <= REL_TOL
    masked.set_mask(1.0)  # the new parts are live (random), so the function does change
    assert rel_err(logits(masked.model), big) > 1e-2


@pytest.mark.parametrize("family", [f for f in SUPPORTED if f != "llama"])
def test_every_family_starts_as_the_small_model(tmp_path, family):
    src = make_tiny(family, tmp_path / "src")
    masked = build_masked(src, BOTH, seed=1)
    assert rel_err(logits(masked.model), small_logits(src)) <= REL_TOL


def test_uneven_sizes_and_regrouped_heads(tmp_path):
    """6 query / 2 KV heads -> 12 / 2 (groups of 3 become groups of 6), hidden 48 -> 72, MLP 80 -> 100."""
    src = make_tiny("llama", tmp_path / "src")
    spec = GrowthSpec(hidden_size=72, heads=12, kv_heads=2, ffn_size=100, layers=3)
    masked = build_masked(src, spec, seed=2)
    cfg = masked.model.config
    shape = (cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.intermediate_size)
    assert shape == (72, 12, 2, 100)
    assert rel_err(logits(masked.model), small_logits(src)) <= REL_TOL


def test_old_weights_get_the_small_models_gradients_and_new_ones_none(tmp_path):
    src = make_tiny("llama", tmp_path / "src")
    small = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    masked = build_masked(src, GrowthSpec(width=2), seed=1)
    x = ids()
    for model in (small, masked.model):
        model(input_ids=x, labels=x).loss.backward()
    big = masked.model.model.embed_tokens.weight.grad
    assert torch.allclose(big[:, :48], small.model.embed_tokens.weight.grad, atol=1e-6)
    assert float(big[:, 48:].abs().max()) == 0.0
    down = masked.model.model.layers[0].mlp.down_proj.weight.grad
    assert float(down[48:].abs().max()) == 0.0 and float(down[:, 80:].abs().max()) == 0.0


def _perturb_new_positions(model: torch.nn.Module, family: str, hidden_from: int, ffn_from: int) -> None:
    """Add noise to every weight entry on a hidden position >= hidden_from or an MLP position >= ffn_from."""
    rules = tensor_rules(get_family(family))
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, param in model.named_parameters():
            rule = next((r for p, r in rules if p.match(name)), None)
            assert rule is not None, name
            for axis, kinds in enumerate(rule.axes):
                start = {("hidden",): hidden_from, ("ffn",): ffn_from}.get(kinds)
                if start is not None:
                    part = param.narrow(axis, start, param.shape[axis] - start)
                    part.add_(torch.randn(part.shape, generator=gen))


def test_a_stage_at_mask_zero_has_no_effect(tmp_path):
    """Two width stages: with stage 1 live and stage 2 at 0, stage 2's weights do not matter; the model is
    not the small one any more (stage 1 is live)."""
    src = make_tiny("llama", tmp_path / "src")
    stages = [Stage(GrowthSpec(width=2), start=0, ramp=10), Stage(GrowthSpec(width=2, ffn=1), start=20, ramp=10)]
    masked = build_masked(src, stages, seed=3)
    assert masked.model.config.hidden_size == 192 and masked.model.config.intermediate_size == 160
    masked.set_step(15)
    assert masked.c == [1.0, 1.0, 0.0]
    before = logits(masked.model)
    assert rel_err(before, small_logits(src)) > 1e-2
    _perturb_new_positions(masked.model, "llama", hidden_from=96, ffn_from=160)
    assert rel_err(logits(masked.model), before) <= REL_TOL
    masked.set_step(25)
    assert masked.c == [1.0, 1.0, 0.5] and not masked.ramp_done
    masked.set_step(30)
    assert masked.ramp_done


def test_width_then_depth_schedule(tmp_path):
    src = make_tiny("llama", tmp_path / "src")
    stages = [Stage(GrowthSpec(width=2), start=0, ramp=4), Stage(GrowthSpec(width=1, layers=4), start=6, ramp=4)]
    masked = build_masked(src, stages, seed=3)
    new_layers = [t for t, stage in enumerate(masked.layout.layer_stage) if stage == 2]
    assert len(new_layers) == 2 and masked.layout.old_layer.count(None) == 2
    masked.set_step(0)
    assert rel_err(logits(masked.model), small_logits(src)) <= REL_TOL
    masked.set_step(5)  # width live, new layers still the identity: perturbing them changes nothing
    before = logits(masked.model)
    with torch.no_grad():
        for t in new_layers:
            for p in masked.model.model.layers[t].parameters():
                p.add_(1.0)
    assert rel_err(logits(masked.model), before) <= REL_TOL
    masked.set_step(7)
    assert rel_err(logits(masked.model), before) > 1e-3


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma"])
def test_folded_checkpoint_is_plain_and_equals_the_masked_model(tmp_path, family):
    src = make_tiny(family, tmp_path / "src")
    masked = build_masked(src, BOTH, seed=1)
    with pytest.raises(HyperCloneError, match="finish the ramp"):
        masked.fold()
    masked.set_mask(1.0)
    at_one = logits(masked.model)
    masked.fold().save_pretrained(tmp_path / "out")
    assert CONFIG_KEY not in json.loads((tmp_path / "out" / "config.json").read_text())
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32)
    assert rel_err(logits(reloaded), at_one) <= REL_TOL


def test_prepared_checkpoint_and_train_hook(tmp_path):
    """prepare_msg writes a plain-loadable folder with the layout in config.json; train_hook re-installs the
    masks from it, ramps them with the step and folds at the end of the ramp."""
    src = make_tiny("llama", tmp_path / "src")
    out = prepare_msg(src, tmp_path / "msg", [Stage(GrowthSpec(width=2, layers=3), start=2, ramp=4)], seed=1)
    assert json.loads((out / "config.json").read_text())[CONFIG_KEY]["ramps"] == [0, 4]
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    train_hook(model, 0, 10)
    assert rel_err(logits(model), small_logits(src)) <= REL_TOL
    train_hook(model, 4, 10)
    assert hasattr(model.config, CONFIG_KEY)
    train_hook(model, 6, 10)  # ramp over: folded, the config key is gone, later calls do nothing
    assert not hasattr(model.config, CONFIG_KEY)
    plain = logits(model)
    train_hook(model, 7, 10)
    model.save_pretrained(tmp_path / "after")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "after", dtype=torch.float32)
    assert torch.equal(logits(reloaded), plain)


def test_attach_requires_the_layout(tmp_path):
    src = make_tiny("llama", tmp_path / "src")
    with pytest.raises(HyperCloneError, match="not an MSG model"):
        MaskedModel.attach(AutoModelForCausalLM.from_pretrained(src))


@pytest.mark.parametrize("family,spec,message", [
    ("opt", GrowthSpec(width=2), "MSG supports"),
    ("llama", GrowthSpec(width=2, layers=4, depth_mode="stack"), "identity"),
    ("llama", GrowthSpec(hidden_size=96, heads=12, kv_heads=6), "query heads per KV head"),
])
def test_refusals(tmp_path, family, spec, message):
    src = make_tiny(family, tmp_path / "src")
    with pytest.raises(HyperCloneError, match=message):
        build_masked(src, spec)


@pytest.fixture(scope="module")
def msg_runs(tmp_path_factory):
    """A tiny llama (with tokenizer) grown by MSG to width 2 (ramp over steps 0..5), trained for 10 steps
    uninterrupted, and again stopped after 3 steps (last checkpoint at step 2, mid-ramp) and resumed."""
    from dataclasses import replace

    from train_helpers import make_corpus, make_model

    from hyperclone.train.config import TrainConfig
    from hyperclone.train.loop import train

    root = tmp_path_factory.mktemp("msgtrain")
    corpus = make_corpus(root / "corpus", n_files=3, lines=150)
    small = make_model(root / "small", corpus)
    start = prepare_msg(small, root / "msg", [Stage(GrowthSpec(width=2), start=0, ramp=5)], seed=1)
    cfg = TrainConfig(model=start, data=[corpus], out=root / "full", tokens=256 * 10, batch_tokens=256, seq_len=32,
                      eval_every=5, eval_tokens=512, save_every=2, keep_checkpoints=10, log_every=5, lr=3e-3,
                      warmup=2, cache_dir=root / "cache", progress=False, seed=0,
                      step_hook="hyperclone.baselines.msg.masked:train_hook")
    full = train(cfg)
    train(replace(cfg, out=root / "split", stop_after=3))
    split = train(replace(cfg, out=root / "split", resume=True))
    plain = train(replace(cfg, model=small, out=root / "small-run", tokens=256, step_hook=None))
    return root, full, split, plain


def test_training_ramps_the_masks_and_saves_plain_checkpoints_after_the_ramp(msg_runs):
    from hyperclone.train.metrics import read_metrics

    root, full, _, plain = msg_runs
    # the masks are on before the first evaluation: the grown model starts at the small model's loss
    assert read_metrics(full.out)[0]["val_loss"] == pytest.approx(read_metrics(plain.out)[0]["val_loss"], rel=1e-5)
    has_layout = {int(p.name.split("-")[1]): CONFIG_KEY in json.loads((p / "config.json").read_text())
                  for p in sorted((full.out / "checkpoints").iterdir())}
    assert has_layout == {2: True, 4: True, 6: False, 8: False}  # the ramp ends at step 5
    assert CONFIG_KEY not in json.loads((full.final / "config.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(full.final, dtype=torch.float32)
    assert model.config.hidden_size == 64
    assert torch.isfinite(logits(model)).all()


def test_resuming_mid_ramp_matches_the_uninterrupted_run(msg_runs):
    from safetensors.torch import load_file

    _, full, split, _ = msg_runs
    a, b = load_file(full.final / "model.safetensors"), load_file(split.final / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_msg_arm_trains_with_the_recipe_and_resumes(msg_runs, tmp_path):
    from dataclasses import replace

    from hyperclone.baselines.msg.run import msg_stages, run_msg_arm
    from hyperclone.train.config import TrainConfig

    root = msg_runs[0]
    small = root / "small"
    cfg = TrainConfig(model=small, data=[root / "corpus"], out=tmp_path / "arm", tokens=256 * 6, batch_tokens=256,
                      seq_len=32, eval_every=3, eval_tokens=512, save_every=3, keep_checkpoints=1, lr=3e-3, warmup=1,
                      cache_dir=root / "cache", progress=False, seed=4, resume=True, extra={"arm": "msg"})
    result = run_msg_arm(cfg, small, tmp_path / "msg-start", width=2, ramp_frac=0.5)
    assert result.steps == 6
    assert CONFIG_KEY not in json.loads((result.final / "config.json").read_text())
    assert AutoModelForCausalLM.from_pretrained(result.final).config.hidden_size == 64
    summary = json.loads((result.out / "train_summary.json").read_text())
    assert summary["extra"]["arm"] == "msg" and summary["extra"]["msg"]["stages"] == [{"start": 0, "ramp": 3}]
    again = run_msg_arm(cfg, small, tmp_path / "msg-start", width=2, ramp_frac=0.5)  # finished: returns at once
    assert again.final == result.final and again.steps == 6
    with pytest.raises(HyperCloneError, match="another growth schedule"):
        run_msg_arm(replace(cfg, out=tmp_path / "arm2"), small, tmp_path / "msg-start", width=2, ramp_frac=1.0)
    two = msg_stages(100, width=2, layers=4, depth_start_frac=0.5)
    assert [(s.start, s.ramp, s.spec.layers) for s in two] == [(0, 10, None), (50, 10, 4)]


def test_msg_from_the_command_line(tmp_path, capsys):
    """grow --method msg writes the masked start (same logits as the small model); train refuses it without
    --msg, and with --msg ramps and folds the masks: the final checkpoint is a plain model without the key."""
    from train_helpers import make_corpus, make_model

    from hyperclone.cli import main

    corpus = make_corpus(tmp_path / "corpus", n_files=3, lines=150)
    small = make_model(tmp_path / "small", corpus)
    start = tmp_path / "msg"
    with pytest.raises(SystemExit) as exit_info:
        main(["grow", str(small), str(start), "--method", "msg", "--width", "2", "--ramp-steps", "3", "--quiet"])
    assert exit_info.value.code == 0
    assert CONFIG_KEY in json.loads((start / "config.json").read_text())
    assert rel_err(logits(AutoModelForCausalLM.from_pretrained(start)), small_logits(small)) > 0  # masks not live
    masked = MaskedModel.attach(AutoModelForCausalLM.from_pretrained(start))
    masked.set_step(0)
    assert rel_err(logits(masked.model), small_logits(small)) < 1e-5
    args = ["train", str(start), "--data", str(corpus), "--out", str(tmp_path / "run"), "--tokens", "2560",
            "--batch-tokens", "256", "--seq-len", "32", "--eval-every", "5", "--eval-tokens", "512", "--no-progress",
            "--cache-dir", str(tmp_path / "cache")]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    assert "--msg" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--msg"])
    assert exit_info.value.code == 0
    final = json.loads((tmp_path / "run" / "final" / "config.json").read_text())
    assert CONFIG_KEY not in final and final["hidden_size"] == 64
