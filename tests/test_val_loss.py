"""eval/val_loss.py: the loss of any causal LM on prepared validation rows, against a hand-computed mean."""

import json

import numpy as np
import torch
import torch.nn.functional as F
from support.tiny import tiny_config

from eval import val_loss
from formats.packed_data import PackedRows, load_splits
from modeling_gpt2_scratch import GPT2ScratchForCausalLM


def reference_loss(model, rows: np.ndarray) -> float:
    """Mean next-token cross-entropy over every target, one row at a time, in float64."""
    total, count = 0.0, 0
    with torch.no_grad():
        for row in torch.from_numpy(rows.astype(np.int64)):
            logits = model(row[None, :-1]).logits[0].double()
            total += F.cross_entropy(logits, row[1:], reduction="sum").item()
            count += len(row) - 1
    return total / count


def test_ours_and_stock_score_the_same_targets_as_the_reference(tiny_data):
    rows = PackedRows(load_splits(tiny_data)["validation"])
    tokenizer_size = json.loads((tiny_data / "prepare_metadata.json").read_text())["tokenizer"]["vocab_size"]
    ours = GPT2ScratchForCausalLM(tiny_config(vocab_size=tokenizer_size, n_positions=32)).eval()
    stock = ours.to_gpt2()  # shifts `labels` itself unless given `shift_labels`: both must score row[1:]
    indices = np.arange(10)
    expected = reference_loss(ours, rows.take(indices))
    for model in (ours, stock):
        loss = val_loss.validation_loss(model, val_loss.row_batches(rows, indices, batch_size=3))
        assert abs(loss - expected) < 1e-5


def test_row_batches_cover_the_rows_asked_for_as_inputs_and_targets(tiny_data):
    rows = PackedRows(load_splits(tiny_data)["validation"])
    batches = list(val_loss.row_batches(rows, np.arange(7), batch_size=3))
    assert [inputs.shape[0] for inputs, _ in batches] == [3, 3, 1]
    inputs, targets = batches[1]
    np.testing.assert_array_equal(inputs.numpy(), rows.take([3, 4, 5])[:, :-1])
    np.testing.assert_array_equal(targets.numpy(), rows.take([3, 4, 5])[:, 1:])


def test_validation_rows_are_the_token_budget_in_whole_rows():
    assert val_loss.validation_rows(available=100, tokens=1024, block_size=32) == 32
    assert val_loss.validation_rows(available=10, tokens=1024, block_size=32) == 10  # the whole split
    assert val_loss.validation_rows(available=10, tokens=8, block_size=32) == 1  # never none
