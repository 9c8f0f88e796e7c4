"""HellaSwag the reproduction's way: batched, sharded across processes, usable inside the training loop.

    python -m eval.hellaswag --model outputs/gpt2_124m/final                       # hub's Rowan/hellaswag
    python -m eval.hellaswag --model openai-community/gpt2 --data my_hellaswag.jsonl     # any HellaSwag-schema file

Each example's context is followed by each of its 4 endings (with a leading space); an ending's score
is the model's cross-entropy over the ending's tokens only. `acc_norm` picks the lowest mean (per token),
the reproduction's number; `acc` the lowest sum (the highest log-likelihood). lm-eval's `acc_norm`
normalises by characters and preprocesses the text, so its numbers differ (see README).
"""

import argparse
import json
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from eval import evaluating

HUB_DATASET = "Rowan/hellaswag"
VALIDATION_EXAMPLES = 10_042  # in HUB_DATASET's validation split, the split the reproduction reports
NUM_ENDINGS = 4


class HellaSwagDataError(ValueError):
    """Malformed HellaSwag-schema data; the message names the file and line."""


@dataclass
class Example:
    context: str
    endings: list[str]
    label: int


def parse_example(record: dict, where: str) -> Example:
    for key in ("ctx", "endings", "label"):
        if key not in record:
            raise HellaSwagDataError(f"{where}: missing field {key!r}")
    endings = record["endings"]
    if not isinstance(endings, list) or len(endings) != NUM_ENDINGS:
        raise HellaSwagDataError(f"{where}: 'endings' must be a list of {NUM_ENDINGS} endings")
    if not all(isinstance(e, str) and e.strip() for e in endings):
        raise HellaSwagDataError(f"{where}: every ending must be a non-empty string")
    try:
        label = int(record["label"])
    except (TypeError, ValueError):
        raise HellaSwagDataError(f"{where}: label {record['label']!r} is not an integer") from None
    if not 0 <= label < NUM_ENDINGS:
        raise HellaSwagDataError(f"{where}: label {label} is out of range 0..{NUM_ENDINGS - 1}")
    return Example(record["ctx"], endings, label)


def load_examples(path: str | None = None, limit: int | None = None) -> list[Example]:
    """Examples from a HellaSwag-schema JSONL file, or HellaSwag's validation split from the hub."""
    if path is None:
        import datasets

        split = datasets.load_dataset(HUB_DATASET, split="validation")
        return [parse_example(r, f"{HUB_DATASET}[{i}]") for i, r in enumerate(split)][:limit]
    examples = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise HellaSwagDataError(f"{path}:{number}: not valid JSON ({error.msg})") from None
            examples.append(parse_example(record, f"{path}:{number}"))
            if limit is not None and len(examples) == limit:
                break
    if not examples:
        raise HellaSwagDataError(f"{path}: no examples")
    return examples


def example_rows(example: Example, tokenizer, max_length: int) -> list[tuple[list[int], int]]:
    """For each ending: the token ids of context + " " + ending, and how many trailing ids are the ending."""
    context = tokenizer(example.context, add_special_tokens=False)["input_ids"]
    rows = []
    for ending in example.endings:
        ending_ids = tokenizer(" " + ending, add_special_tokens=False)["input_ids"]
        ids = (context + ending_ids)[-max_length:]  # over-long contexts lose their beginning
        rows.append((ids, min(len(ending_ids), len(ids) - 1)))
    return rows


@torch.no_grad()
def ending_losses(model, rows: list[tuple[list[int], int]], device, pad_id: int) -> tuple[torch.Tensor, ...]:
    """Summed and mean cross-entropy over each row's ending tokens, for a right-padded batch of rows."""
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    ending_mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, (ids, ending_length) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        ending_mask[i, len(ids) - ending_length : len(ids)] = True
    input_ids, ending_mask = input_ids.to(device), ending_mask.to(device)
    logits = model(input_ids=input_ids, use_cache=False).logits  # (rows, width, vocab); causal: padding unseen
    token_losses = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), input_ids[:, 1:], reduction="none")
    scored = ending_mask[:, 1:]  # position t predicts token t + 1
    summed = (token_losses * scored).sum(dim=1)
    return summed, summed / scored.sum(dim=1)


def predict(model, tokenizer, examples: list[Example], batch_size: int, device, max_length: int,
            progress: bool = False, on_batch=None):
    """(acc choice, acc_norm choice) per example; examples are batched `batch_size` at a time (4 rows each).
    `on_batch()`, if given, is called after each batch (a training run's stall watchdog)."""
    choices = []
    pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    starts = range(0, len(examples), batch_size)
    for start in tqdm(starts, desc="HellaSwag", unit=" batches", disable=not progress):
        batch = examples[start : start + batch_size]
        rows = [row for example in batch for row in example_rows(example, tokenizer, max_length)]
        summed, mean = ending_losses(model, rows, device, pad_id)
        by_sum = summed.view(len(batch), NUM_ENDINGS).argmin(dim=1).tolist()
        by_mean = mean.view(len(batch), NUM_ENDINGS).argmin(dim=1).tolist()
        choices.extend(zip(by_sum, by_mean, strict=True))
        if on_batch is not None:
            on_batch()
    return choices


def evaluate_model(model, tokenizer, examples: list[Example], accelerator=None, batch_size: int = 16,
                   max_length: int | None = None, progress: bool = False, on_batch=None) -> dict:
    """acc and acc_norm over all examples; with an accelerator, each process scores its share and counts add up."""
    config = getattr(model, "config", None) or accelerator.unwrap_model(model).config
    max_length = max_length or config.n_positions
    sharing = accelerator.split_between_processes(examples) if accelerator else nullcontext(examples)
    main_process = accelerator is None or accelerator.is_main_process
    with sharing as mine, evaluating(model, accelerator) as device:
        choices = predict(model, tokenizer, mine, batch_size, device, max_length, progress=progress and main_process,
                          on_batch=on_batch)
    counts = torch.tensor([sum(c[0] == e.label for c, e in zip(choices, mine, strict=True)),
                           sum(c[1] == e.label for c, e in zip(choices, mine, strict=True)), len(mine)],
                          dtype=torch.float64, device=device)
    if accelerator is not None:
        counts = accelerator.reduce(counts, reduction="sum")
    correct, correct_norm, total = counts.tolist()
    return {"acc": correct / total, "acc_norm": correct_norm / total, "examples": int(total)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="Checkpoint directory or hub id.")
    parser.add_argument("--data", default=None, help=f"HellaSwag-schema JSONL (default: {HUB_DATASET} validation).")
    parser.add_argument("--batch_size", type=int, default=16, help="Examples per forward pass (x4 rows).")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                        help="auto: bfloat16 on GPU, float32 on CPU.")
    parser.add_argument("--limit", type=int, default=None, help="Only the first N examples.")
    parser.add_argument("--output", type=Path, default=None, help="Write the scores as JSON here.")
    args = parser.parse_args(argv)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        examples = load_examples(args.data, args.limit)
    except (HellaSwagDataError, OSError) as error:
        print(f"hellaswag: error: {error}", file=sys.stderr)
        return 2
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = {"auto": torch.bfloat16 if device.type == "cuda" else torch.float32, "float32": torch.float32,
             "bfloat16": torch.bfloat16}[args.dtype]
    model = AutoModelForCausalLM.from_pretrained(args.model, trust_remote_code=True, dtype=dtype).to(device)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    scores = evaluate_model(model, tokenizer, examples, batch_size=args.batch_size, progress=True)
    scores.update(model=args.model, data=args.data or HUB_DATASET)
    print(json.dumps(scores, indent=2))
    if args.output:
        args.output.write_text(json.dumps(scores, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
