"""Run lm-eval's HellaSwag scoring on a local HellaSwag-schema JSONL file.

    python -m eval.lm_eval_local --model outputs/gpt2_124m/final --data data/hellaswag_local.jsonl

Same as `lm_eval --model hf --model_args pretrained=MODEL --tasks hellaswag_local --include_path
eval/lm_eval_tasks`, with the task's data file set to --data. A run's final/ is a plain GPT-2 by default;
one saved with `--final_format scratch` needs `--trust_remote_code`.
"""

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parent / "lm_eval_tasks"
TASK = "hellaswag_local"


def write_task(data_path: str, folder: Path) -> Path:
    """A copy of the local task in `folder`, reading `data_path`."""
    text = (TASKS_DIR / f"{TASK}.yaml").read_text()
    data_file = json.dumps(str(Path(data_path).resolve()))  # a JSON string is a valid YAML scalar
    text = text.replace("validation: data/hellaswag_local.jsonl", f"validation: {data_file}")
    (folder / f"{TASK}.yaml").write_text(text)
    shutil.copyfile(TASKS_DIR / "utils.py", folder / "utils.py")
    return folder


def evaluate(model: str, data_path: str, limit: int | None = None, batch_size: int = 16, device: str | None = None,
             trust_remote_code: bool = False) -> dict:
    """{'acc': ..., 'acc_norm': ...} from lm-eval's `simple_evaluate` on the local task."""
    import lm_eval
    import torch
    from lm_eval.tasks import TaskManager

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as folder:
        task_manager = TaskManager(include_path=str(write_task(data_path, Path(folder))))
        model_args = f"pretrained={model}" + (",trust_remote_code=True" if trust_remote_code else "")
        results = lm_eval.simple_evaluate(model="hf", model_args=model_args, tasks=[TASK], task_manager=task_manager,
                                          limit=limit, batch_size=batch_size, device=device)
    scores = results["results"][TASK]
    return {"acc": scores["acc,none"], "acc_norm": scores["acc_norm,none"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="Checkpoint directory or hub id.")
    parser.add_argument("--data", required=True, help="HellaSwag-schema JSONL file.")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--device", default=None)
    parser.add_argument("--trust_remote_code", action="store_true", help="For a model saved in this kit's class.")
    args = parser.parse_args(argv)
    scores = evaluate(args.model, args.data, args.limit, args.batch_size, args.device, args.trust_remote_code)
    print(json.dumps(scores, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
