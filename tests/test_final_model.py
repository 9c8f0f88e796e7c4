"""training/final_model.py: final/ (a plain GPT-2 by default), its model card and the hub upload (a stand-in HfApi)."""

import json
import shutil
import subprocess
import sys

import pytest
import torch
from support.runs import losses_in
from support.tiny import tiny_run_args
from transformers import AutoModelForCausalLM, GPT2LMHeadModel

import run_pretrain
from eval.parity import assert_same_network
from modeling_gpt2_scratch import GPT2ScratchForCausalLM
from training import final_model
from training.arguments import parse_config
from training.data import build_data
from training.exit_codes import ExitCode


class FakeHub:
    """Stands in for huggingface_hub.HfApi (no hub here): records each call, 'uploads' by copying the folder."""

    calls: list = []
    root = None
    fail_on: str | None = None

    def create_repo(self, repo_id, private=False, exist_ok=False):
        self._record("create_repo", repo_id=repo_id, private=private, exist_ok=exist_ok)

    def upload_folder(self, repo_id, folder_path, commit_message):
        self._record("upload_folder", repo_id=repo_id)
        shutil.copytree(folder_path, self.root / repo_id)
        return f"https://huggingface.co/{repo_id}"

    def _record(self, name, **kwargs):
        FakeHub.calls.append((name, kwargs))
        if FakeHub.fail_on == name:
            raise ConnectionError("hub unreachable")


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    FakeHub.calls, FakeHub.root, FakeHub.fail_on = [], tmp_path / "hub", None
    monkeypatch.setattr(final_model, "HfApi", FakeHub)
    monkeypatch.setattr(final_model, "get_token", lambda: "hf_test")
    return FakeHub


def test_push_to_hub_uploads_the_saved_model_and_its_card(tiny_data, tmp_path, fake_hub):
    from huggingface_hub import ModelCard
    from transformers import GPT2LMHeadModel

    out = tmp_path / "run"
    args = tiny_run_args(tiny_data, out, max_steps=6, push_to_hub=True, hub_model_id="me/tiny-gpt2", hub_private=True)
    assert run_pretrain.main(args) == 0
    assert [name for name, _ in fake_hub.calls] == ["create_repo", "upload_folder"]
    assert fake_hub.calls[0][1] == {"repo_id": "me/tiny-gpt2", "private": True, "exist_ok": True}
    pushed = fake_hub.root / "me/tiny-gpt2"
    assert sorted(p.name for p in pushed.iterdir()) == sorted(p.name for p in (out / "final").iterdir())
    ours = GPT2ScratchForCausalLM.from_pretrained(out / "final").eval()  # our class reads a plain GPT-2 too
    stock = GPT2LMHeadModel.from_pretrained(pushed).eval()  # what the hub got loads with no remote code
    ids = torch.tensor([[1, 5, 9, 2, 7]])
    assert_same_network(stock(ids).logits, ours(ids, return_logits=True).logits)
    card = ModelCard.load(pushed / "README.md")
    assert (card.data.library_name, card.data.pipeline_tag) == ("transformers", "text-generation")
    [(_, val_loss)] = losses_in(out / "log.jsonl", "eval", "val_loss")
    assert f"| {val_loss:.4f} |" in card.text
    # model-index metadata: the hub shows these as the model's evaluation results
    assert [(r.metric_type, r.metric_value, r.dataset_split) for r in card.data.eval_results] == [
        ("loss", round(val_loss, 4), "validation")]
    assert 'from_pretrained("me/tiny-gpt2")' in card.text and "6 optimizer steps of 256 tokens" in card.text
    assert f"{stock.num_parameters():,} parameters" in card.text
    assert "![Training curves](training_curves.png)" in card.text and (pushed / "training_curves.png").stat().st_size
    assert "trust_remote_code" not in card.text and "--model_args pretrained=me/tiny-gpt2 " in card.text


def test_model_card_names_a_hub_dataset_in_its_metadata(tiny_data, tmp_path):
    config = parse_config(tiny_run_args(tiny_data, tmp_path / "run", push_to_hub=True, hub_model_id="me/gpt2-fineweb"))
    data = build_data(config, world_size=1)
    commit = "4863ab07d7f32b1f0a1ec8d6e1ea1f1c9c1d2e3f"
    data.metadata["source"] = {"dataset": "HuggingFaceFW/fineweb-edu", "dataset_config": "sample-10BT",
                               "dataset_revision": commit}
    model = run_pretrain.build_model(config, data)
    card = final_model.model_card(model, data, config, tmp_path / "run")
    assert card.data.datasets == ["HuggingFaceFW/fineweb-edu"]
    assert f"on `HuggingFaceFW/fineweb-edu` (sample-10BT, revision {commit})" in card.text
    assert card.text.count("# gpt2-fineweb") == 1
    assert "(no evaluation logged)" in card.text  # no log yet: the table says so instead of inventing scores


def test_hub_failures_fail_early_or_keep_the_trained_model(tiny_data, tmp_path, fake_hub, monkeypatch, capsys):
    args = dict(max_steps=2, eval_every=2, save_every=0, push_to_hub=True, hub_model_id="me/tiny-gpt2")
    fake_hub.fail_on = "create_repo"
    assert run_pretrain.main(tiny_run_args(tiny_data, tmp_path / "refused", **args)) == 2
    assert "cannot create hub repository me/tiny-gpt2: hub unreachable" in capsys.readouterr().err
    assert not (tmp_path / "refused").exists()  # failed before anything was trained or written

    fake_hub.fail_on = "upload_folder"
    out = tmp_path / "run"
    assert run_pretrain.main(tiny_run_args(tiny_data, out, **args)) == ExitCode.UPLOAD_FAILED
    assert f"retry with: hf upload me/tiny-gpt2 {out / 'final'} ." in capsys.readouterr().err
    assert GPT2ScratchForCausalLM.from_pretrained(out / "final").config.n_layer == 2

    monkeypatch.setattr(final_model, "get_token", lambda: None)
    assert run_pretrain.main(tiny_run_args(tiny_data, tmp_path / "no_token", **args)) == 2
    assert "needs a Hugging Face token" in capsys.readouterr().err


LOADERS_SCRIPT = """
import sys
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline
folder = sys.argv[1]
model = AutoModelForCausalLM.from_pretrained(folder)
tokenizer = AutoTokenizer.from_pretrained(folder)
text = pipeline("text-generation", model=folder)("def ", max_new_tokens=4, do_sample=False)[0]["generated_text"]
print("LOADED", type(model).__name__, model.config.model_type, type(tokenizer).__name__, text.startswith("def "))
"""


def test_final_is_one_plain_gpt2_that_loads_with_defaults_and_no_prompt(trained_run):
    final = trained_run / "final"
    done = subprocess.run([sys.executable, "-c", LOADERS_SCRIPT, str(final)], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = next(line for line in done.stdout.splitlines() if line.startswith("LOADED")).split()
    assert loaded[1:3] == ["GPT2LMHeadModel", "gpt2"] and loaded[-1] == "True"  # and the pipeline generated
    assert "custom code" not in done.stdout + done.stderr
    config = json.loads((final / "config.json").read_text())
    assert config["model_type"] == "gpt2" and "auto_map" not in config
    assert [p.name for p in final.glob("*.safetensors")] == ["model.safetensors"] and not list(final.glob("*.py"))
    assert sorted(p.name for p in trained_run.iterdir() if p.name.startswith("final")) == ["final"]


def test_our_class_continues_training_from_final(tiny_data, trained_run, tmp_path):
    config = parse_config(tiny_run_args(tiny_data, tmp_path / "more", init_from=trained_run / "final", max_steps=2))
    data = build_data(config, world_size=1)
    ours = run_pretrain.build_model(config, data).eval()
    stock = GPT2LMHeadModel.from_pretrained(trained_run / "final").eval()
    ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
    with torch.no_grad():
        assert_same_network(ours(ids).logits, stock(ids).logits)
    assert run_pretrain.main(tiny_run_args(tiny_data, tmp_path / "more", init_from=trained_run / "final",
                                           max_steps=2)) == 0


def test_the_scratch_format_is_this_models_class_behind_remote_code(trained_run, trained_scratch_run):
    config = json.loads((trained_scratch_run / "final" / "config.json").read_text())
    assert config["model_type"] == "gpt2_scratch" and "AutoModelForCausalLM" in config["auto_map"]
    ours = AutoModelForCausalLM.from_pretrained(trained_scratch_run / "final", trust_remote_code=True).eval()
    stock = GPT2LMHeadModel.from_pretrained(trained_run / "final").eval()  # the same training, saved plain
    ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
    with torch.no_grad():
        assert_same_network(ours(ids).logits, stock(ids).logits)
    card = (trained_scratch_run / "final" / "README.md").read_text()
    assert "trust_remote_code=True" in card
