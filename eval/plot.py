"""A run's log.jsonl as a picture: training and validation loss, and HellaSwag accuracy, against references.

    python -m eval.plot outputs/gpt2_124m/log.jsonl --output outputs/gpt2_124m/curves.png \
        --baseline "OpenAI GPT-2 124M (eval.val_loss)=3.2924"

The reference lines are the reproduction's figures for FineWeb-Edu and HellaSwag; they mean something
only for runs on that data. `--no_references` leaves them out.
"""

import argparse
import sys
from pathlib import Path

from formats.run_log import read_log

REFERENCE_VAL_LOSS = {"GPT-2 124M (OpenAI) val loss": 3.2924}
REFERENCE_HELLASWAG = {"GPT-2 124M (OpenAI)": 0.2955, "GPT-3 124M (paper)": 0.337}


def plot_run(log_path: Path, output: Path, baselines: dict[str, float], references: bool = True) -> Path:
    import matplotlib  # here, not at the top: every training process imports this module, few of them draw

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_log(log_path)
    has_hellaswag = bool(records.get("hellaswag"))
    fig, axes = plt.subplots(1, 2 if has_hellaswag else 1, figsize=(13 if has_hellaswag else 7, 4.8), squeeze=False)
    ax = axes[0][0]
    if records.get("train"):
        ax.plot([r["step"] for r in records["train"]], [r["loss"] for r in records["train"]], lw=1, alpha=0.8,
                label="train loss")
    if records.get("eval"):
        ax.plot([r["step"] for r in records["eval"]], [r["val_loss"] for r in records["eval"]], "o-", ms=3,
                label="validation loss")
    lines = {**(REFERENCE_VAL_LOSS if references else {}), **baselines}
    for (name, value), style in zip(lines.items(), ["--", ":", "-.", "--"] * 4, strict=False):
        ax.axhline(value, ls=style, color="gray", lw=1)
        ax.annotate(f"{name}: {value:.4f}", (0, value), xycoords=("axes fraction", "data"), fontsize=8,
                    xytext=(4, 3), textcoords="offset points", color="dimgray")
    run_name = "/".join(log_path.resolve().parent.parts[-2:])
    ax.set(xlabel="optimizer step", ylabel="loss (nats per token)", title=f"Loss: {run_name}")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # a run that logged no loss has no curve to name
        ax.legend(loc="upper right")
    if has_hellaswag:
        ax = axes[0][1]
        steps = [r["step"] for r in records["hellaswag"]]
        ax.plot(steps, [r["acc_norm"] for r in records["hellaswag"]], "o-", ms=3, label="acc_norm (per token)")
        ax.plot(steps, [r["acc"] for r in records["hellaswag"]], "o-", ms=3, alpha=0.6, label="acc (sum)")
        for (name, value), style in zip((REFERENCE_HELLASWAG if references else {}).items(), ["--", ":"],
                                        strict=False):
            ax.axhline(value, ls=style, color="gray", lw=1)
            ax.annotate(f"{name}: {value}", (0, value), xycoords=("axes fraction", "data"), fontsize=8,
                        xytext=(4, 3), textcoords="offset points", color="dimgray")
        ax.axhline(0.25, color="lightgray", lw=1)
        ax.annotate("chance (4 endings)", (1, 0.25), xycoords=("axes fraction", "data"), ha="right", fontsize=8,
                    xytext=(-4, 3), textcoords="offset points", color="gray")
        ax.set(xlabel="optimizer step", ylabel="accuracy", title="HellaSwag-schema multiple choice")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=120)
    plt.close(fig)
    return output


def parse_baseline(text: str) -> tuple[str, float]:
    name, _, value = text.rpartition("=")
    if not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, float(value)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("log", type=Path, help="A run's log.jsonl.")
    parser.add_argument("--output", type=Path, default=None, help="PNG path (default: curves.png beside the log).")
    parser.add_argument("--baseline", type=parse_baseline, action="append", default=[],
                        help="Another horizontal line on the loss plot, NAME=VALUE (repeatable).")
    parser.add_argument("--no_references", action="store_true", help="Leave out the reproduction's figures.")
    args = parser.parse_args(argv)
    output = plot_run(args.log, args.output or args.log.with_name("curves.png"), dict(args.baseline),
                      not args.no_references)
    print(output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
