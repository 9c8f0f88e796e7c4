"""eval/hellaswag.py: the batched scorer against a one-at-a-time reference, sharding, and bad data named."""

import pytest
import torch
import torch.nn.functional as F
from accelerate import PartialState
from support.corpus import write_jsonl

from eval import hellaswag
from eval.hellaswag import HellaSwagDataError, evaluate_model, load_examples, predict


def reference_choice(model, tokenizer, example):
    """Deliberately simple: one ending at a time, no padding, log-probabilities summed in a Python loop."""
    context = tokenizer(example.context)["input_ids"]
    sums, means = [], []
    for ending in example.endings:
        ending_ids = tokenizer(" " + ending)["input_ids"]
        ids = torch.tensor([context + ending_ids])
        with torch.no_grad():
            log_probs = F.log_softmax(model(ids).logits[0].double(), dim=-1)
        nll = [-log_probs[len(context) + i - 1, token].item() for i, token in enumerate(ending_ids)]
        sums.append(sum(nll))
        means.append(sum(nll) / len(nll))
    return min(range(4), key=sums.__getitem__), min(range(4), key=means.__getitem__)


def test_batched_scorer_matches_one_at_a_time_reference(model, tokenizer, examples):
    expected = [reference_choice(model, tokenizer, e) for e in examples]
    assert predict(model, tokenizer, examples, batch_size=5, device=torch.device("cpu"), max_length=256) == expected
    batches_scored = []
    scores = evaluate_model(model, tokenizer, examples, batch_size=7, on_batch=lambda: batches_scored.append(1))
    assert len(batches_scored) == -(-len(examples) // 7)  # each batch is a training run's watchdog progress
    assert scores["acc"] == sum(c[0] == e.label for c, e in zip(expected, examples, strict=True)) / len(examples)
    assert scores["acc_norm"] == sum(c[1] == e.label for c, e in zip(expected, examples, strict=True)) / len(examples)
    # the fixture tells the two scores apart: sum and per-token mean pick differently on some examples
    assert any(by_sum != by_mean for by_sum, by_mean in expected)


class ShardOf:
    """Stands in for one process of a two-process Accelerator: its share, and counts it would contribute."""

    def __init__(self, rank, world):
        self.process_index, self.num_processes, self.device = rank, world, torch.device("cpu")
        self.sent = None

    @property
    def is_main_process(self):
        return self.process_index == 0

    def split_between_processes(self, inputs):
        return PartialState.split_between_processes(self, inputs)  # accelerate's own split, at this stand-in's rank

    def autocast(self):
        return torch.autocast("cpu", enabled=False)

    def reduce(self, tensor, reduction):
        self.sent = tensor.clone()
        return tensor


def test_two_ranks_add_up_to_the_whole(model, tokenizer, examples):
    whole = evaluate_model(model, tokenizer, examples, batch_size=4)
    ranks = [ShardOf(r, 2) for r in range(2)]
    for rank in ranks:
        evaluate_model(model, tokenizer, examples, accelerator=rank, batch_size=4)
    correct, correct_norm, total = sum(rank.sent for rank in ranks).tolist()
    assert total == len(examples)
    assert (correct / total, correct_norm / total) == (whole["acc"], whole["acc_norm"])


GOOD = {"ctx": "a b", "endings": ["c", "d", "e", "f"], "label": "2"}


@pytest.mark.parametrize("records,message", [
    ([GOOD, "{not json"], ":2: not valid JSON"),
    ([{**GOOD, "label": 4}], ":1: label 4 is out of range 0..3"),
    ([{**GOOD, "label": "x"}], "label 'x' is not an integer"),
    ([{k: v for k, v in GOOD.items() if k != "endings"}], ":1: missing field 'endings'"),
    ([{**GOOD, "endings": ["c", "d", "e"]}], "must be a list of 4 endings"),
    ([{**GOOD, "endings": ["c", "", "e", "f"]}], "every ending must be a non-empty string"),
    ([], "no examples"),
])  # fmt: skip
def test_bad_hellaswag_data_is_named(tmp_path, records, message):
    with pytest.raises(HellaSwagDataError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_examples(str(write_jsonl(tmp_path / "data.jsonl", records)))


def test_cli_reports_bad_data_on_one_line(tmp_path, capsys):
    path = write_jsonl(tmp_path / "data.jsonl", [GOOD, GOOD, {**GOOD, "label": 9}])
    assert hellaswag.main(["--model", "unused", "--data", str(path)]) == 2
    assert capsys.readouterr().err.strip() == f"hellaswag: error: {path}:3: label 9 is out of range 0..3"


def test_shared_cloze_file_loads(shared_data):
    examples = load_examples(str(shared_data / "cloze_shakespeare_val.jsonl"))
    assert len(examples) == 400 and {e.label for e in examples} == {0, 1, 2, 3}


