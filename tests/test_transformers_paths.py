"""A checkpoint saved by run_pretrain.py in every standard transformers path, against stock GPT-2.

The reference is always stock `GPT2LMHeadModel` holding the same weights (`to_gpt2()`); each path is
checked on `final/` as a run writes it by default (a plain GPT-2) and with `--final_format scratch` (this
model's class, loaded as remote code). Both runs train identically.
"""

import logging
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2LMHeadModel

from eval.parity import assert_same_network

PROMPTS = ["def parse(", "import os\nimport", "class Message:\n    def __init__(self, header"]
NEW_TOKENS = 8


@pytest.fixture(scope="module", params=["gpt2", "scratch"])
def checkpoint(request, trained_run, trained_scratch_run):
    return (trained_run if request.param == "gpt2" else trained_scratch_run) / "final"


@pytest.fixture(scope="module")
def model_and_stock(checkpoint):
    model = AutoModelForCausalLM.from_pretrained(checkpoint, trust_remote_code=True).eval()
    stock = model if isinstance(model, GPT2LMHeadModel) else model.to_gpt2().eval()
    return model, stock


@pytest.fixture(scope="module")
def left_padding_tokenizer(checkpoint):
    tokenizer = AutoTokenizer.from_pretrained(checkpoint, trust_remote_code=True)
    tokenizer.pad_token, tokenizer.padding_side = tokenizer.eos_token, "left"
    return tokenizer


CACHES = {"dynamic": {}, "no cache": {"use_cache": False}, "static": {"cache_implementation": "static"}}


@pytest.mark.parametrize("cache", CACHES)
def test_left_padded_batch_generates_as_each_prompt_alone_and_as_stock(model_and_stock, left_padding_tokenizer, cache):
    model, stock = model_and_stock
    batch = left_padding_tokenizer(PROMPTS, padding=True, return_tensors="pt")
    assert (batch.attention_mask == 0).any()  # the prompts differ in length: some rows are padded
    kwargs = dict(max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=left_padding_tokenizer.pad_token_id,
                  **CACHES[cache])
    generated = model.generate(**batch, **kwargs)
    assert torch.equal(generated, stock.generate(**batch, **kwargs))
    for row, prompt in enumerate(PROMPTS):
        alone = model.generate(**left_padding_tokenizer([prompt], return_tensors="pt"), **kwargs)
        assert torch.equal(generated[row, -NEW_TOKENS:], alone[0, -NEW_TOKENS:]), prompt


def test_sampled_generation_of_a_padded_batch_matches_stock(model_and_stock, left_padding_tokenizer):
    model, stock = model_and_stock
    batch = left_padding_tokenizer(PROMPTS, padding=True, return_tensors="pt")
    kwargs = dict(max_new_tokens=NEW_TOKENS, do_sample=True, top_k=20, temperature=0.9,
                  pad_token_id=left_padding_tokenizer.pad_token_id)
    torch.manual_seed(7)
    sampled = model.generate(**batch, **kwargs)
    torch.manual_seed(7)
    assert torch.equal(sampled, stock.generate(**batch, **kwargs))


def test_position_ids_follow_the_padding_mask(model_and_stock, left_padding_tokenizer):
    """A left-padded row's logits are those of the same prompt alone, as stock GPT-2's are."""
    model, _ = model_and_stock
    batch = left_padding_tokenizer(PROMPTS, padding=True, return_tensors="pt")
    position_ids = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        padded = model(**batch, position_ids=position_ids).logits
        for row, prompt in enumerate(PROMPTS):
            alone = model(**left_padding_tokenizer([prompt], return_tensors="pt")).logits
            assert_same_network(padded[row, -alone.shape[1]:], alone[0])


def test_compiled_forward_decodes_with_a_static_cache(trained_scratch_run, left_padding_tokenizer):
    """How transformers 5 decodes fast: a compiled forward over a static cache."""
    model = AutoModelForCausalLM.from_pretrained(trained_scratch_run / "final", trust_remote_code=True).eval()
    stock = model.to_gpt2().eval()
    batch = left_padding_tokenizer(PROMPTS, padding=True, return_tensors="pt")
    kwargs = dict(max_new_tokens=NEW_TOKENS, do_sample=False, cache_implementation="static",
                  pad_token_id=left_padding_tokenizer.pad_token_id)
    expected = stock.generate(**batch, **kwargs)
    torch._dynamo.reset()
    model.forward = torch.compile(model.forward, backend="aot_eager", fullgraph=True)
    assert torch.equal(model.generate(**batch, **kwargs), expected)


def test_eval_mode_returns_loss_and_logits_like_stock(model_and_stock):
    model, stock = model_and_stock
    ids = torch.randint(0, model.config.vocab_size, (2, 20))
    labels = ids.clone()
    labels[0, :6] = -100
    with torch.no_grad():
        ours, reference = model(ids, labels=labels), stock(ids, labels=labels)
    assert ours.logits is not None and ours.logits.shape == reference.logits.shape
    assert_same_network(ours.logits, reference.logits)
    assert_same_network(ours.loss, reference.loss)


def blocks_dataset(vocab_size: int, rows: int = 6, length: int = 16):
    from datasets import Dataset

    ids = torch.randint(0, vocab_size, (rows, length), generator=torch.Generator().manual_seed(3))
    return Dataset.from_dict({"input_ids": ids.tolist(), "labels": ids.tolist()})


def trainer_for(model, tmp_path, dataset):
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=2, per_device_eval_batch_size=2,
                             max_steps=2, report_to=[], use_cpu=True, save_strategy="no", logging_strategy="no",
                             disable_tqdm=True, seed=0)
    return Trainer(model=model, args=args, train_dataset=dataset, eval_dataset=dataset)


def test_trainer_evaluates_predicts_and_trains(trained_scratch_run, tmp_path):
    """Trainer finds `labels` as the label column, gets `eval_loss` and logits, and trains.

    The loss is checked against the mean next-token cross-entropy of stock's logits. (Stock GPT-2's own
    Trainer loss is not the reference: transformers 5.24 counts its targets over the unshifted labels,
    one per row too many, because `GPT2LMHeadModel`'s name gives no `loss_type`.)
    """
    model = AutoModelForCausalLM.from_pretrained(trained_scratch_run / "final", trust_remote_code=True).eval()
    stock = model.to_gpt2().eval()
    dataset = blocks_dataset(model.config.vocab_size)
    trainer = trainer_for(model, tmp_path, dataset)
    assert trainer.label_names == ["labels"]
    ids = torch.tensor(dataset["input_ids"])
    with torch.no_grad():
        stock_logits = stock(ids).logits
    next_token_loss = F.cross_entropy(stock_logits[:, :-1].reshape(-1, stock_logits.shape[-1]), ids[:, 1:].reshape(-1))
    metrics = trainer.evaluate()
    assert metrics["eval_loss"] == pytest.approx(next_token_loss.item(), rel=1e-5)
    predictions = trainer.predict(dataset).predictions
    assert predictions.shape == (6, 16, model.config.vocab_size)
    torch.testing.assert_close(torch.from_numpy(predictions), stock_logits, atol=1e-4, rtol=1e-4)
    trained = trainer.train()
    assert trained.global_step == 2 and trained.training_loss == pytest.approx(next_token_loss.item(), rel=0.2)


def test_text_generation_pipeline_matches_stock(trained_run, trained_scratch_run):
    from transformers import pipeline

    ours = pipeline("text-generation", model=str(trained_scratch_run / "final"), trust_remote_code=True)
    stock = pipeline("text-generation", model=str(trained_run / "final"))
    kwargs = dict(max_new_tokens=NEW_TOKENS, do_sample=False)
    assert ours(PROMPTS[0], **kwargs)[0]["generated_text"] == stock(PROMPTS[0], **kwargs)[0]["generated_text"]
    assert ours(PROMPTS[0], **kwargs)[0]["generated_text"].startswith(PROMPTS[0])


TOKENIZER_SCRIPT = """
import sys
from transformers import AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1], {extra})
print("LOADED", type(tokenizer).__name__, tokenizer("def parse(").input_ids)
"""


@pytest.mark.parametrize("final_format,extra", [("gpt2", ""), ("scratch", "trust_remote_code=True")])
def test_tokenizer_loads_without_a_custom_code_prompt(trained_run, trained_scratch_run, final_format, extra):
    final = (trained_run if final_format == "gpt2" else trained_scratch_run) / "final"
    result = subprocess.run([sys.executable, "-c", TOKENIZER_SCRIPT.format(extra=extra), str(final)],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert "LOADED" in result.stdout, result.stderr
    assert "custom code" not in result.stdout + result.stderr
    expected = AutoTokenizer.from_pretrained(trained_run / "final")("def parse(").input_ids
    assert result.stdout.strip().endswith(str(expected))


def test_forward_generate_save_and_load_are_quiet(trained_scratch_run, tmp_path, caplog):
    """No warning from our code in a normal forward, generate, save or load (transformers' logger or Python's)."""
    transformers.logging.set_verbosity_warning()
    transformers.logging.enable_propagation()
    try:
        with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING, logger="transformers"):
            warnings.simplefilter("always")
            model = AutoModelForCausalLM.from_pretrained(trained_scratch_run / "final", trust_remote_code=True).eval()
            ids = torch.randint(0, model.config.vocab_size, (2, 10))
            with torch.no_grad():
                model(ids, labels=ids)
                model(ids, attention_mask=torch.ones_like(ids))
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False,
                           pad_token_id=model.config.eos_token_id)
            model.save_pretrained(tmp_path / "again")
            AutoModelForCausalLM.from_pretrained(tmp_path / "again", trust_remote_code=True)
    finally:
        transformers.logging.disable_propagation()
    messages = [str(w.message) for w in caught] + [record.getMessage() for record in caplog.records]
    assert messages == []


def test_legacy_past_key_values_argument_still_decodes(trained_scratch_run):
    """Callers written for older transformers pass the cache as `past_key_values`."""
    model = AutoModelForCausalLM.from_pretrained(trained_scratch_run / "final", trust_remote_code=True).eval()
    ids = torch.randint(0, model.config.vocab_size, (1, 9))
    with torch.no_grad():
        whole = model(ids).logits[:, -1]
        first = model(ids[:, :-1], use_cache=True)
        cache = first.cache if "cache" in first else first.past_key_values
        step = model(ids[:, -1:], past_key_values=cache, use_cache=True).logits[:, -1]
    assert_same_network(step, whole)
