"""eval/: the batched HellaSwag scorer against a one-at-a-time reference, lm-eval on our checkpoints, plots."""

import json
import random

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config
from transformers import AutoTokenizer

from eval import hellaswag, plot
from eval.hellaswag import Example, HellaSwagDataError, evaluate_model, load_examples, predict
from modeling_gpt2_scratch import GPT2ScratchForCausalLM

WORDS = "the king and queen of a castle went to see his horse by night while old men slept in one red house".split()


@pytest.fixture(scope="module")
def tokenizer(tiny_data):
    return AutoTokenizer.from_pretrained(tiny_data / "tokenizer")


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(1)
    config = tiny_config(vocab_size=len(tokenizer), n_positions=256, bos_token_id=0, eos_token_id=0)
    return GPT2ScratchForCausalLM(config).eval()


@pytest.fixture(scope="module")
def examples():
    rng = random.Random(0)
    sentence = lambda n: " ".join(rng.choice(WORDS) for _ in range(n))  # noqa: E731
    # endings of different lengths, so that padding and per-token normalisation both matter
    return [Example(sentence(rng.randint(3, 30)), [sentence(rng.randint(1, 12)) for _ in range(4)], rng.randint(0, 3))
            for _ in range(23)]


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
    scores = evaluate_model(model, tokenizer, examples, batch_size=7)
    assert scores["acc"] == sum(c[0] == e.label for c, e in zip(expected, examples, strict=True)) / len(examples)
    assert scores["acc_norm"] == sum(c[1] == e.label for c, e in zip(expected, examples, strict=True)) / len(examples)
    assert {c[0] for c in expected} != {c[1] for c in expected} or len({c[0] for c in expected}) > 1


class ShardOf:
    """Stands in for one process of a two-process Accelerator: its share, and counts it would contribute."""

    def __init__(self, rank, world):
        self.process_index, self.num_processes, self.device = rank, world, torch.device("cpu")
        self.sent = None

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


def write_jsonl(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


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


@pytest.mark.slow
def test_lm_eval_scores_checkpoint_and_stock_export_identically(model, tokenizer, examples, tmp_path):
    from eval.lm_eval_local import evaluate

    model.save_pretrained(tmp_path / "ours")
    tokenizer.save_pretrained(tmp_path / "ours")
    model.to_gpt2().save_pretrained(tmp_path / "stock")
    tokenizer.save_pretrained(tmp_path / "stock")
    records = [{"ind": i, "activity_label": "Story", "ctx_a": e.context, "ctx_b": "", "ctx": e.context,
                "endings": e.endings, "label": str(e.label), "split": "val", "split_type": "indomain",
                "source_id": "test"} for i, e in enumerate(examples)]
    data = write_jsonl(tmp_path / "local.jsonl", records)
    ours = evaluate(str(tmp_path / "ours"), str(data), batch_size=8, device="cpu")
    stock = evaluate(str(tmp_path / "stock"), str(data), batch_size=8, device="cpu", trust_remote_code=False)
    assert ours == stock
    assert 0.0 <= ours["acc"] <= 1.0 and set(ours) == {"acc", "acc_norm"}


def test_plot_draws_the_run(tmp_path):
    log = tmp_path / "log.jsonl"
    records = [{"type": "train", "step": s, "loss": 10 - s / 10} for s in range(1, 50)]
    records += [{"type": "eval", "step": s, "val_loss": 10 - s / 12} for s in (10, 20, 30, 40)]
    records += [{"type": "hellaswag", "step": s, "acc": 0.25 + s / 1000, "acc_norm": 0.26 + s / 900} for s in (20, 40)]
    records += [{"type": "eval", "step": 40, "val_loss": 6.0}]  # a resumed run's repeat: the last one counts
    write_jsonl(log, records)
    assert plot.read_log(log)["eval"][-1]["val_loss"] == 6.0
    out = plot.plot_run(log, tmp_path / "curves.png", {"baseline": 7.5})
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
