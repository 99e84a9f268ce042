"""`hyperclone inspect`: what a checkpoint is and what the legal growths would give."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hyperclone.plan import GrowthSpec, make_plan
from hyperclone.source import open_source, source_folder


def inspect_checkpoint(src: str | Path, max_width: int = 4, allow_pickle: bool = False) -> dict[str, Any]:
    with source_folder(src) as folder:
        source = open_source(folder, allow_pickle=allow_pickle)
        base = make_plan(source.family, source.config, source.weights.infos, GrowthSpec(width=1, ffn=1))
        dtypes = sorted({str(i.dtype).removeprefix("torch.") for i in source.weights.infos.values()})
        growths = []
        for width in range(2, max_width + 1):
            plan = make_plan(source.family, source.config, source.weights.infos, GrowthSpec(width=width))
            growths.append({"width": width, "ffn": width, "hidden": plan.grown.hidden, "ffn_size": plan.grown.ffn,
                            "heads": plan.grown.heads, "kv_heads": plan.grown.kv_heads,
                            "parameters": plan.grown_parameters,
                            "output_bytes": sum(t.nbytes for t in plan.outputs)})
        summary = base.summary()
        return {"source": str(src), "family": source.family.model_type, "dims": summary["source"],
                "tied_embeddings": base.tied_source, "parameters": base.source_parameters, "dtypes": dtypes,
                "growths": growths}


def format_inspection(info: dict[str, Any]) -> str:
    dims = info["dims"]
    lines = [
        f"source      {info['source']}",
        f"family      {info['family']}",
        f"parameters  {info['parameters']:,} ({', '.join(info['dtypes'])})",
        f"dimensions  hidden {dims['hidden']}, ffn {dims['ffn']}, heads {dims['heads']}, "
        f"kv heads {dims['kv_heads']}, head_dim {dims['head_dim']}, layers {dims['layers']}, vocab {dims['vocab']}",
        f"tied        {'yes' if info['tied_embeddings'] else 'no'}",
        "",
        "legal growths (any positive integers --width N --ffn M; N = M shown):",
        f"  {'width':>5} {'hidden':>7} {'ffn':>7} {'heads':>5} {'kv':>4} {'parameters':>15} {'output':>10}",
    ]
    for g in info["growths"]:
        lines.append(f"  {g['width']:>5} {g['hidden']:>7} {g['ffn_size']:>7} {g['heads']:>5} {g['kv_heads']:>4} "
                     f"{g['parameters']:>15,} {g['output_bytes'] / 1e9:>8.2f}GB")
    return "\n".join(lines)
