"""AdamW (the reproduction's recipe) against Muon + AdamW, same model, data and tokens per step, on CPU.

    python prepare_data.py --dataset text --data_files '../shared/data/shakespeare/*.txt' --text_unit paragraph \
        --train_tokenizer_vocab 4096 --block_size 128 --output_dir outputs/muon/data
    python benchmarks/optimizer_comparison.py --data_dir outputs/muon/data \
        --cloze ../shared/data/cloze_shakespeare_val.jsonl

Each optimizer gets the same learning-rate sweep budget (one value scales all of its groups: with
`match_rms_adamw` Muon's updates have AdamW's RMS, so one scale is comparable across both). Every run is
`run_pretrain.py` itself, with validation loss every `--eval_every` steps on the same held-out rows.
Reported: each run's final validation loss, tokens/s and cloze accuracy; the tokens the best Muon run
needs to reach the best AdamW run's final loss; the variants (QKV split, momentum warm-up, WSD schedule)
at Muon's best learning rate. The table and the plot are written into benchmarks/RESULTS.md between
its `optimizer_comparison` markers. Finished runs are reused, so an interrupted sweep continues.
"""

import argparse
import itertools
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

from formats.run_log import LOG_FILE, read_log

REPO_ROOT = Path(__file__).resolve().parent.parent

MARK_START, MARK_END = "<!-- optimizer_comparison:start -->", "<!-- optimizer_comparison:end -->"
# The small model of the comparison: 4 layers x 256 wide, 128-token context, 16 x 128 tokens a step.
MODEL = dict(n_layer=4, n_head=4, n_embd=256, n_positions=128)
TOKENS_PER_STEP = 2048
RUN_FLAGS = [*(f"--{name}={value}" for name, value in MODEL.items()),
             "--micro_batch_size", "16", "--total_batch_tokens", str(TOKENS_PER_STEP), "--mixed_precision", "no",
             "--tf32", "false", "--sample_every", "-1", "--save_every", "0",
             "--report_to", "none", "--dataloader_workers", "0", "--min_lr_ratio", "0.1"]
# No loader worker: a small model's 16 rows of 128 tokens are read in well under a millisecond, and a worker
# would cost each run a second interpreter (the fork server) and take a core from training on small machines.
# Variants tried at Muon's best learning rate, each against plain `muon` there.
VARIANTS = {  # label: (run-name suffix, flags)
    "muon, QKV split": ("qkv_split", ["--muon_qkv", "split"]),
    "muon, momentum warm-up 100": ("momentum_warmup", ["--muon_momentum_warmup_steps", "100"]),
    "muon, WSD (20% decay)": ("wsd", ["--lr_schedule", "wsd", "--decay_fraction", "0.2"]),
}


def run_name(optimizer: str, lr: float, seed: int, suffix: str = "") -> str:
    return f"{optimizer}-lr{lr:g}-seed{seed}" + (f"-{suffix}" if suffix else "")


def parameter_count() -> int:
    from configuration import GPT2ScratchConfig
    from modeling_gpt2_scratch import GPT2ScratchForCausalLM

    config = GPT2ScratchConfig(vocab_size=4096, bos_token_id=0, eos_token_id=0, **MODEL)
    return GPT2ScratchForCausalLM(config).num_parameters()


def trained_run(args, optimizer: str, lr: float, seed: int, suffix: str = "", extra: list[str] = ()) -> dict:
    """One run_pretrain.py job, summarized; a finished one (its final evaluation logged) is reused."""
    name = run_name(optimizer, lr, seed, suffix)
    out = args.output_dir / name
    if (out / LOG_FILE).exists() and any(r["step"] == args.steps for r in read_log(out / LOG_FILE).get("eval", [])):
        return summarize(out)
    flags = [*RUN_FLAGS, "--data_dir", str(args.data_dir), "--output_dir", str(out), "--overwrite_output_dir",
             "true", "--max_steps", str(args.steps), "--warmup_steps", str(args.warmup_steps), "--eval_every",
             str(args.eval_every), "--eval_tokens", str(args.eval_tokens), "--log_every", str(args.eval_every),
             "--optimizer", optimizer, "--learning_rate", str(lr), "--seed", str(seed), *extra]
    if optimizer == "muon":  # Muon's matrices at the swept rate too (AdamW refuses the flag as inert)
        flags += ["--muon_learning_rate", str(lr)]
    if args.cloze:
        flags += ["--hellaswag_every", str(args.steps), "--hellaswag_file", str(args.cloze)]
    print(f"training {name}", flush=True)
    done = subprocess.run([sys.executable, str(REPO_ROOT / "run_pretrain.py"), *flags], cwd=REPO_ROOT,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    return summarize(out)


def summarize(out: Path) -> dict:
    log = read_log(out / LOG_FILE)
    curve = [(r["step"] * TOKENS_PER_STEP, r["val_loss"]) for r in log["eval"]]
    speeds = [r["tokens_per_second"] for r in log["train"][1:]]  # the first window includes start-up
    swag = log.get("hellaswag", [{}])[-1]
    return {"curve": curve, "final": curve[-1][1], "tokens_per_second": statistics.median(speeds),
            "cloze_acc_norm": swag.get("acc_norm")}


def tokens_to_reach(curve: list[tuple[int, float]], target: float) -> float | None:
    """First point where the validation curve reaches `target`, linearly interpolated between evaluations."""
    for (t0, l0), (t1, l1) in itertools.pairwise(curve):
        if l1 <= target:
            return t0 + (t1 - t0) * (l0 - target) / (l0 - l1) if l0 > target else t0
    return None


def mean_curve(runs: list[dict]) -> list[tuple[int, float]]:
    return [(t, float(np.mean([r["curve"][i][1] for r in runs]))) for i, (t, _) in enumerate(runs[0]["curve"])]


def speed_and_cloze(runs: list[dict]) -> str:
    """The table's last two cells: mean tokens/s and mean cloze accuracy (blank when not scored)."""
    cloze = [r["cloze_acc_norm"] for r in runs if r["cloze_acc_norm"] is not None]
    cloze_cell = f"{np.mean(cloze):.3f}" if cloze else ""
    return f"{np.mean([r['tokens_per_second'] for r in runs]):,.0f} | {cloze_cell} |"


def report(args, results: dict, best: dict, variants: dict, plot_path: Path) -> str:
    budget = args.steps * TOKENS_PER_STEP
    adamw_target = np.mean([r["final"] for r in results["adamw"][best["adamw"]]])
    muon_curve = mean_curve(results["muon"][best["muon"]])
    reach = tokens_to_reach(muon_curve, adamw_target)
    lines = [
        f"Model {MODEL['n_layer']} layers x {MODEL['n_embd']} wide ({parameter_count():,} parameters), vocabulary "
        f"4,096 (BPE trained on the plays), context {MODEL['n_positions']}; "
        f"{args.steps} steps of {TOKENS_PER_STEP:,} tokens ({budget:,} tokens), warm-up {args.warmup_steps} steps, "
        f"cosine to 10%; "
        f"validation every {args.eval_every} steps on {args.eval_tokens:,} held-out tokens. "
        f"Seeds {', '.join(map(str, args.seeds))} at each optimizer's best learning rate, "
        f"{', '.join(map(str, args.seeds[: args.variant_seeds]))} for the variants, {args.seeds[0]} for the rest "
        f"of the sweep. CPU, 2 cores, float32.",
        "",
        "| optimizer | learning rate | final val loss (mean over seeds) | tokens/s | cloze acc_norm |",
        "| --- | --- | --- | --- | --- |",
    ]
    for optimizer in ("adamw", "muon"):
        for lr, runs in sorted(results[optimizer].items()):
            mark = " **(best)**" if lr == best[optimizer] else ""
            finals = [r["final"] for r in runs]
            spread = f" ({min(finals):.4f}-{max(finals):.4f})" if len(runs) > 1 else ""
            lines.append(f"| {optimizer} | {lr:g}{mark} | {np.mean(finals):.4f}{spread} | {speed_and_cloze(runs)}")
    for variant, runs in variants.items():
        lines.append(f"| {variant} | {best['muon']:g} | {np.mean([r['final'] for r in runs]):.4f} | "
                     f"{speed_and_cloze(runs)}")
    ratio = f"{reach:,.0f} tokens, **{reach / budget:.2f}x** AdamW's {budget:,}" if reach else "not within the budget"
    lines += ["", f"Tokens for Muon (lr {best['muon']:g}) to reach AdamW's best final validation loss "
                  f"({adamw_target:.4f}, lr {best['adamw']:g}): {ratio}.", "",
              f"![validation loss against tokens]({plot_path.name})"]
    return "\n".join(lines)


def plot(results: dict, best: dict, variants: dict, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    colors = {"adamw": "tab:blue", "muon": "tab:red"}
    for optimizer, by_lr in results.items():
        for lr, runs in sorted(by_lr.items()):
            curve = mean_curve(runs)
            is_best = lr == best[optimizer]
            ax.plot([t / 1e6 for t, _ in curve], [v for _, v in curve], color=colors[optimizer],
                    alpha=1.0 if is_best else 0.3, linewidth=2 if is_best else 1,
                    label=f"{optimizer} lr {lr:g}" + (" (best)" if is_best else ""))
    for variant, runs in variants.items():
        curve = mean_curve(runs)
        ax.plot([t / 1e6 for t, _ in curve], [v for _, v in curve], linestyle="--", linewidth=1, label=variant)
    ax.set_xlabel("training tokens (millions)")
    ax.set_ylabel("validation loss")
    ax.set_title("AdamW vs Muon + AdamW: GPT-2 4 x 256 on Shakespeare")
    finals = [r["final"] for by_lr in results.values() for runs in by_lr.values() for r in runs]
    ax.set_ylim(min(finals) - 0.1, min(finals) + 1.5)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_section(results_md: Path, text: str):
    content = results_md.read_text()
    section = f"{MARK_START}\n{text}\n{MARK_END}"
    if MARK_START in content:
        before, rest = content.split(MARK_START, 1)
        content = before + section + rest.split(MARK_END, 1)[1]
    else:
        content = content.rstrip("\n") + "\n\n## Optimizers: AdamW against Muon (CPU)\n\n" + section + "\n"
    results_md.write_text(content)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", type=Path, required=True, help="prepare_data.py output (see above).")
    parser.add_argument("--output_dir", type=Path, default=REPO_ROOT / "outputs" / "optimizer_comparison")
    parser.add_argument("--cloze", type=Path, default=None, help="HellaSwag-schema JSONL scored at the end.")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--warmup_steps", type=int, default=20)
    parser.add_argument("--eval_every", type=int, default=25)
    parser.add_argument("--eval_tokens", type=int, default=32768)
    parser.add_argument("--adamw_lrs", default="1e-3,2e-3,4e-3")
    parser.add_argument("--muon_lrs", default="2e-3,4e-3,8e-3")
    parser.add_argument("--seeds", default="1337", help="Seeds for the best learning rate of each optimizer.")
    parser.add_argument("--variants", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--variant_seeds", type=int, default=1, help="How many of --seeds the variants run.")
    parser.add_argument("--results", type=Path, default=REPO_ROOT / "benchmarks" / "RESULTS.md")
    args = parser.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    return args


def main(argv=None) -> str:
    args = parse_args(argv)
    lrs = {"adamw": [float(x) for x in args.adamw_lrs.split(",")], "muon": [float(x) for x in args.muon_lrs.split(",")]}
    first_seed = args.seeds[0]
    results = {opt: {} for opt in lrs}
    for optimizer, values in lrs.items():  # the sweep, one seed
        for lr in values:
            results[optimizer][lr] = [trained_run(args, optimizer, lr, first_seed)]
    best = {opt: min(by_lr, key=lambda lr, by_lr=by_lr: by_lr[lr][0]["final"]) for opt, by_lr in results.items()}
    for optimizer, lr in best.items():  # more seeds at the best learning rates
        for seed in args.seeds[1:]:
            results[optimizer][lr].append(trained_run(args, optimizer, lr, seed))
    variants = {}
    if args.variants:
        for variant, (suffix, extra) in VARIANTS.items():
            variants[variant] = [trained_run(args, "muon", best["muon"], seed, suffix, extra)
                                 for seed in args.seeds[: args.variant_seeds]]
    plot_path = args.results.parent / "optimizer_comparison.png"
    plot(results, best, variants, plot_path)
    text = report(args, results, best, variants, plot_path)
    write_section(args.results, text)
    print(text)
    return text


if __name__ == "__main__":
    main()
