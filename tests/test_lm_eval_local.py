"""eval/lm_eval_local.py: lm-eval-harness's HellaSwag scoring on our checkpoints and their stock exports."""

import pytest
from support.corpus import write_jsonl


def hellaswag_records(examples) -> list[dict]:
    """The examples in HellaSwag's own schema, which lm-eval's preprocessing reads."""
    return [{"ind": i, "activity_label": "Story", "ctx_a": e.context, "ctx_b": "", "ctx": e.context,
             "endings": e.endings, "label": str(e.label), "split": "val", "split_type": "indomain",
             "source_id": "test"} for i, e in enumerate(examples)]


@pytest.mark.slow
def test_lm_eval_scores_checkpoint_and_stock_export_identically(model, tokenizer, examples, tmp_path):
    from eval.lm_eval_local import evaluate

    model.save_pretrained(tmp_path / "ours")
    tokenizer.save_pretrained(tmp_path / "ours")
    model.to_gpt2().save_pretrained(tmp_path / "stock")
    tokenizer.save_pretrained(tmp_path / "stock")
    data = write_jsonl(tmp_path / "local.jsonl", hellaswag_records(examples))
    ours = evaluate(str(tmp_path / "ours"), str(data), batch_size=8, device="cpu", trust_remote_code=True)
    stock = evaluate(str(tmp_path / "stock"), str(data), batch_size=8, device="cpu")
    assert ours == stock
    assert 0.0 <= ours["acc"] <= 1.0 and set(ours) == {"acc", "acc_norm"}


@pytest.mark.slow
def test_a_runs_final_folder_scores_in_lm_eval_with_no_model_args_but_its_path(trained_run, examples, tmp_path):
    """`lm_eval --model hf --model_args pretrained=DIR`: what a user types for a run's final/."""
    from eval.lm_eval_local import evaluate

    data = write_jsonl(tmp_path / "local.jsonl", hellaswag_records(examples[:6]))
    scores = evaluate(str(trained_run / "final"), str(data), batch_size=8, device="cpu")
    assert set(scores) == {"acc", "acc_norm"} and all(0 <= v <= 1 for v in scores.values())
