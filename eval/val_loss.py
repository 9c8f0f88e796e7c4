"""Loss of any causal LM on a prepared validation split: our checkpoints, or baselines such as OpenAI's GPT-2.

    python -m eval.val_loss --model openai-community/gpt2 --data_dir data/fineweb_edu_10B --tokens 10485760

The same tokens as the training loop's evaluation (the split's first rows), so a run's curve and a
baseline are comparable; the reproduction measured 3.2924 for GPT-2 124M on its FineWeb-Edu shard.
"""

import argparse
import json
import math
import sys

import numpy as np
import torch
from tqdm.auto import tqdm

from eval import evaluating
from formats.packed_data import PackedRows, inputs_and_targets, load_splits, score_next_tokens

# The reproduction's validation budget: 20 batches of 64 x 1024 tokens on each of 8 GPUs.
DEFAULT_EVAL_TOKENS = 10_485_760


def validation_rows(available: int, tokens: int, block_size: int) -> int:
    """How many of a split's first rows make up `tokens` (all of them, if the split is smaller; at least one)."""
    return min(available, max(1, tokens // block_size))


def row_batches(rows: PackedRows, indices: np.ndarray, batch_size: int):
    """(inputs, targets) CPU batches of the rows at `indices`."""
    for start in range(0, len(indices), batch_size):
        yield inputs_and_targets(rows.take(indices[start : start + batch_size]))


def validation_loss(model, batches, accelerator=None) -> float:
    """Mean next-token loss over every target in `batches`, summed exactly across processes.

    Any causal LM, ours (on its fused loss) or stock (`score_next_tokens`); `num_items_in_batch=1` makes each
    batch's loss a sum.
    """
    with evaluating(model, accelerator) as device:
        totals = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, target count
        for inputs, targets in batches:
            inputs, targets = inputs.to(device), targets.to(device)
            out = score_next_tokens(model, inputs, targets, num_items_in_batch=1)
            totals += torch.stack([out.loss.double(), torch.tensor(targets.numel(), device=device,
                                                                    dtype=torch.float64)])
    if accelerator is not None:
        totals = accelerator.reduce(totals, reduction="sum")
    return (totals[0] / totals[1]).item()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="Checkpoint directory or hub id.")
    parser.add_argument("--data_dir", required=True, help="Output of prepare_data.py.")
    parser.add_argument("--tokens", type=int, default=DEFAULT_EVAL_TOKENS, help="Validation tokens (the loop's "
                        "default).")
    parser.add_argument("--batch_size", type=int, default=16)
    args = parser.parse_args(argv)

    from transformers import AutoModelForCausalLM

    rows = PackedRows(load_splits(args.data_dir)["validation"])
    count = validation_rows(len(rows), args.tokens, rows.width - 1)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(args.model, trust_remote_code=True, dtype=dtype).to(device)
    batches = tqdm(row_batches(rows, np.arange(count), args.batch_size), total=math.ceil(count / args.batch_size),
                   desc="Validation loss", unit=" batches")
    loss = validation_loss(model, batches)
    print(json.dumps({"model": args.model, "data_dir": args.data_dir, "tokens": count * (rows.width - 1),
                      "val_loss": loss}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
