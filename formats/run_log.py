"""A training run's log: one JSON object per line in `OUTPUT_DIR/log.jsonl`, each with its type and step.

Types: setup (what the device got: precision, attention kernel, micro-batch, accumulation, processes,
the memory estimate), train (loss, learning rates, gradient norm, tokens/s, MFU), eval (val_loss),
hellaswag (acc, acc_norm, examples), samples, overflow (an fp16 step the loss scaler skipped, with the
scale), nonfinite, resume. The loop writes it through `RunLog`; plots, the model
card and the benchmarks read it through `read_log`.
"""

import json
import time
from pathlib import Path

LOG_FILE = "log.jsonl"


class RunLog:
    """Metrics to the accelerator's trackers and one JSON object per line in output_dir/log.jsonl (main process
    only). `accelerator` is an `accelerate.Accelerator`, or anything with `is_main_process` and `log()`."""

    def __init__(self, accelerator, output_dir: Path):
        self.accelerator = accelerator
        self.path = Path(output_dir) / LOG_FILE

    def write(self, kind: str, step: int, **values):
        if not self.accelerator.is_main_process:
            return
        record = {"type": kind, "step": step, "time": time.time(), **values}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        numeric = {f"{kind}/{k}": v for k, v in values.items() if isinstance(v, (int, float)) and v is not None}
        if numeric:
            self.accelerator.log(numeric, step=step)


def read_log(path: Path) -> dict[str, list[dict]]:
    """Records by type, in step order; a resumed run's repeated steps keep their last record."""
    by_type: dict[str, dict[int, dict]] = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            by_type.setdefault(record["type"], {})[record["step"]] = record
    return {kind: [records[s] for s in sorted(records)] for kind, records in by_type.items()}
