"""Write the measured tables of README.md and docs/*.md from the committed results files, so every figure is
reproduced.

Each block between `<!-- table: NAME -->` and `<!-- /table -->` is the output of the function NAME below, fed
only by files under results/. Run after a benchmark or experiment rewrites its results:

    python benchmarks/readme_tables.py           # rewrite the blocks in README.md and docs/*.md
    python benchmarks/readme_tables.py --check   # exit 1 if a block differs (tests/test_layout.py runs this)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"


def load(path: str) -> dict:
    return json.loads((RESULTS / path).read_text())


def pm(stats: dict, digits: int = 3) -> str:
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


def duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def fidelity() -> str:
    data = load("fidelity_smollm2.json")
    lines = ["| source | growth | dtype written | max\\|Δlogit\\| | max\\|logit\\| | relative | argmax agreement "
             "| 32 greedy tokens | verify |", "|---|---|---|---:|---:|---:|---:|---|---|"]
    for row in data["rows"]:
        lines.append(f"| SmolLM2-135M {row['source_dtype']} | {row['label']} | {', '.join(row['output_dtypes'])} | "
                     f"{row['max_abs_diff']:.2e} | {row['max_abs_logit']:.1f} | {row['rel_err']:.1e} | "
                     f"{row['argmax_agreement']:.1%} | {'identical' if row['generate_match'] else 'differ'} | "
                     f"{'ok' if row['ok'] else 'FAILS (exit 1)'} |")
    lines.append("")
    lines.append(f"Measured {data['date']} on the development VM ({data['machine']}, torch {data['torch']}, "
                 f"transformers {data['transformers']}), both models evaluated in float32 on "
                 f"{data['rows'][0]['length']}-token inputs: `{data['command']}` (`results/fidelity_smollm2.json`).")
    return "\n".join(lines)


def bench_verify() -> str:
    data = load("bench_verify.json")
    shape = data["shape"]
    return "\n".join([
        "| checkpoint | grown size | blocks | verify wall s | verify peak RSS GiB | worst block rel. error | "
        "logits rel. error | verdict |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
        f"| 1.1B-shaped bf16 Llama (hidden {shape['hidden_size']}, {shape['num_hidden_layers']} layers) grown 2× | "
        f"{data['grown_gb']:.2f} GB | {data['blocks']} | {data['verify_s']:.1f} | {data['verify_peak_rss_gib']:.2f} | "
        f"{data['worst_block_rel_err']:.1e} | {data['logits_rel_err']:.1e} | {'ok' if data['ok'] else 'FAILS'} |",
        "",
        f"Measured {data['date']} on {data['machine']} (torch {data['torch']}): `{data['command']}`. The in-memory "
        f"verify would hold both models in float32 (about {4 * data['source_gb'] / 2:.1f} + "
        f"{4 * data['grown_gb'] / 2:.1f} GB).",
    ])


def bench_grow() -> str:
    data = load("bench_grow.json")
    lines = ["| shape | method | source GB | output GB | wall s (rounds) | dd buffered s | dd direct s | "
             "fastest wall / fastest dd | peak RSS GiB | bound GiB |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in data["rows"]:
        def joined(values: list[float]) -> str:
            return " / ".join(f"{x:.1f}" for x in values)

        lines.append(f"| {r['layers']} layers | {r['method']} | {r['source_gb']:.2f} | {r['output_gb']:.2f} | "
                     f"{joined(r['seconds_runs'])} | {joined(r['dd_runs']['buffered'])} | "
                     f"{joined(r['dd_runs']['direct'])} | {r['time_vs_dd']:.2f} | {r['peak_rss_gib']:.2f} | "
                     f"{r['rss_bound_gib']:.2f} |")
    lines += ["", f"Measured {data['date']} on {data['machine']}: `python benchmarks/bench_grow.py --json "
              "results/bench_grow.json` (`results/bench_grow.json`)."]
    return "\n".join(lines)


def bench_write() -> str:
    data = load("bench_write.json")
    plain, stream = data["seconds"]["plain"], data["seconds"]["stream_file"]
    return (f"`python benchmarks/bench_write.py --json results/bench_write.json`: {data['bytes'] / 1e9:.1f} GB in "
            f"{' / '.join(f'{s:.1f}' for s in plain)} s written plainly, "
            f"{' / '.join(f'{s:.1f}' for s in stream)} s through StreamFile ({data['machine']}, {data['date']}).")


def cpu_tiny() -> str:
    data = load("cpu-tiny/results.json")
    arms, spread = data["arms"], data["seed_spread"]["final_val_loss"]
    names = {"random": "random init", "grown": f"grown ({data.get('grow_mode', 'symmetric')} HyperCloning)",
             "grown-half": "grown, ½ budget", "grown-quarter": "grown, ¼ budget", "small": "small model (pretraining)"}
    lines = ["| arm | token budget | seeds | final val loss |", "|---|---:|---:|---:|"]
    for name in ("random", "grown", "grown-half", "grown-quarter", "small"):
        arm = arms[name]
        seeds = len(arm["seeds"])
        loss = (pm(spread[name]) if name in spread and seeds > 1 else
                f"{next(iter(arm['seeds'].values()))['final_val_loss']:.3f}")
        lines.append(f"| {names[name]} | {arm['budget_tokens']:,} | {seeds} | {loss} |")
    per_seed = ", ".join(f"{s['speedup_tokens']:.2f}" for s in data["per_seed"])
    gap = 1 - spread["grown"]["mean"] / spread["random"]["mean"]
    grow_text = (f"growth took {data['grow_s']:.1f} s and is included" if data["grow_s"] > 0 else
                 "growth time was not recorded by this run (it is now: `grow_s` in every grown model's "
                 "hyperclone.json), so it is not included")
    lines += ["",
              f"- `speedup_tokens` = **{data['speedup_tokens']:.2f}** (per seed against the same random seed: "
              f"{per_seed}); the grown model ends {gap:.1%} below random.",
              f"- Counting the small model's pretraining: `speedup_flops` = {data['speedup_flops']:.2f}, "
              f"`speedup_tokens_incl_small` = {data['speedup_tokens_incl_small']:.2f}, wall-clock "
              f"{data['speedup_wall_clock_incl_small']:.2f} ({grow_text}).",
              f"- Whole experiment {duration(data['wall_clock_s'])} ({data['machine']}, {data['date']}): "
              f"`{data['command']}`."]
    return "\n".join(lines)


SWEEP_ROWS = [
    ("random-lr0.002", "random init, cosine (LR search: 1e-3 / 2e-3 / 4e-3)"),
    ("random-wsd-lr0.002", "**random init, WSD (best random)**"),
    ("grown-lr0.002", "grown symmetric (HyperCloning as is), cosine"),
    ("noisy0db-lr2e-3", "**grown, 0 dB zero-sum noise, cosine (winner)**"),
    ("noisy0db-wsd-lr2e-3", "grown, 0 dB noise, WSD"),
]


def sweep_cpu_tiny() -> str:
    data = load("sweep-cpu-tiny/sweep.json")
    lines = ["| recipe (×2 width) | peak lr | seeds | final val loss | speedup_tokens vs best random "
             "(seed-mean curves; per seed) |", "|---|---:|---|---:|---:|"]
    for name, label in SWEEP_ROWS:
        arm = data["arms"][name]
        vs = arm.get("vs_best_random") or {}
        speed = "—"
        if vs.get("speedup_tokens") is not None:
            per = vs["speedup_tokens_per_seed"]
            speed = f"{vs['speedup_tokens']:.2f} ({per['mean']:.2f} ± {per['std']:.2f})"
        lines.append(f"| {label} | {arm['lr']:g} | {','.join(map(str, arm['seeds']))} | "
                     f"{pm(arm['final_val_loss'])} | {speed} |")
    w4r, w4 = data["arms"][data["best_random"]["4"]], data["arms"][data["winner"]["4"]]
    lines += ["", f"At 4× width (seed 0): best random ({w4r['lr']:g}) {w4r['final_val_loss']['mean']:.3f}, grown with "
              f"0 dB noise {w4['final_val_loss']['mean']:.3f}, speedup_tokens "
              f"{w4['vs_best_random']['speedup_tokens']:.2f}, speedup_flops (small model charged) "
              f"{w4['vs_best_random']['speedup_flops']:.2f}.",
              f"Sweep wall time {duration(data['wall_clock_s'])} over every invocation ({data['machine']}, "
              f"{data['date']}): `{data['command']}`."]
    return "\n".join(lines)


OTHERS = [("noisy0db", "0 dB noise"), ("noisy-5db", "−5 dB noise"), ("wsd", "WSD"), ("carry", "carried AdamW moments"),
          ("carry-reset1", "carried moments, first moment reset"), ("nowarm", "no re-warmup"),
          ("diagonal", "diagonal blocks"), ("grown-lr0.0005", "symmetric at 5e-4"),
          ("grown-lr0.004", "symmetric at 4e-3")]


def sweep_others() -> str:
    data = load("sweep-cpu-tiny/sweep.json")
    base = data["arms"]["grown-lr0.001"]["final_val_loss"]["mean"]
    parts = [f"{label} {data['arms'][name]['final_val_loss']['per_seed'][0]:.3f}" for name, label in OTHERS]
    return (f"What else was tried (seed 0, peak lr 1e-3 unless said; symmetric grown at 1e-3 ends at {base:.3f}): "
            + ", ".join(parts) + ".")


def headtohead() -> str:
    data = load("headtohead-cpu-tiny/results.json")
    h2h = data["headtohead"]
    lines = [f"| arm | val loss at step 0 | final val loss | tokens to random's final loss "
             f"({h2h['target_val_loss']:.3f}) | speedup_tokens | speedup_flops incl. small | tokens to "
             f"{h2h['growth_target_val_loss']:.3f} (MSG's final) | vs MSG |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    order = sorted(h2h["arms"], key=lambda a: h2h["arms"][a]["final_val_loss"]["mean"])
    for name in order:
        arm = h2h["arms"][name]
        to_target = ("0 (at start)" if arm["reached_at_start"] else
                     "never" if arm["tokens_to_target"] is None else f"{arm['tokens_to_target']:,.0f}")
        speed = "∞" if arm["reached_at_start"] else ("—" if arm["speedup_tokens"] is None
                                                     else f"{arm['speedup_tokens']:.2f}")
        growth = "never" if arm["tokens_to_growth_target"] is None else f"{arm['tokens_to_growth_target']:,.0f}"
        vs_msg = "—" if arm["speedup_tokens_vs_msg"] is None else f"{arm['speedup_tokens_vs_msg']:.2f}"
        lines.append(f"| {name} | {arm['start_val_loss']:.3f} | {pm(arm['final_val_loss'])} | {to_target} | "
                     f"{speed} | {arm['speedup_flops_incl_small']:.2f} | {growth} | {vs_msg} |")
    staged = load("headtohead-cpu-tiny/msg_staged.json")
    staged_arm = staged["arms"]["msg-staged"]
    check = load("headtohead-cpu-tiny/random_lr_check.json")
    lrs = ", ".join(f"{arm['lr']:g}: {arm['final_val_loss']['mean']:.3f}" for arm in check["arms"].values())
    random_seed0 = h2h["arms"]["random"]["final_val_loss"]["per_seed"][0]
    lines += ["",
              f"Whole head-to-head {duration(data['wall_clock_s'])} ({data['machine']}, {data['date']}): "
              f"`{data['command']}`. Staged MSG (width from step 0, layers from 25% of the run): "
              f"{pm(staged_arm['final_val_loss'])} (`results/headtohead-cpu-tiny/msg_staged.md`, "
              f"{duration(staged['wall_clock_s'])} of training). Random init's learning rate, seed 0: {lrs}, "
              f"against {random_seed0:.3f} at 0.002 (`results/headtohead-cpu-tiny/random_lr_check.md`)."]
    return "\n".join(lines)


def headtohead_moe() -> str:
    data = load("headtohead-moe-cpu-tiny/results.json")
    h2h = data["headtohead"]
    shapes = data["models"]["shapes"]
    lines = [f"| arm | shape | parameters (active) | val loss at step 0 | final val loss | speedup_tokens vs random "
             f"({h2h['target_val_loss']:.3f}) | speedup vs random-moe | speedup_flops incl. small |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name in sorted(h2h["arms"], key=lambda a: h2h["arms"][a]["final_val_loss"]["mean"]):
        arm, shape = h2h["arms"][name], data["arms"][name]["shape"]
        stats = shapes[shape]
        speed = "∞" if arm["reached_at_start"] else ("—" if arm["speedup_tokens"] is None
                                                     else f"{arm['speedup_tokens']:.2f}")
        vs_moe = arm.get("speedup_tokens_vs_random_moe")
        vs_moe = ("baseline" if name == "random-moe" else "∞" if arm.get("reached_random_moe_at_start")
                  else "—" if vs_moe is None else f"{vs_moe:.2f}")
        flops = arm["speedup_flops_incl_small"]
        lines.append(f"| {name} | {shape} | {stats['params']:,} ({stats['active_params']:,}) | "
                     f"{arm['start_val_loss']:.3f} | {pm(arm['final_val_loss'])} | {speed} | {vs_moe} | "
                     f"{'—' if flops is None else f'{flops:.2f}'} |")
    lines += ["", f"Whole run {duration(data['wall_clock_s'])} ({data['machine']}, {data['date']}): "
              f"`{data['command']}` (`results/headtohead-moe-cpu-tiny/report.md`)."]
    return "\n".join(lines)


def bench_startup() -> str:
    data = load("bench_startup.json")
    lines = ["| what runs | median s |", "|---|---:|"]
    lines += [f"| `{name}` | {sec:.2f} |" for name, sec in data["median_s"].items()]
    lines += ["", f"grow's fixed cost above `import torch`: {data['grow_minus_import_torch_s']:.2f} s. Median of "
              f"{data['runs']} fresh processes per row, interleaved; {data['machine']}, Python {data['python']}, "
              f"{data['date']}: `{data['command']}`."]
    return "\n".join(lines)


def bench_train_strategies() -> str:
    data = load("bench_train_strategies.json")
    m = data["model"]
    lines = ["| strategy | processes | tokens/s | peak RSS per process, GiB | weights + AdamW state per process, GiB |",
             "|---|---:|---:|---:|---:|"]
    for r in data["rows"]:
        lines.append(f"| {r['strategy']} | {r['processes']} | {r['tokens_per_s']:,.0f} | "
                     f"{' / '.join(f'{x:.2f}' for x in r['peak_rss_gib'])} | "
                     f"{' / '.join(f'{x:.3f}' for x in r['state_gib'])} |")
    lines += ["", f"Llama, hidden {m['hidden']}, {m['layers']} layers, {m['parameters'] / 1e6:.1f}M parameters, "
              f"{data['batch_tokens']:,} tokens per step (sequences of {data['seq_len']}), fp32 on gloo, one torch "
              f"thread per process; tokens/s from the wall-time difference of a 5-step and a "
              f"{5 + data['timed_steps']}-step run. Measured {data['date']} on {data['machine']}: "
              f"`{data['command']}`."]
    return "\n".join(lines)


def dry_run_1b_x2() -> str:
    """Not a measurement: the dry run's arithmetic for the 1.1B-shaped Llama of the growth benchmark grown 2x."""
    import tempfile

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_grow import llama_config

    from hyperclone.train.plan_memory import dry_run_report

    config = llama_config(4096, 11264, 22, 64, 8, 32000)  # bench_grow's 1.1B shape grown 2x
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "config.json").write_text(json.dumps(config))
        text = dry_run_report(Path(folder), 524288, 2048, 8).replace(folder, "llama-1.1b-x2")
    return "```\n$ hyperclone train llama-1.1b-x2 --data DIR --out RUN --tokens 10B --batch-tokens 512K " \
           "--seq-len 2048 --dry-run --processes 8\n" + text + "\n```"


def ladder() -> str:
    from hyperclone.experiments import ladder as ladder_report

    data = load("cpu-ladder/ladder.json")
    pending = sum(len(row["pending"]) for row in data["budgets"])
    lines = ladder_report.table(data)
    lines += ["", f"{f'{pending} runs are pending' if pending else 'Every run has finished'} "
              f"(`results/cpu-ladder/ladder.md`). "
              f"{data.get('machine', '')}, {data.get('date', '')}: `{data.get('command', '')}`."]
    return "\n".join(lines)


def _search(path: str) -> str:
    from hyperclone.experiments import ladder_search

    data = load(path)
    lines = ladder_search.table(data)
    frontier = ladder_search.frontier_text(data)
    lines += ["", f"Random init's frontier (budget: final loss at its best learning rate or schedule): {frontier}. "
              f"{data.get('machine', '')}, {data.get('date', '')}: `{data.get('command', '')}` "
              f"(`results/{Path(path).with_suffix('.md')}`)."]
    return "\n".join(lines)


def ladder_search() -> str:
    return _search("cpu-ladder/search.json")


def prose() -> str:
    return _search("prose-confirm/search.json")


def keep() -> str:
    return _search("cpu-ladder/keep.json")


def ladder_lrgroups() -> str:
    """The ladder's table read again on random init's frontier searched with per-group learning rates too."""
    from hyperclone.experiments import ladder

    rungs = load("cpu-ladder/ladder.json")["budgets"]
    data = load("cpu-ladder/lrgroups.json")
    recipes = data["random_recipes"]

    lines = ["| budget (tokens) | tokens / parameter | random, one rate (ladder) | random, matrices at half "
             "the peak | default: final loss | speed-up, ladder's frontier | speed-up, best frontier | grown, "
             "matrices at half the peak | its speed-up |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for rung in rungs:
        budget = rung["budget_tokens"]
        same = [r for r in data["arms"] if r["budget_tokens"] == budget]
        default = next((r for r in same if r["arm"] == rung["grown_arm"]), None)
        split = [r for r in same if r.get("lr_scale") and r["mean"] is not None]
        best_split = min(split, key=lambda r: r["mean"]) if split else None
        random_split = {a: f for a, f in data["random_finals"].items()
                        if recipes[a]["lr_scale"] and recipes[a]["budget_tokens"] == budget}
        split_random = min(random_split.items(), key=lambda kv: kv[1].get("0", float("inf")), default=None)  # seed 0
        lines.append(
            f"| {budget:,} | {rung['tokens_per_parameter']:.1f} | {ladder.losses_text(rung['random_final'])} | "
            f"{ladder.losses_text(split_random[1]) if split_random else '—'} | "
            f"{ladder.losses_text(rung['grown_final'])} | {ladder.speed_text(rung)} | "
            f"{ladder.speed_text(default) if default else '—'} | "
            + (f"{ladder.losses_text(best_split['final'])} | {ladder.speed_text(best_split)} |"
               if best_split else "— | — |"))
    lines += ["", f"Frontier searched with both: {data.get('machine', '')}, {data.get('date', '')}: "
              f"`{data.get('command', '')}` (`results/cpu-ladder/lrgroups.md`)."]
    return "\n".join(lines)


KEEP_LEADS = ("grown-16m-lr0.002", "last-small12.8m", "last-small51.2m", "keep-default-3.2m")


def keep_diagnosis() -> str:
    """The lead over random init of the ladder's default and the better small models, and the copy divergence."""
    data = load("cpu-ladder/keep.json")
    diag = data["diagnosis"]
    rows = {r["arm"]: r for r in data["arms"]}
    fracs = list(next(iter(diag["lead"].values()))["lead"])
    lines = ["| arm | small model | head start at step 0 (validation frontier) | "
             + " | ".join(f"lead at {float(f):.0%} (training loss)" for f in fracs) + " | random peer (seeds) |",
             "|---|---:|---:|" + "---:|" * len(fracs) + "---|"]
    for name in KEEP_LEADS:
        if name in diag["lead"]:
            entry, row = diag["lead"][name], rows[name]
            cells = ["—" if v is None else f"{v / 1e6:+.2f}M" for v in entry["lead"].values()]
            start = row.get("head_start_tokens")
            lines.append(f"| {name} | {row['small_tokens'] / 1e6:g}M tokens | "
                         f"{'—' if start is None else format(start / 1e6, '.2f') + 'M'} | " + " | ".join(cells)
                         + f" | {entry['random_arm']} ({entry['seeds']}) |")
    speed = diag["learning_speed"].get("16000000", {}).get("speed", {}).get("train", {})
    names = [n for n in ("random-16m-lr0.002", "grown-16m-lr0.002", "last-small12.8m", "last-small51.2m") if n in speed]
    levels = [lv for lv in ("2.80", "2.70", "2.60") if any(lv in speed[n] for n in names)]
    if names and levels:
        lines += ["", "Tokens to fall 0.1 from training loss L at the peak learning rate, 16M-token runs (seed means):",
                  "",
                  "| L | " + " | ".join(names) + " |", "|---:|" + "---:|" * len(names)]
        lines += [f"| {lv} | " + " | ".join(f"{speed[n][lv] / 1e6:.2f}M" if lv in speed[n] else "—" for n in names)
                  + " |" for lv in levels]
    if "grown-3.2m-lr0.002" in rows and "keep-default-3.2m" in rows:
        old, new = rows["grown-3.2m-lr0.002"], rows["keep-default-3.2m"]
        lines += ["", "The same run on two machines (the ladder's grown-3.2m seed 0, and keep-default-3.2m here: same "
                  f"data, seed and recipe): final validation loss {old['final']['0']:.4f} against "
                  f"{new['final']['0']:.4f}, training loss over the last 10 logs {old['final_train']['0']:.4f} against "
                  f"{new['final_train']['0']:.4f}."]
    summ = diag["divergence_summary"].get("keep-default-3.2m")
    if summ:
        a, b = summ["start"], summ["end"]
        lines += ["", f"Copy divergence of the default at 3.2M tokens (seed 0): hidden-unit cosine "
                  f"{a['activation_mean']:.3f} at step 0, {b['activation_mean']:.3f} at the end (lowest layer "
                  f"{b['activation_min']:.3f}); copied weight rows {a['weights_mean']:.3f} → {b['weights_mean']:.3f}."]
    lines += ["", f"{data.get('machine', '')}, {data.get('date', '')}: `{data.get('command', '')}` "
              "(`results/cpu-ladder/keep.md`)."]
    return "\n".join(lines)


def fuzz() -> str:
    data = load("fuzz_safetensors.json")
    return "\n".join([
        "| cases | refused as the library refuses | accepted, tensors equal | disagreements | tracebacks | "
        "multi-line errors |", "|---:|---:|---:|---:|---:|---:|",
        f"| {data['cases']:,} | {data['refused_as_reference']:,} | {data['accepted_and_equal']:,} | "
        f"{data['disagreements']} | {data['tracebacks']} | {data['multi_line_errors']} |", "",
        f"safetensors {data['safetensors']}, torch {data['torch']}, {data['machine']}, {data['date']}, "
        f"{data['seconds']:.0f} s: `{data['command']}` (`results/fuzz_safetensors.json`)."])


def fuzz_index() -> str:
    data = load("fuzz_index.json")
    return "\n".join([
        "| cases | refused as transformers refuses | accepted, tensors equal | refused by a stricter rule | "
        "disagreements | tracebacks | multi-line errors |", "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {data['cases']:,} | {data['refused_as_reference']:,} | {data['accepted_and_equal']:,} | "
        f"{data['refused_by_rule']:,} | {data['disagreements']} | {data['tracebacks']} | {data['multi_line_errors']} |",
        "", f"transformers {data['transformers']}, safetensors {data['safetensors']}, torch {data['torch']}, "
        f"{data['machine']}, {data['date']}, {data['seconds']:.0f} s: `{data['command']}` "
        "(`results/fuzz_index.json`)."])


def fuzz_gguf() -> str:
    data = load("fuzz_gguf.json")
    return "\n".join([
        "| cases | refused as transformers refuses | accepted, tensors equal | refused by a stricter rule | "
        "disagreements | tracebacks | multi-line errors | output left behind |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {data['cases']:,} | {data['refused_as_reference']:,} | {data['accepted_and_equal']:,} | "
        f"{data['refused_by_rule']:,} | {data['disagreements']} | {data['tracebacks']} | {data['multi_line_errors']} | "
        f"{data['left_output']} |",
        "", f"transformers {data['transformers']}, gguf {data['gguf']}, torch {data['torch']}, "
        f"{data['machine']}, {data['date']}, {data['seconds']:.0f} s: `{data['command']}` "
        "(`results/fuzz_gguf.json`)."])


def test_suite() -> str:
    data = load("test_suite.json")
    return (f"`make test` from a fresh clone (`bash .ci/run`: install into a new .venv, then the tests) took "
            f"{duration(data['ci_wall_s'])}, of which pytest {duration(data['pytest_s'])} ({data['pytest_summary']}), "
            f"on {data['machine']}{busy(data)}, {data['date']}, commit {data['commit']}: `{data['command']}`.")


def busy(data: dict) -> str:
    """The machine's load when the run started, where it was recorded and other work was running."""
    load = data.get("load_average_at_start")
    return f" (load average {load:.1f} at the start)" if load and load >= 1.0 else ""


BLOCKS = {f.__name__: f for f in (dry_run_1b_x2, bench_train_strategies, ladder, ladder_lrgroups, ladder_search,
                                  prose, keep, keep_diagnosis, fuzz, fuzz_index, fuzz_gguf, test_suite,
                                  fidelity, bench_verify, bench_grow, bench_write, bench_startup, cpu_tiny,
                                  sweep_cpu_tiny, sweep_others, headtohead, headtohead_moe)}
PATTERN = re.compile(r"(<!-- table: (\w+) -->\n)(.*?)(<!-- /table -->)", re.S)


def render(text: str, missing: list[str]) -> str:
    """The README with every block regenerated; a block whose results file is missing is kept as it is and
    its name added to `missing`."""
    def block(match: re.Match) -> str:
        name = match.group(2)
        if name not in BLOCKS:
            raise SystemExit(f"README.md: unknown table {name!r}")
        try:
            return match.group(1) + BLOCKS[name]() + "\n" + match.group(4)
        except FileNotFoundError as exc:
            missing.append(f"{name} ({Path(exc.filename).relative_to(ROOT)})")
            return match.group(0)

    return PATTERN.sub(block, text)


def documents() -> list[Path]:
    """README.md and every page under docs/: the files whose tables this script writes."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a document differs instead of rewriting it")
    args = parser.parse_args()
    no_file: list[str] = []
    found: set[str] = set()
    stale = []
    for doc in documents():
        text = doc.read_text()
        new = render(text, no_file)
        found |= {m.group(2) for m in PATTERN.finditer(text)}
        if new != text:
            stale.append(doc.relative_to(ROOT).as_posix())
            if not args.check:
                doc.write_text(new)
    absent = sorted(set(BLOCKS) - found)
    if args.check:
        if stale or absent or no_file:
            print(f"tables out of date in {', '.join(stale) or 'no file'}: run python benchmarks/readme_tables.py"
                  + (f" (blocks in no document: {absent})" if absent else "")
                  + (f" (results files missing: {no_file})" if no_file else ""))
            sys.exit(1)
        return
    if no_file:
        print(f"kept as they were, their results files are missing: {', '.join(no_file)}")


if __name__ == "__main__":
    main()
