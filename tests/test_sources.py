"""Sources as users name them: Hub ids from a Hugging Face cache (offline), quantized checkpoints and index
files that leave the folder refused in one line, a disk that cannot hold the output refused before writing,
and the model card every grown folder carries."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from tiny_models import FAMILIES, UNTIED_CONFIG, UNTIED_ONLY, make_tiny

from hyperclone.cli import main
from hyperclone.common.errors import HyperCloneError
from hyperclone.grow.engine import grow

REPO = Path(__file__).resolve().parents[1]


def run_cli(args, capsys):
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def hub_cache(root: Path, repo_id: str, model: Path, commit: str = "0123456789abcdef0123456789abcdef01234567"):
    """A Hugging Face Hub cache laid out as huggingface_hub writes it: blobs, a snapshot of links, refs/main."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for path in model.iterdir():
        blob = repo / "blobs" / f"{path.name}.blob"
        shutil.copy2(path, blob)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / path.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def test_hub_id_resolves_from_an_offline_cache(tmp_path):
    src = make_tiny("qwen2", tmp_path / "model", dtype=torch.bfloat16)
    cache = tmp_path / "hub"
    hub_cache(cache, "tiny-org/tiny-qwen2", src)
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO),
           "OMP_NUM_THREADS": "1"}
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "hyperclone.cli", "grow", "tiny-org/tiny-qwen2", str(out),
                           "--width", "2", "--quiet"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((out / "hyperclone.json").read_text())
    assert record["source_path"] == "tiny-org/tiny-qwen2" and record["grown"]["hidden"] == 96
    done = subprocess.run([sys.executable, "-m", "hyperclone.cli", "grow", "tiny-org/absent", str(tmp_path / "x")],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "hyperclone: error: tiny-org/absent: not in the Hugging Face cache and the Hub cannot be reached "
        "(offline?); download it first or give a local folder"]
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("quant", [{"quant_method": "fp8", "weight_block_size": [128, 128]},
                                   {"quant_method": "gptq", "bits": 4}])
def test_quantized_checkpoints_are_refused(tmp_path, capsys, quant):
    src = make_tiny("llama", tmp_path / "src")
    config = json.loads((src / "config.json").read_text())
    config["quantization_config"] = quant
    (src / "config.json").write_text(json.dumps(config))
    code, _, err = run_cli(["grow", str(src), str(tmp_path / "out")], capsys)
    assert code == 2
    assert err.strip().splitlines() == [f"hyperclone: error: {src} is quantized ({quant['quant_method']}); grow the "
                                        "unquantized checkpoint it came from, or dequantize it first (load with "
                                        "transformers and save in bf16/fp32)"]
    assert not (tmp_path / "out").exists()


def test_fp8_weights_are_refused(tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    src = make_tiny("llama", tmp_path / "src")
    tensors = load_file(src / "model.safetensors")
    name = "model.layers.0.mlp.up_proj.weight"
    tensors[name] = tensors[name].to(torch.float8_e4m3fn)
    save_file(tensors, src / "model.safetensors", metadata={"format": "pt"})
    code, _, err = run_cli(["grow", str(src), str(tmp_path / "out")], capsys)
    assert code == 2 and "stores fp8 weights" in err and len(err.strip().splitlines()) == 1


def test_index_that_leaves_the_folder_is_refused(tmp_path, capsys):
    src = make_tiny("llama", tmp_path / "src")
    (tmp_path / "other").mkdir()
    shutil.move(src / "model.safetensors", tmp_path / "other" / "model.safetensors")
    from safetensors import safe_open

    with safe_open(tmp_path / "other" / "model.safetensors", "pt") as handle:
        names = list(handle.keys())
    index = {"metadata": {}, "weight_map": {n: "../other/model.safetensors" for n in names}}
    (src / "model.safetensors.index.json").write_text(json.dumps(index))
    code, _, err = run_cli(["grow", str(src), str(tmp_path / "out")], capsys)
    assert code == 2
    assert "is outside the checkpoint folder; refusing to follow it" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_disk_that_cannot_hold_the_output_is_refused_before_writing(tmp_path, capsys, monkeypatch):
    from hyperclone.grow import engine

    src = make_tiny("llama", tmp_path / "src")
    monkeypatch.setattr(engine.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 1000))
    code, _, err = run_cli(["grow", str(src), str(tmp_path / "out")], capsys)
    assert code == 2 and "but" in err and "GB free" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # nothing written, not even a temp folder


def test_model_card_has_front_matter_and_verify_fills_it_in(tmp_path, capsys):
    src = make_tiny("llama", tmp_path / "src", dtype=torch.bfloat16)
    (src / "README.md").write_text("---\nlicense: mit\n---\n# the source's own card\n")
    out = grow(src, tmp_path / "out", width=2)
    card = (out / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["base_model"] == str(src) and "hyperclone" in front["tags"]
    assert front["library_name"] == "transformers"
    assert "function-preserving: yes" in card and "the source's own card" not in card
    code, _, _ = run_cli(["verify", str(src), str(out)], capsys)
    assert code == 0
    card = (out / "README.md").read_text()
    assert "Not verified yet" not in card and "rel_err" in card and "ok True" in card


@pytest.mark.parametrize("family", FAMILIES)
def test_plans_from_the_stated_config_equal_plans_from_transformers(tmp_path, family):
    """grow plans from config.json as written (no transformers import) whenever the file states every value
    the plan reads; the plan (every recipe, every config update, or the refusal) must then be the one the
    transformers config gives. Tied and untied, widths 2 and 3, an uneven MLP factor."""
    from hyperclone.grow.plan import GrowthSpec, make_plan
    from hyperclone.grow.source import NeedsTransformers, StatedConfig, open_source

    stated_plans = 0
    for tied in (False,) if family in UNTIED_CONFIG else (False, True):
        source = open_source(make_tiny(family, tmp_path / f"tied-{tied}", tied=tied))
        for spec in (GrowthSpec(width=2), GrowthSpec(width=3), GrowthSpec(width=2, ffn=3)):
            def plan(config, spec=spec, source=source) -> str:
                try:
                    return repr(make_plan(source.family, config, source.weights.infos, spec))
                except HyperCloneError as err:
                    return f"refused: {err}"

            try:
                stated = plan(StatedConfig(source.raw_config))
            except NeedsTransformers:
                continue
            stated_plans += 1
            assert stated == plan(source.config)
    if family in STATES_TOO_LITTLE:  # their saved config.json leaves head_dim to the config class
        assert stated_plans == (3 if family in UNTIED_ONLY else 0)  # (a tied NemotronH is refused from the file)
    elif family in UNTIED_CONFIG:  # no tied model to plan
        assert stated_plans == 3
    else:
        assert stated_plans == 6


STATES_TOO_LITTLE = {"cohere", "exaone4", "olmo3", "starcoder2", "doge",
                     "qwen3_moe",  # transformers 5.25 writes num_experts as num_local_experts (the Hub: num_experts)
                     "nemotron_h",  # ... and NemotronH's layer count and pattern only as layers_block_type
                     "deepseek_v2",  # q_lora_rank null (V2-Lite: no q LoRA), which the file leaves to the class
                     "kimi_linear",  # ... q_lora_rank null too (the release has no q LoRA), likewise
                     "cohere2_moe",  # ... rms_norm_eps null (its LayerNorms), likewise
                     "apertus1p5_text",  # ... output_vocab_size null (an unpruned output projection), likewise
                     "mimo_v2_flash",  # ... no swa_* head counts (the Hub's restatement, scaled_config), likewise
                     "longcat_flash"}  # ... no num_hidden_layers (2 x num_layers, its class's property), likewise


def test_a_hub_style_qwen3_moe_config_plans_without_transformers(tmp_path):
    """Qwen3-MoE config.json as the Hub states it (num_experts): planned from the file, the same plan."""
    from hyperclone.grow.plan import GrowthSpec, make_plan
    from hyperclone.grow.source import StatedConfig, open_source

    src = make_tiny("qwen3_moe", tmp_path / "src")
    raw = json.loads((src / "config.json").read_text())
    raw["num_experts"] = raw.pop("num_local_experts")
    (src / "config.json").write_text(json.dumps(raw))
    source = open_source(src)
    stated = make_plan(source.family, StatedConfig(source.raw_config), source.weights.infos, GrowthSpec(width=2))
    assert repr(stated) == repr(make_plan(source.family, source.config, source.weights.infos, GrowthSpec(width=2)))
    assert stated.grown.experts == 4 and stated.grown.ffn == 80


def test_a_depth_growth_plans_with_transformers(tmp_path):
    """Per-layer lists (layer_types, ...) may be derived by the config class: a depth growth always asks it."""
    from hyperclone.grow.source import NeedsTransformers, StatedConfig

    with pytest.raises(NeedsTransformers):
        StatedConfig({"num_hidden_layers": 2}).to_dict()
    with pytest.raises(NeedsTransformers):
        getattr(StatedConfig({"head_dim": None}), "head_dim")  # noqa: B009 (the access is what is tested)
