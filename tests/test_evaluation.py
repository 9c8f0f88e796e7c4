"""training/evaluation.py: the loop's validation loss, samples and HellaSwag, on the model as prepared."""

import numpy as np
import torch
import torch.nn.functional as F
from support.tiny import tiny_config, tiny_run_args

from formats.packed_data import PackedRows, load_splits
from modeling_gpt2_scratch import GPT2ScratchForCausalLM
from training.arguments import parse_config
from training.data import build_data
from training.evaluation import eager_module, evaluate_loss, generate_samples


def tiny_model(data):
    return GPT2ScratchForCausalLM(tiny_config(vocab_size=data.metadata["tokenizer"]["vocab_size"], n_positions=32,
                                              eos_token_id=data.metadata["tokenizer"]["eot_id"]))


def test_validation_loss_is_the_mean_over_the_first_eval_tokens(tiny_data, tmp_path, accelerator):
    config = parse_config(tiny_run_args(tiny_data, tmp_path, eval_tokens=320))  # 10 rows of 32
    data = build_data(config, world_size=1)
    model = tiny_model(data)
    rows = torch.from_numpy(PackedRows(load_splits(tiny_data)["validation"]).take(np.arange(10)).astype(np.int64))
    with torch.no_grad():
        logits = model.eval()(rows[:, :-1]).logits
    expected = F.cross_entropy(logits.flatten(0, 1).double(), rows[:, 1:].flatten()).item()
    batches_taken = []
    loss = evaluate_loss(model.train(), data, config, accelerator, batch_size=4,
                         on_batch=lambda: batches_taken.append(1))
    assert abs(loss - expected) < 1e-5
    assert model.training  # back to training afterwards
    assert len(batches_taken) == 3  # 10 rows in micro-batches of 4: each batch is the watchdog's progress


def test_samples_are_seeded_by_the_step_and_leave_the_training_rng_alone(tiny_data, tmp_path, accelerator):
    config = parse_config(tiny_run_args(tiny_data, tmp_path, sample_every=6, num_samples=3, sample_tokens=6))
    data = build_data(config, world_size=1)
    model = tiny_model(data)
    torch.manual_seed(5)
    expected_next = torch.rand(3)
    torch.manual_seed(5)
    first = generate_samples(model, data.tokenizer, config, accelerator, step=10)
    assert torch.equal(torch.rand(3), expected_next)
    assert generate_samples(model, data.tokenizer, config, accelerator, step=10) == first and len(first) == 3
    assert all(text.startswith(config.evaluation.sample_prompt) for text in first)
    torch.manual_seed(config.data.seed + 10)  # the same draw, made by hand
    prompt = data.tokenizer(config.evaluation.sample_prompt, return_tensors="pt").input_ids.repeat(3, 1)
    by_hand = model.eval().generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=True, top_k=50,
                                    max_new_tokens=6, pad_token_id=data.tokenizer.eos_token_id)
    assert data.tokenizer.batch_decode(by_hand, skip_special_tokens=True) == first


def test_evaluation_runs_on_the_eager_module_under_compile(accelerator):
    model = GPT2ScratchForCausalLM(tiny_config())
    compiled = torch.compile(model, backend="eager")
    assert eager_module(compiled, accelerator) is model
