"""Split experts (`hyperclone grow MOE OUT --experts 2E`) evaluated on a device: exactness, segment logits, ties.

For each of the tiny random Mixtral, OLMoE, Qwen2-MoE and Qwen3-MoE checkpoints of tests/tiny_models.py (4
experts, top-2), the experts are split x2 alone and with x2 width growth; both models are loaded by transformers
in float32 on --device and compared (max relative logit error, 32 greedy tokens), and the grown router's two
segments of each expert are checked for bitwise-equal logits. Then the documented exception: a tiny Mixtral whose
router rows 1 and 2 are equal, split x2: how many tokens of layer 0 tie at the k-th place, at how many the grown
top-4 takes the source's expert, and the logit error; and torch.topk's own tie-breaking on [0.2, 0.2, 0.4, 0.1]
(top-2) against its x2 split (top-4) on that device. The tests (tests/test_segment.py) run on the CPU; this is
for other devices (results/split_experts_cuda.json: an H200).

Usage: python benchmarks/split_experts.py [--device cuda] [--json results/split_experts_cuda.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = ("mixtral", "olmoe", "qwen2_moe", "qwen3_moe")


def split_cases(root: Path, device: str, tokens: torch.Tensor) -> list[dict]:
    from tiny_models import make_tiny

    from hyperclone.grow.engine import grow
    from hyperclone.grow.verify import compare_models, load_causal_lm

    cases = []
    for family in FAMILIES:
        for width in (1, 2):
            src = make_tiny(family, root / f"{family}{width}" / "src")
            out = grow(src, root / f"{family}{width}" / "out", width=width, experts=8, seed=5)
            source, grown = load_causal_lm(src).to(device), load_causal_lm(out).to(device)
            result = compare_models(source, grown)
            with torch.no_grad():
                logits = grown(tokens, output_router_logits=True).router_logits[0]
            cases.append({"family": family, "width": width, "rel_err": result.rel_err,
                          "generate_match": result.generate_match, "ok": result.ok,
                          "segment_logits_bitwise_equal": bool(torch.equal(logits[:, 0::2], logits[:, 1::2])),
                          "experts_implementation": getattr(grown.config, "_experts_implementation", None)})
            print(cases[-1], flush=True)
    return cases


def tie_case(root: Path, device: str, tokens: torch.Tensor) -> dict:
    from safetensors.torch import load_file, save_file
    from tiny_models import make_tiny

    from hyperclone.grow.engine import grow
    from hyperclone.grow.verify import compare_models, load_causal_lm

    src = make_tiny("mixtral", root / "tie" / "src")
    state = load_file(src / "model.safetensors")
    for layer in range(2):
        router = state[f"model.layers.{layer}.block_sparse_moe.gate.weight"]
        router[2] = router[1]
    save_file(state, src / "model.safetensors", metadata={"format": "pt"})
    out = grow(src, root / "tie" / "out", width=1, experts=8, seed=0)
    source, grown = load_causal_lm(src).to(device), load_causal_lm(out).to(device)
    with torch.no_grad():
        a = source(tokens, output_router_logits=True).router_logits[0]
        b = grown(tokens, output_router_logits=True).router_logits[0]
    chosen = a.float().softmax(-1).topk(2, -1).indices.cpu()
    segments = b.float().softmax(-1).topk(4, -1).indices.cpu()
    tied = (chosen == 1).any(-1) ^ (chosen == 2).any(-1)
    same = torch.tensor([set((s // 2).tolist()) == set(c.tolist()) for s, c in zip(segments, chosen, strict=True)])
    whole = torch.tensor([set(torch.bincount(s // 2, minlength=4).tolist()) <= {0, 2} for s in segments])
    result = compare_models(source, grown)
    p = torch.tensor([[0.2, 0.2, 0.4, 0.1]], device=device)
    return {"source_tie_bitwise": bool(torch.equal(a[:, 1], a[:, 2])), "tokens": len(chosen),
            "tied_tokens": int(tied.sum()), "tied_tokens_same_experts": int(same[tied].sum()),
            "untied_tokens": int((~tied).sum()), "untied_tokens_same_experts": int(same[~tied].sum()),
            "tokens_taking_whole_experts": int(whole.sum()), "rel_err": result.rel_err, "ok": result.ok,
            "topk2_of_0.2_0.2_0.4_0.1": p.topk(2, -1).indices.tolist()[0],
            "topk4_of_its_x2_split_as_experts": ((p.repeat_interleave(2, -1) / 2).topk(4, -1).indices // 2).tolist()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]
    import transformers

    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="hc-split-"))
    tokens = torch.randint(3, 97, (2, 24), generator=torch.Generator().manual_seed(0)).to(args.device)
    try:
        cases = split_cases(root, args.device, tokens)
        tie = tie_case(root, args.device, tokens)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(tie, flush=True)
    device = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else platform.processor() or "cpu"
    report = {"device": device, "torch": torch.__version__, "transformers": transformers.__version__,
              "date": time.strftime("%Y-%m-%d"), "max_rel_err": max(c["rel_err"] for c in cases), "cases": cases,
              "tie": tie, "seconds": round(time.perf_counter() - started, 1),
              "command": f"python benchmarks/split_experts.py --device {args.device}"}
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
