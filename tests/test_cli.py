"""The command line: bad input gives one line on stderr, exit status 2, no traceback, nothing at OUT."""

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_models import make_tiny

from hyperclone.cli import main


def run(argv, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


@pytest.fixture
def tiny(tmp_path) -> Path:
    return make_tiny("llama", tmp_path / "src")


def assert_clean_error(code, err, out_path: Path, fragment: str):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hyperclone: error:"), err
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in err
    assert not out_path.exists()
    assert not list(out_path.parent.glob(f".{out_path.name}*")), "temporary folder left behind"


def test_grow_then_verify_cli(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, _ = run(["grow", str(tiny), str(out), "--width", "3", "--ffn", "2", "--quiet"], capsys)
    assert code == 0 and out.is_dir()
    code, stdout, _ = run(["verify", str(tiny), str(out)], capsys)
    result = json.loads(stdout.strip().splitlines()[-1])
    assert code == 0 and result["ok"] and result["rel_err"] <= 1e-4
    assert set(result) >= {"max_abs_diff", "rel_err", "argmax_agreement", "kl"}


def test_verify_exits_1_when_function_differs(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    run(["grow", str(tiny), str(out), "--quiet"], capsys)
    from safetensors.torch import load_file, save_file

    state = load_file(out / "model.safetensors")
    state["model.layers.0.mlp.down_proj.weight"] += 0.5
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    code, stdout, _ = run(["verify", str(tiny), str(out)], capsys)
    assert code == 1
    assert json.loads(stdout.strip())["ok"] is False


def test_inspect_lists_growths(tiny, capsys):
    code, stdout, _ = run(["inspect", str(tiny), "--json"], capsys)
    info = json.loads(stdout)
    assert code == 0 and info["family"] == "llama" and info["dims"]["hidden"] == 48
    assert [g["hidden"] for g in info["growths"]] == [96, 144, 192]
    assert info["parameters"] == sum(p.numel() for p in torch.nn.Module.parameters(_load(tiny)))


def _load(folder):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder)


@pytest.mark.parametrize("args,fragment", [
    (["--width", "0"], "--width must be a positive integer"),
    (["--width", "-2"], "--width must be a positive integer"),
    (["--width", "1.5"], "--width"),
    (["--ffn", "0"], "--ffn must be a positive integer"),
    (["--mode", "wild"], "'wild' is not one of 'symmetric', 'noisy', 'diagonal'"),  # typed choices: the parser
    (["--tie", "maybe"], "'maybe' is not one of 'keep', 'untie'"),
    (["--mode", "symmetric", "--noise-db", "3"], "--noise-db only applies to --mode noisy"),
    (["--shard-size", "lots"], "--shard-size"),
])
def test_bad_factors_and_options(tiny, tmp_path, capsys, args, fragment):
    out = tmp_path / "out"
    code, _, err = run(["grow", str(tiny), str(out), *args], capsys)
    assert_clean_error(code, err, out, fragment)


def test_missing_source(tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run(["grow", str(tmp_path / "nope"), str(out)], capsys)
    assert_clean_error(code, err, out, "source not found")


def test_missing_config(tiny, tmp_path, capsys):
    (tiny / "config.json").unlink()
    out = tmp_path / "out"
    code, _, err = run(["grow", str(tiny), str(out)], capsys)
    assert_clean_error(code, err, out, "no config.json")


def test_unknown_family_lists_supported(tiny, tmp_path, capsys):
    config = json.loads((tiny / "config.json").read_text())
    config["model_type"] = "bert"
    (tiny / "config.json").write_text(json.dumps(config))
    out = tmp_path / "out"
    code, _, err = run(["grow", str(tiny), str(out)], capsys)
    assert_clean_error(code, err, out, "unsupported model family 'bert'; supported: afmoe, apertus, ")
    assert ", llama, " in err and ", qwen3_moe, " in err  # the whole list, sorted


def test_existing_output_untouched(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = run(["grow", str(tiny), str(out)], capsys)
    assert code == 2 and "already exists" in err and "--overwrite" in err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    code, _, _ = run(["grow", str(tiny), str(out), "--overwrite", "--quiet"], capsys)
    assert code == 0 and (out / "model.safetensors").exists() and not (out / "keep.txt").exists()


def test_truncated_safetensors(tiny, tmp_path, capsys):
    weights = tiny / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) - 100])
    out = tmp_path / "out"
    code, _, err = run(["grow", str(tiny), str(out)], capsys)
    assert_clean_error(code, err, out, "truncated")


def test_corrupt_safetensors_header(tiny, tmp_path, capsys):
    weights = tiny / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[8:20] = b"garbage!!!!!"
    weights.write_bytes(bytes(data))
    out = tmp_path / "out"
    code, _, err = run(["grow", str(tiny), str(out)], capsys)
    assert_clean_error(code, err, out, "corrupt")


def test_not_safetensors_at_all(tiny, tmp_path, capsys):
    (tiny / "model.safetensors").write_bytes(struct.pack("<Q", 10**12) + b"xx")
    out = tmp_path / "out"
    code, _, err = run(["grow", str(tiny), str(out)], capsys)
    assert_clean_error(code, err, out, "corrupt or truncated")


def test_config_and_weights_disagree(tiny, tmp_path, capsys):
    config = json.loads((tiny / "config.json").read_text())
    config["intermediate_size"] = 64
    (tiny / "config.json").write_text(json.dumps(config))
    out = tmp_path / "out"
    code, _, err = run(["grow", str(tiny), str(out)], capsys)
    assert_clean_error(code, err, out, "config and weights disagree")


def test_layer_count_disagrees(tiny, tmp_path, capsys):
    config = json.loads((tiny / "config.json").read_text())
    config["num_hidden_layers"] = 1
    (tiny / "config.json").write_text(json.dumps(config))
    out = tmp_path / "out"
    code, _, err = run(["grow", str(tiny), str(out)], capsys)
    assert_clean_error(code, err, out, "unexpected tensor")


def test_pickle_refused_unless_allowed(tiny, tmp_path, capsys):
    from safetensors.torch import load_file

    state = load_file(tiny / "model.safetensors")
    (tiny / "model.safetensors").unlink()
    torch.save(state, tiny / "pytorch_model.bin")
    out = tmp_path / "out"
    code, _, err = run(["grow", str(tiny), str(out)], capsys)
    assert_clean_error(code, err, out, "--allow-pickle")
    code, _, _ = run(["grow", str(tiny), str(out), "--allow-pickle", "--quiet"], capsys)
    assert code == 0 and (out / "model.safetensors").exists()
    code, stdout, _ = run(["verify", str(tiny), str(out)], capsys)
    assert code == 0


def test_console_script_has_no_traceback(tmp_path):
    """Through the real entry point, in a fresh process."""
    proc = subprocess.run([sys.executable, "-m", "hyperclone.cli", "grow", str(tmp_path / "nope"), str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"hyperclone: error: source not found: {tmp_path / 'nope'}"]


@pytest.mark.parametrize("verb", ["grow", "verify", "inspect", "convert", "train", "experiment"])
def test_every_verb_has_help(verb, capsys):
    code, stdout, _ = run([verb, "--help"], capsys)
    assert code == 0 and "Usage" in stdout


def test_grow_keeps_freed_memory_on_glibc():
    """The grow command's malloc setting (hyperclone.common.allocator) takes on glibc, where it was measured; it is
    tried in a process of its own, as the CLI's grow is."""
    import platform
    import subprocess
    import sys

    code = "from hyperclone.common.allocator import keep_freed_memory; print(keep_freed_memory())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    expected = "True" if platform.libc_ver()[0] == "glibc" else result.stdout.strip()
    assert result.stdout.strip() == expected


def test_train_options_default_to_the_config_dataclass():
    """Every default once: each `hyperclone train` option defaults to its TrainConfig field's default (the API,
    the CLI and sweep files read the same value), apart from the listed ones, each with its reason."""
    import enum
    import inspect as pyinspect
    from dataclasses import MISSING, fields

    from hyperclone.cli.train_verbs import train_command
    from hyperclone.common.sizes import parse_count
    from hyperclone.train.config import TrainConfig

    option_of = {"compile": "compile_blocks", "step_hook": "msg"}  # field -> option parameter
    not_options = {"extra": "free-form tags for the API and sweeps", "beta1": "AdamW betas: the API only",
                   "beta2": "AdamW betas: the API only"}
    differs = {"kd_alpha": "0.5 applies once --teacher is given; the field's 0.0 means no teacher",
               "step_hook": "--msg (off) sets the MSG hook; the field's None is no hook"}
    params = pyinspect.signature(train_command).parameters
    wrong = []
    for f in fields(TrainConfig):
        if f.default is MISSING and f.default_factory is MISSING:
            continue  # required: model, data, out, tokens
        if f.name in not_options:
            assert f.name not in params
            continue
        default = f.default if f.default is not MISSING else f.default_factory()
        option = params[option_of.get(f.name, f.name)].default
        option = option.value if isinstance(option, enum.Enum) else option
        if f.name in ("batch_tokens", "eval_tokens"):
            option = parse_count(option)
        if f.name in ("log", "lr_scale"):  # repeatable options: None means none given
            option = tuple(option or ())
        if f.name in differs:
            assert option != default, f"{f.name}: now equal, drop it from `differs`"
        elif option != default:
            wrong.append(f"{f.name}: --{option_of.get(f.name, f.name).replace('_', '-')} defaults to {option!r}, "
                         f"TrainConfig to {default!r}")
    assert not wrong, "\n".join(wrong)


def test_a_record_from_a_newer_version_is_refused_in_one_line(tiny, tmp_path, capsys):
    """verify --out-of-core re-plans the growth from hyperclone.json: options this version does not know are
    refused, not dropped (a plan without them would not be the one that made the folder)."""
    out = tmp_path / "out"
    assert run(["grow", str(tiny), str(out), "--width", "2"], capsys)[0] == 0
    record = json.loads((out / "hyperclone.json").read_text())
    record["spec"]["future_option"] = 3
    (out / "hyperclone.json").write_text(json.dumps(record))
    code, _, err = run(["verify", str(tiny), str(out), "--out-of-core"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "does not know (future_option)" in err and "newer version" in err


def test_inspect_shows_latent_attention_and_layer_kinds(tmp_path, capsys):
    src = make_tiny("deepseek_v3", tmp_path / "src")
    code, out, _ = run(["inspect", str(src)], capsys)
    dims = next(line for line in out.splitlines() if line.startswith("dimensions"))
    assert code == 0 and "latent attention: q LoRA 24, kv LoRA 16, rope 4" in dims and "value 6 per head" in dims
    assert dims.endswith("layer kinds dense moe moe")
