"""DDP scaling efficiency: per-process training throughput at N processes against one process.

    python benchmarks/ddp_scaling.py --processes 1,2,4,8          # one 8-GPU node: the >= 90% goal at 8
    python benchmarks/ddp_scaling.py --processes 1,2 --tiny       # CPU over gloo: exercises the machinery

Each count N runs `accelerate launch --num_processes N benchmarks/throughput.py --models ours`, back to
back, with the same micro-batch and accumulation per process: weak scaling, as a run scales (the global
batch grows with the processes; the recipe then lowers accumulation to keep 0.5M tokens per step, which
only makes the all-reduce a larger share of each step; pass --accumulation to model that). Efficiency
at N = per-process tokens/s at N / tokens/s at 1. On CPU every process gets one thread, so the figure
shows the cost of gloo's all-reduce and of sharing the machine, not a GPU interconnect.
"""

import argparse
import json
import os
import subprocess
import tempfile
from pathlib import Path

from training.accelerator import CPU_LAUNCH_ENV, launch_command

BENCHMARKS = Path(__file__).resolve().parent


def launch_throughput(processes: int, throughput_args: list[str], cpu: bool, output: Path) -> dict:
    env = {**os.environ, **(CPU_LAUNCH_ENV if cpu else {})}
    command = launch_command(str(BENCHMARKS / "throughput.py"), processes, "--models", "ours", "--profile_steps", "0",
                             "--output", str(output), *throughput_args)
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{processes} processes failed:\n{done.stderr[-3000:]}")
    return json.loads(output.read_text())


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", default="1,8", help="Process counts, comma-separated; the first is the base.")
    parser.add_argument("--tiny", action="store_true", help="CPU-sized model over gloo, one thread per process.")
    parser.add_argument("--output", type=Path, default=None, help="Write the results as JSON here.")
    args, throughput_args = parser.parse_known_args(argv)
    counts = [int(n) for n in args.processes.split(",")]
    throughput_args += ["--tiny"] if args.tiny else []
    runs, launched = {}, {}  # per-process tokens/s, and the processes each report says took part
    with tempfile.TemporaryDirectory() as scratch:
        for n in counts:
            report = launch_throughput(n, throughput_args, args.tiny, Path(scratch) / f"{n}.json")
            result = report["results"][0]
            if "error" in result:
                raise SystemExit(f"{n} processes: {result['error']}")
            runs[n] = result["tokens_per_second_per_process"]
            launched[n] = report["processes"]
    base = runs[counts[0]]
    scaling = {"device": report["device"], "setting": report["setting"], "runs": [
        {"processes": n, "processes_reported": launched[n], "tokens_per_second": rate * n,
         "tokens_per_second_per_process": rate,
         "efficiency": rate / base} for n, rate in runs.items()]}
    for run in scaling["runs"]:
        print(f"{run['processes']:>3} processes: {run['tokens_per_second']:>12,.0f} tokens/s, "
              f"{run['tokens_per_second_per_process']:>12,.0f} per process, efficiency {run['efficiency']:.1%}")
    if args.output:
        args.output.write_text(json.dumps(scaling, indent=2) + "\n")
    return scaling


if __name__ == "__main__":
    main()
