"""gpu_kit.md and gpu_kit.png from the kit's results (every number in them is read from gpu_kit.json)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# the throughput loops, in the report's order: the bare PyTorch loop and hyperclone train, each eager and compiled
VARIANTS = ("bare_eager", "bare_compile", "hyperclone_train", "hyperclone_train_compile")
VARIANT_COLOURS = {"bare_eager": "tab:gray", "bare_compile": "tab:olive", "hyperclone_train": "tab:blue",
                   "hyperclone_train_compile": "tab:cyan"}


def _f(x: Any, spec: str = ".3f", none: str = "—") -> str:
    return none if x is None else format(x, spec)


def _pct(x: Any) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def _m(x: int) -> str:
    return f"{x / 1e6:.2f}M"


def _shape(st: dict[str, Any]) -> str:
    return (f"hidden {st['hidden']}, {st['layers']} layers, {st['heads']} heads, FFN {st['ffn']}, vocabulary "
            f"{st['vocab']}: {st['params']:,} parameters ({st['params_without_input_embedding']:,} without the input "
            f"embedding)")


def _speedup(x: dict[str, Any], key: str) -> str:
    if x.get("reached_at_start") and key == "speedup_tokens":
        return "∞ (grown starts below random's final loss)"
    v = x.get(key)
    return "not reached" if v is None and x.get("grown_tokens_to_target") is None else _f(v, ".2f")


def header(r: dict[str, Any]) -> list[str]:
    env = r.get("environment", {})
    smoke = " — SMOKE RUN (tiny sizes on a CPU: checks the code, not evidence)" if r.get("smoke") else ""
    lines = [f"# hyperclone GPU evidence kit{smoke}", ""]
    lines += [f"Measured {env.get('date', '?')} on **{env.get('device', '?')}**, torch {env.get('torch', '?')} "
              f"(CUDA {env.get('cuda')}), transformers {env.get('transformers', '?')}, Python "
              f"{env.get('python', '?')}, {env.get('cpu_count', '?')} CPUs; commit {env.get('git_commit', '?')}"
              f"{' (with uncommitted changes)' if env.get('git_dirty') else ''}. Install: {env.get('install')}. "
              f"Command: `{r.get('command')}`; {r.get('wall_s', 0):.0f} s of a {r.get('budget_s', 0):.0f} s "
              "budget (install included).", ""]
    for e in r.get("errors", []):
        lines += [f"**Error in {e['part']}:** `{e['error']}`", ""]
    peak = r.get("peak")
    if peak:
        lines += [f"Peak: {peak['tflops']:.1f} TFLOP/s measured here ({peak['method']}); MFU is also given "
                  f"against {peak['reference_tflops']:.0f} TFLOP/s, the bf16 matmul ceiling measured on the H200 "
                  "this kit was sized for.", ""]
    corpus = r.get("corpus")
    if corpus:
        lines += [f"Corpus (no network): {corpus['description']}: {corpus['documents']:,} files, "
                  f"{corpus['bytes'] / 1e6:.1f} MB, {corpus['tokens']:,} tokens ({corpus['train_tokens']:,} "
                  f"for training, the last 5% held out); {corpus['tokenizer']}.", ""]
    return lines


def throughput_section(tp: dict[str, Any]) -> list[str]:
    lines = ["## (a) Training throughput and model FLOPs utilisation", ""]
    lines += [f"Llama, {_shape(tp['model'])}; {tp['sequences_per_step']} sequences × {tp['seq_len']} tokens "
              f"= {tp['tokens_per_step']:,} tokens per step in one forward pass; "
              f"{'bf16 autocast, fp32 master weights' if tp['dtype'] == 'bf16' else 'fp32'}; AdamW, clip 1.0. "
              f"FLOPs per token {tp['model']['flops_per_token']:.4g}: {tp['flops_formula']}.", ""]
    lines.append("| loop | tokens/s | step | model TFLOP/s | MFU (measured peak) | MFU (790 TFLOP/s) "
                 "| vs bare eager | notes |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---|")
    for key in VARIANTS:
        v = tp["variants"].get(key)
        if not v:
            continue
        notes = [f"**{v['error']}**"] if v.get("error") else []
        if key.startswith("bare") and v.get("first_step_s") is not None:
            notes.append(f"{v['timed_steps']} timed steps after {v['warmup_steps']} warm-up; first step "
                         f"{v['first_step_s']:.2f} s" + (" (compilation)" if key == "bare_compile" else ""))
            if v.get("peak_memory_gib"):
                notes.append(f"peak memory {v['peak_memory_gib']:.1f} GiB")
        if key.startswith("hyperclone") and v.get("interval_rates"):
            notes.append(f"median of {v['intervals_used']} log intervals of {v['log_every']} steps after the "
                         f"first (its own metrics.jsonl); {v['steps']} steps, process {v['process_wall_s']:.0f} s")
        step_ms = _f(v.get("step_s") and 1000 * v["step_s"], ".1f")
        lines.append(f"| {v.get('loop', key)} | {_f(v.get('tokens_per_s'), ',.0f')} | {step_ms} ms | "
                     f"{_f(v.get('model_tflops'), '.3g')} | {_pct(v.get('mfu'))} | "
                     f"{_pct(v.get('mfu_vs_reference'))} | {_f(v.get('vs_bare_eager'), '.2f')} | "
                     f"{'; '.join(notes)} |")
    return lines + [""]


def ladder_setup(lad: dict[str, Any]) -> list[str]:
    lines = ["## (b) One ladder point: random init against the default growth recipe", ""]
    lines += [f"Small: {_shape(lad['small'])}. Grown ×2 in width: {_shape(lad['grown'])}.", ""]
    lines += [f"Every run: {lad['tokens_per_run']:,} tokens ({lad['steps_per_run']:,} steps of "
              f"{lad['tokens_per_step']:,} tokens, sequences of {lad['seq_len']}) = "
              f"**{lad['tokens_per_param_grown']:.1f} tokens per parameter of the grown model** "
              f"({lad['tokens_per_param_small']:.1f} for the small model's pretraining), "
              f"{lad['epochs']:.2f} epochs of the corpus. Seeds {', '.join(map(str, lad['seeds']))}.", ""]
    rec, grow = lad["recipe"], lad.get("grow", {})
    spec = grow.get("spec") or {}
    grown_note = (f" (recorded spec: mode {spec.get('mode')}, noise_db {spec.get('noise_db')} (None: the default), "
                  f"function preserving: {grow.get('function_preserving')}; {grow['seconds']:.1f} s)"
                  if "seconds" in grow else f" — {grow['error']}" if "error" in grow else "")
    lines += [f"Recipe: `hyperclone train` defaults (schedule {rec['schedule']}, warmup {rec['warmup']}, "
              f"min lr ratio {rec['min_lr_ratio']}), peak lr {rec['lr']} for both arms, {rec['lr_small']} for "
              f"the small model ({rec['lr_note']}). Growth: {rec['growth']}{grown_note}.", ""]
    lines += [f"Sizing: {lad['sizing']}.", ""]
    lines.append("| candidate small → grown (parameters) | tokens per run | calibration tokens/s | estimate | "
                 "decision |")
    lines.append("|---|---:|---:|---:|---|")
    for c in lad["candidates"]:
        cal = c.get("calibration") or {}
        lines.append(f"| {_m(c['small']['params'])} → {_m(c['grown']['params'])} | {c['tokens']:,} | "
                     f"{_f(cal.get('tokens_per_s'), ',.0f')} | {_f(c.get('estimate_s'), '.0f')} s | "
                     f"{c.get('decision', 'not reached')} |")
    return lines + [""]


def ladder_results(lad: dict[str, Any]) -> list[str]:
    lines = ["| run | status | val loss at step 0 | final val loss (last, if stopped) | tokens | "
             "tokens/s (median, shared device) | wall s |", "|---|---|---:|---:|---:|---:|---:|"]
    for name, run in lad["runs"].items():
        last = run.get("last_val_loss")
        final = _f(run.get("final_val_loss"), ".4f", "—" if last is None else f"({last:.4f}, stopped)")
        lines.append(f"| {name} | {run['status']} | {_f(run.get('val_loss_at_start'), '.4f')} | {final} | "
                     f"{_f(run.get('tokens_trained'), ',')} | {_f(run.get('tokens_per_s'), ',.0f')} | "
                     f"{_f(run.get('process_wall_s'), '.0f')} |")
    lines.append("")
    sm = lad.get("summary", {})
    fv = sm.get("final_val_loss", {})
    g, rnd = fv.get("grown", {}), fv.get("random", {})
    gap = sm.get("final_loss_gap")
    gap_text = "" if gap is None else f"; grown is {_pct(abs(gap))} {'below' if gap >= 0 else 'above'} random"
    lines += [f"Final validation loss, mean ± std over seeds: grown {_f(g.get('mean'), '.4f')} ± "
              f"{_f(g.get('std'), '.4f')}, random {_f(rnd.get('mean'), '.4f')} ± {_f(rnd.get('std'), '.4f')}"
              f"{gap_text}.", ""]
    if "speedup_tokens" in sm:
        per_seed = ", ".join(f"seed {p['seed']}: {_speedup(p, 'speedup_tokens')}" for p in sm.get("per_seed", []))
        lines += [f"speedup_tokens (seed-mean curves): **{_speedup(sm, 'speedup_tokens')}** ({per_seed}); "
                  f"with the small model's pretraining tokens: {_speedup(sm, 'speedup_tokens_incl_small')}; "
                  f"FLOPs with the small model's pretraining: {_speedup(sm, 'speedup_flops_incl_small')}.", ""]
    chk = sm.get("function_preserved_check")
    if chk:
        lines += [f"Growth check: small model's final val loss {chk['small_final_val_loss']:.4f}; grown "
                  f"models at step 0: {', '.join(f'{x:.4f}' for x in chk['grown_val_loss_at_step_0'])}.", ""]
    if not sm.get("complete"):
        lines += ["**Incomplete:** not every run finished; the numbers above use the finished ones only.", ""]
    lines += ["Read with care: one budget, one peak learning rate shared by both arms (random init's is not "
              "searched), curve-based speed-up (a point of the grown run's cosine schedule against the end of "
              f"random's, which favours random); {lad['concurrency']}.", ""]
    return lines


def render(r: dict[str, Any]) -> str:
    lines = header(r)
    if r.get("throughput"):
        lines += throughput_section(r["throughput"])
    lad = r.get("ladder")
    if lad and lad.get("grown"):
        lines += ladder_setup(lad)
        if lad.get("summary"):
            lines += ladder_results(lad)
    lines.append("Files: `gpu_kit.json` (every number above), `gpu_kit.png`, `runs/*/metrics.jsonl`, `logs/`. "
                 "Timeline: " + ", ".join(f"{p['phase']} {p['start_s']:.0f}–{p['end_s']:.0f} s"
                                           for p in r.get("timeline", [])) + ".")
    return "\n".join(lines) + "\n"


def plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    tp = (r.get("throughput") or {}).get("variants", {})
    names = [k for k in VARIANTS if tp.get(k, {}).get("tokens_per_s")]
    vals = [tp[k]["tokens_per_s"] for k in names]
    bars = ax1.bar(range(len(names)), vals, color=[VARIANT_COLOURS[k] for k in names])
    for b, k in zip(bars, names, strict=True):
        ax1.annotate(f"MFU {100 * tp[k].get('mfu', 0):.1f}%", (b.get_x() + b.get_width() / 2, b.get_height()),
                     ha="center", va="bottom", fontsize=9)
    ax1.set_xticks(range(len(names)), [k.replace("_", " ") for k in names])
    ax1.set_ylabel("tokens/s")
    env = r.get("environment", {})
    ax1.set_title(f"(a) training throughput, {env.get('device', '?')}", fontsize=10)
    lad = r.get("ladder") or {}
    colours = {"small": "tab:gray", "random": "tab:red", "grown": "tab:blue"}
    for name, run in (lad.get("runs") or {}).items():
        c = run.get("curve") or []
        if not c:
            continue
        kind = name.split("-")[0]
        style = "--" if name.endswith("s1") else "-"
        ax2.plot([p["tokens"] for p in c], [p["val_loss"] for p in c], style, color=colours.get(kind, "black"),
                 label=name)
    if lad.get("grown"):
        ax2.set_title(f"(b) {lad['small']['params'] / 1e6:.2f}M → {lad['grown']['params'] / 1e6:.2f}M, "
                      f"{lad['tokens_per_param_grown']:.1f} tokens/parameter", fontsize=10)
        ax2.legend(fontsize=8)
    ax2.set_xlabel("tokens")
    ax2.set_ylabel("validation loss")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(results: dict[str, Any], out: Path, report_name: str, plot_name: str) -> None:
    (out / report_name).write_text(render(results))
    plot(results, out / plot_name)
