"""Every family's growth evaluated on another device and transformers version: exactness there, or why not.

For each family of tests/tiny_models.py (tiny random checkpoints, every parameter random), and each of its named
layout variants (TINY_VARIANTS: falcon-7b, Falcon's old multi-query architecture), the checkpoint is grown x2 (noisy
mode, MLP x3) and x3 (uneven mode; a family whose hidden size is fixed, XGLM: its MLP alone), both models are loaded
by the transformers installed there in float32 on --device and compared (max relative logit error <= 1e-4 of the
logits' magnitude, 32 greedy tokens with the KV cache: hyperclone.grow.verify.compare_models). A family that
transformers version cannot build or load is recorded with its one-line reason instead of a result. The test suite
runs the same checks on the CPU with the pinned transformers; this is for the GPU machine and its own library
versions (results/families_cuda.json: an H200).

Usage: python benchmarks/families_device.py [--device cuda] [--families a,b] [--json results/families_cuda.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

CASES = ({"width": 2, "ffn": 3, "mode": "noisy", "noise_db": 0.0}, {"width": 3, "ffn": 3, "mode": "uneven"})


def one_family(family: str, root: Path, device: str) -> dict:
    from tiny_models import HIDDEN_FIXED, TINY_VARIANTS, make_tiny

    from hyperclone.grow.engine import grow
    from hyperclone.grow.verify import compare_models, load_causal_lm

    try:
        model_type, overrides = TINY_VARIANTS.get(family, (family, {}))
        src = make_tiny(model_type, root / family / "src", **overrides)
    except Exception as exc:  # this transformers cannot build the family (too old, or a changed config)
        return {"family": family, "skipped": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
    cases = []
    for i, options in enumerate(CASES):
        if family in HIDDEN_FIXED:  # its hidden size cannot grow (XGLM's sinusoidal positions): the MLP alone
            options = {**options, "width": 1}
        out = grow(src, root / family / f"out{i}", seed=3, **options)
        try:
            source, grown = load_causal_lm(src).to(device), load_causal_lm(out).to(device)
            result = compare_models(source, grown)
        except Exception as exc:
            cases.append({**options, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"})
            continue
        cases.append({**options, "rel_err": result.rel_err, "generate_match": result.generate_match,
                      "ok": result.ok})
    return {"family": family, "cases": cases}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--families", default=None,
                        help="comma-separated families or variants (falcon-7b); default: every one")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    import transformers
    from tiny_models import TINY_CONFIGS, TINY_VARIANTS

    families = args.families.split(",") if args.families else sorted(TINY_CONFIGS) + sorted(TINY_VARIANTS)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        results = []
        for family in families:
            results.append(one_family(family, Path(tmp), args.device))
            print(json.dumps(results[-1]), flush=True)
    ran = [c for r in results for c in r.get("cases", ()) if "rel_err" in c]
    report = {
        "benchmark": "families_device",
        "device": (torch.cuda.get_device_name(0) if args.device.startswith("cuda")
                   else platform.processor() or platform.machine()),
        "torch": torch.__version__, "transformers": transformers.__version__,
        "date": time.strftime("%Y-%m-%d"), "seconds": round(time.perf_counter() - t0, 1),
        "families": len(families), "cases": len(ran), "exact": sum(c["ok"] for c in ran),
        "max_rel_err": max((c["rel_err"] for c in ran), default=None),
        "not_exact": [(r["family"], c) for r in results for c in r.get("cases", ()) if not c.get("ok", False)],
        "skipped": {r["family"]: r["skipped"] for r in results if "skipped" in r},
        "results": results,
        "command": "python benchmarks/families_device.py" + (f" --device {args.device}" if args.device else ""),
    }
    text = json.dumps(report, indent=1)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(json.dumps({k: report[k] for k in ("device", "transformers", "families", "cases", "exact", "max_rel_err",
                                             "skipped", "seconds")}))


if __name__ == "__main__":
    main()
