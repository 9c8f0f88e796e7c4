"""Pre-flight check: does this machine train the 124M recipe correctly, and how fast? Six minutes on one GPU,
before you spend hours on eight.

    python benchmarks/gpu_check.py --output preflight/

It needs nothing but the checkout and the hub: GPT-2's tokenizer (`openai-community/gpt2`), HellaSwag's
validation set and FineWeb-Edu's first `sample-10BT` file come through the kit's own paths (`prepare_data.py`'s
and `eval.hellaswag`'s). On a machine without internet, `--data FOLDER` takes them from a folder instead:
`gpt2.tiktoken` (GPT-2's BPE ranks), one `*.jsonl` in HellaSwag's schema, and `*.txt` files in it or below it.
It runs six stages in order, each in a process of its own with its own time budget (a hang or an out-of-memory
stops that stage, not the check), and each leaves `OUTPUT/<stage>.json` as soon as it ends:

1. environment  the GPU, driver and library versions; which attention kernels run; the bf16 matmul rate it
                really delivers (the MFU figures below are against that as well as the data sheet)
2. correctness  our model against stock `GPT2LMHeadModel` with the same weights: equal in fp32, and as
                accurate as stock under bf16 (`eval/parity.py`, the CPU tests' definition); flash attention
                ran; a compiled training step agrees with eager; the fused loss peaks below full logits
3. throughput   the training step at 64 x 1024, compiled, ours then stock: tokens/s, MFU, peak memory,
                host syncs per step; then ours at 32 x 1024 against a 40 GB card
4. muon         the same step with Muon: its cost against AdamW's
5. hellaswag    HellaSwag scoring speed, and what the 10,042 validation examples would take
6. recipe       `prepare_data.py` on 20,000 documents, then `configs/gpt2_124m_fineweb_edu.yaml` for 16 steps with
                evaluation, HellaSwag, samples, checkpoints and the final model; what `--mixed_precision auto`
                and `--micro_batch_size auto` choose on this GPU

How to read it: `summary.md` has one row a stage (ok, or why not) and one a figure. Any failed correctness
check means do not train on this machine as it is; the throughput and recipe rows say what a day of
training will deliver. Budgets, in seconds: environment 10, correctness 60, throughput 100, muon 25,
hellaswag 15, recipe 150 (with the download); a stage may use what earlier ones left, never a later one's
share, and a stage stopped at its limit keeps what it had measured. `--smoke` runs the same stages with a tiny
model on CPU in about a minute (the test suite does, against a stand-in of the hub).
"""

import argparse
import sys
from pathlib import Path

from benchmarks.preflight.plans import STAGES, gpu_plan, smoke_plan
from benchmarks.preflight.report import write_summary
from benchmarks.preflight.runner import run_all, run_stage_here
from benchmarks.preflight.sources import FOLDER_NEEDS, SourcesError, folder_sources, hub_sources


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, required=True, help="Where each stage's JSON and the summary go.")
    parser.add_argument("--data", type=Path, default=None,
                        help=f"Without internet: a folder with {'; '.join(FOLDER_NEEDS)}. Default: the hub.")
    parser.add_argument("--smoke", action="store_true", help="Every stage on CPU with a tiny model.")
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)  # how a child is told its stage
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    plan = smoke_plan() if args.smoke else gpu_plan()
    try:
        sources = folder_sources(args.data) if args.data else hub_sources()
    except SourcesError as error:
        print(f"gpu_check.py: error: {error} (see --help)", file=sys.stderr)
        return 2
    if args.stage:  # a stage's own process: only it imports the stages (torch, transformers, datasets)
        from benchmarks.preflight.stages import STAGE_FUNCTIONS

        return run_stage_here(args.stage, STAGE_FUNCTIONS[args.stage], plan, args.output, sources)
    print(f"Pre-flight check ({plan.name}, up to {plan.total_seconds} s); inputs {sources.description}", flush=True)

    def stage_command(stage: str) -> list[str]:
        return [sys.executable, str(Path(__file__).resolve()), "--stage", stage, "--output", str(args.output),
                *(["--data", sources.folder] if sources.folder else []), *(["--smoke"] if args.smoke else [])]

    records, seconds = run_all(plan, args.output, stage_command)
    command = " ".join(["python", "benchmarks/gpu_check.py", *(argv if argv is not None else sys.argv[1:])])
    summary = write_summary(records, plan, seconds, command, args.output)
    return 0 if all(summary["stages_ok"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
