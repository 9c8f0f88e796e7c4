"""eval/lm_eval_local.py: lm-eval-harness's HellaSwag scoring on our checkpoints and their stock exports."""

import pytest
from conftest import write_jsonl


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
