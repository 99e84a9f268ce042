"""The model card (README.md with Hugging Face front matter) written into every grown folder, so a grown model
that is uploaded says where it came from, what was done to it, and whether it computes the source's function."""

from __future__ import annotations

import json
from typing import Any

CARD_FILE = "README.md"
VERIFY_START, VERIFY_END = "<!-- hyperclone verify -->", "<!-- /hyperclone verify -->"


def _yaml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid YAML scalar


def model_card(record: dict[str, Any], command: str | None) -> str:
    """README.md for a grown folder, from its hyperclone.json record."""
    src, new, spec = record["source"], record["grown"], record["spec"]
    base = record["source_path"]
    level = spec["noise_db"] if spec["noise_db"] is not None else 0
    mode = spec["mode"] + {"noisy": f", zero-sum noise at {level} dB",
                           "uneven": f", uneven shares of each copied neuron at {level} dB"}.get(spec["mode"], "")
    exact = ("yes: evaluated in float32 it computes the source's function (to accumulation error)"
             if record["function_preserving"] else
             "no: " + ("; ".join(record["inexact_reasons"]) if record["inexact_reasons"]
                       else "layers stacked (G_stack), which is not function-preserving"))
    wrapper = record.get("wrapper")  # a multimodal checkpoint: its language model grew (hyperclone.grow.wrapper)
    what = f"{wrapper} (language model: {record['family']})" if wrapper else record["family"]
    loader = ("`AutoModelForImageTextToText.from_pretrained`; its vision tower is the source's, unchanged"
              if wrapper else "`AutoModelForCausalLM.from_pretrained`")
    rows = "\n".join(f"| {key} | {src[key]} | {new[key]} |" for key in ("hidden", "ffn", "heads", "kv_heads",
                                                                        "head_dim", "layers", "vocab")
                     if src[key] is not None)
    lines = [
        "---",
        f"base_model: {_yaml_string(base)}",
        "library_name: transformers",
        *(["pipeline_tag: image-text-to-text"] if wrapper else []),
        "tags:",
        "- hyperclone",
        "- model-growth",
        "---",
        "",
        f"# {what} grown from {base}",
        "",
        f"This checkpoint was grown from `{base}` with [hyperclone](https://pypi.org/project/hyperclone/) "
        f"{record['hyperclone_version']} (HyperCloning, Samragh et al., arXiv 2409.12903): a wider and/or deeper "
        f"model initialised from the smaller one. It is a plain transformers checkpoint ({loader}).",
        "",
        "| dimension | source | grown |",
        "|---|---:|---:|",
        rows,
        "",
        f"- parameters: {record['source_parameters']:,} → {record['grown_parameters']:,}",
        f"- weights: {mode}; tied embeddings: {spec['tie']}; new layers: {spec['depth_mode']}; "
        f"dtype written: {', '.join(record['output_dtypes'])}",
        f"- function-preserving: {exact}",
        *[f"- note: {note}" for note in record["notes"]],
        "",
        "Reproduce:",
        "",
        "```bash",
        command or f"hyperclone grow {base} OUT  # options: see hyperclone.json",
        "```",
        "",
        VERIFY_START,
        "Not verified yet: run `hyperclone verify SOURCE THIS_FOLDER`.",
        VERIFY_END,
        "",
    ]
    return "\n".join(lines)


def with_verification(card: str, result: dict[str, Any], command: str) -> str:
    """The card with its verification section replaced by verify's figures."""
    if VERIFY_START not in card or VERIFY_END not in card:
        return card
    head, rest = card.split(VERIFY_START, 1)
    _, tail = rest.split(VERIFY_END, 1)
    keys = ("rel_err", "max_abs_diff", "argmax_agreement", "kl", "generate_match", "length", "tolerance", "ok",
            "worst_block", "block_rel_err")
    figures = ", ".join(f"{k} {result[k]:.3g}" if isinstance(result[k], float) else f"{k} {result[k]}"
                        for k in keys if k in result and k != "block_rel_err")
    text = (f"Verified with `{command}` (both models in float32): {figures}.")
    return head + VERIFY_START + "\n" + text + "\n" + VERIFY_END + tail
