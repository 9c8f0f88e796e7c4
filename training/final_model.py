"""The end of a run: final/ (a plain GPT-2 by default), its tokenizer, model card and curves; the hub upload."""

import shutil
import sys
from pathlib import Path

import torch
import yaml
from accelerate import Accelerator
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, get_token

from eval import hellaswag
from eval.plot import plot_run
from eval.val_loss import validation_rows
from formats.packed_data import FINEWEB_EDU, is_local_source
from formats.run_log import LOG_FILE, read_log
from training.arguments import ConfigError, RunConfig
from training.data import TrainingData
from training.evaluation import eager_module
from training.exit_codes import ExitCode

CURVES_FILE = "training_curves.png"  # eval.plot's picture of the run, beside the log and in final/


def final_model_dir(output_dir: Path) -> Path:
    return output_dir / "final"


def save_final_model(model, data: TrainingData, config: RunConfig, accelerator: Accelerator, output_dir: Path):
    """`final/`: one copy of the weights (stock `GPT2LMHeadModel`, or this model's class with `--final_format
    scratch`), the tokenizer, the model card and the training curves. Our class loads either
    (`--init_from final/` continues training)."""
    accelerator.wait_for_everyone()
    unwrapped = eager_module(model, accelerator)
    state = accelerator.get_state_dict(unwrapped)  # whole on the main process, FSDP shards gathered
    final_dir = final_model_dir(output_dir)
    if config.output.final_format == "scratch":
        unwrapped.save_pretrained(final_dir, is_main_process=accelerator.is_main_process,
                                  save_function=accelerator.save, state_dict=state)
        saved = unwrapped
    elif accelerator.is_main_process:
        saved = unwrapped.to_gpt2(state)
        saved.save_pretrained(final_dir)
    if accelerator.is_main_process:
        data.tokenizer.save_pretrained(final_dir)
        if (output_dir / LOG_FILE).exists():  # a run that logged nothing (every job at -1) has no curves
            curves = plot_run(output_dir / LOG_FILE, output_dir / CURVES_FILE, {},
                              references=data.metadata["source"]["dataset"] == FINEWEB_EDU)
            shutil.copyfile(curves, final_dir / CURVES_FILE)
        model_card(saved, data, config, output_dir).save(final_dir / "README.md")
    accelerator.wait_for_everyone()
    return final_dir


def model_card(model, data: TrainingData, config: RunConfig, output_dir: Path) -> ModelCard:
    """The README.md beside the final weights, pushed with them: what was trained, on what, how it scored."""
    source = data.metadata["source"]
    on_hub = not is_local_source(source)
    pinned = [source.get("dataset_config"), source.get("dataset_revision") and f"revision {source['dataset_revision']}"]
    subset = f" ({', '.join(part for part in pinned if part)})" if any(pinned) else ""
    corpus = f"`{source['dataset']}`{subset}" if on_hub else f"local files ({', '.join(source['data_files'])})"
    title = config.hub.hub_model_id.rsplit("/", 1)[-1] if config.hub.hub_model_id else output_dir.resolve().name
    log_path = output_dir / LOG_FILE
    rows, eval_results = last_scores(read_log(log_path) if log_path.exists() else {}, data, config, corpus, on_hub)
    # eval_results become the card's model-index: the hub shows them as the model's scores.
    metadata = ModelCardData(library_name="transformers", pipeline_tag="text-generation",
                             tags=["gpt2", "gpt2-scratch", "pretraining"],
                             datasets=[source["dataset"]] if on_hub else None,
                             model_name=title, eval_results=eval_results or None)
    name = config.hub.hub_model_id or str(final_model_dir(output_dir))
    has_curves = (final_model_dir(output_dir) / CURVES_FILE).exists()
    return ModelCard(card_text(model, data, config, metadata, title, name, corpus, rows, has_curves))


def last_scores(log: dict, data: TrainingData, config: RunConfig, corpus: str, on_hub: bool):
    """The run's last validation loss and HellaSwag: table rows for the card, and the hub's EvalResults."""
    rows, eval_results = [], []
    if log.get("eval"):
        evaluation = log["eval"][-1]
        tokens = validation_rows(len(data.validation), config.evaluation.eval_tokens, data.block_size) * data.block_size
        rows.append(f"| validation loss, {tokens:,} held-out tokens (step {evaluation['step']:,}) | "
                    f"{evaluation['val_loss']:.4f} |")
        eval_results.append(EvalResult(
            task_type="text-generation", task_name="Language modelling", metric_type="loss",
            metric_name="validation loss", metric_value=round(evaluation["val_loss"], 4),
            dataset_type=data.metadata["source"]["dataset"] if on_hub else "local",
            dataset_name=f"held-out split of {corpus}", dataset_split="validation"))
    if log.get("hellaswag"):
        swag = log["hellaswag"][-1]
        swag_data = config.evaluation.hellaswag_file or f"{hellaswag.HUB_DATASET} validation"
        rows.append(f"| HellaSwag-schema `acc_norm`, {swag['examples']:,} examples, "
                    f"{swag_data} (step {swag['step']:,}) | {swag['acc_norm']:.4f} |")
        eval_results.append(EvalResult(
            task_type="multiple-choice", task_name="HellaSwag (the reproduction's scoring)", metric_type="acc_norm",
            metric_value=round(swag["acc_norm"], 4), dataset_name=swag_data, dataset_split="validation",
            dataset_type="local" if config.evaluation.hellaswag_file else hellaswag.HUB_DATASET))
    return rows, eval_results


def card_text(model, data: TrainingData, config: RunConfig, metadata: ModelCardData, title: str, name: str,
              corpus: str, rows: list[str], has_curves: bool) -> str:
    shape, steps, tokens_per_step = model.config, config.optimization.max_steps, config.data.total_batch_tokens
    parameters = model.num_parameters()
    start = f"from `{config.model.init_from}`" if config.model.init_from else "from scratch"
    stock_gpt2 = config.output.final_format == "gpt2"
    stock_note = (" Saved as a plain GPT-2 (`GPT2LMHeadModel`): any GPT-2 tool loads it, no remote code."
                  if stock_gpt2 else " Saved in gpt2-scratch's own class: it loads with `trust_remote_code=True`.")
    load_args = "" if stock_gpt2 else ", trust_remote_code=True"
    lm_eval_args = f"pretrained={name}" + ("" if stock_gpt2 else ",trust_remote_code=True")
    curves = f"\n![Training curves]({CURVES_FILE})\n" if has_curves else ""
    return f"""---
{metadata.to_yaml()}
---

# {title}

A GPT-2 language model trained {start} with gpt2-scratch's `run_pretrain.py`: {shape.n_layer} layers,
{shape.n_head} heads, width {shape.n_embd}, context {shape.n_positions}, {parameters:,} parameters.{stock_note}
Trained for {steps:,} optimizer steps of {tokens_per_step:,} tokens ({steps * tokens_per_step:,} tokens)
on {corpus}, tokenized with `{data.metadata["tokenizer"]["name_or_path"]}`.

| measure | value |
| --- | --- |
{chr(10).join(rows) or "| (no evaluation logged) | |"}
{curves}
## Use

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained("{name}"{load_args})
tokenizer = AutoTokenizer.from_pretrained("{name}"{load_args})
```

```bash
lm_eval --model hf --model_args {lm_eval_args} --tasks hellaswag
```

## Training configuration

```yaml
{yaml.safe_dump(config.to_dict(), sort_keys=False).strip()}
```
"""


def create_hub_repo(config: RunConfig, accelerator: Accelerator):
    """Before training, as transformers' Trainer does: a missing token or a refused name fails now, not at the end.
    The main process asks the hub; every process learns the outcome and stops alike."""
    problem = None
    if accelerator.is_main_process:
        try:
            if get_token() is None:
                problem = "--push_to_hub needs a Hugging Face token: run `hf auth login` or set HF_TOKEN"
            else:
                HfApi().create_repo(config.hub.hub_model_id, private=config.hub.hub_private, exist_ok=True)
        except Exception as error:  # HTTP refusals and network failures alike: nothing has been trained yet
            problem = f"cannot create hub repository {config.hub.hub_model_id}: {error}"
    failed = accelerator.reduce(torch.tensor(float(problem is not None), device=accelerator.device), "sum").item()
    if failed:
        raise ConfigError(problem or "the main process could not create the hub repository (its error is above)")


def push_final_model(output_dir: Path, config: RunConfig) -> int:
    """Upload the saved folder as one commit; on failure the model stays on disk and the message says how to retry."""
    folder = final_model_dir(output_dir)
    try:
        url = HfApi().upload_folder(repo_id=config.hub.hub_model_id, folder_path=folder,
                                    commit_message=f"gpt2-scratch: {config.optimization.max_steps:,} steps")
    except Exception as error:  # whatever the hub or the network says, the trained model is safe on disk
        print(f"run_pretrain.py: error: pushing {folder} to the hub failed: {error}\n"
              f"The model is saved; retry with: hf upload {config.hub.hub_model_id} {folder} .", file=sys.stderr)
        return ExitCode.UPLOAD_FAILED
    print(f"pushed {folder} to {url}")
    return ExitCode.OK
