import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import tiktoken
import torch
from accelerate import Accelerator
from tiktoken.load import load_tiktoken_bpe
from tiktoken_ext.openai_public import r50k_pat_str
from transformers import AutoTokenizer

import run_pretrain
from configuration import GPT2ScratchConfig
from eval.hellaswag import Example
from formats.packed_data import PackedRows
from modeling_gpt2_scratch import GPT2ScratchForCausalLM
from prepare_data import PrepareArguments, main, prepare
from training.arguments import parse_config

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    """`../shared/data` beside the checkout, or wherever GPT2_SCRATCH_DATA points."""
    return Path(os.environ.get("GPT2_SCRATCH_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not (path / "gpt2.tiktoken").exists():
        pytest.skip(f"shared data not found at {path} (set GPT2_SCRATCH_DATA)")
    return path


def tiny_config(**overrides) -> GPT2ScratchConfig:
    """Non-default sizes on purpose: odd vocabulary, heads that are not a power of two."""
    fields = dict(vocab_size=101, n_positions=48, n_embd=36, n_layer=3, n_head=3, bos_token_id=100,
                  eos_token_id=100, pad_vocab_size_multiple=64, loss_chunk_tokens=13)
    fields.update(overrides)
    return GPT2ScratchConfig(**fields)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


TINY_BLOCK = 32


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """Python's own `email` package sources, a 384-token BPE trained on them, packed in blocks of 32."""
    out = tmp_path_factory.mktemp("tiny") / "data"
    prepare_tiny_data(out)
    return out


def prepare_tiny_data(out: Path, **overrides) -> dict:
    """The tiny data's preparation, into `out` (another folder gives the same data)."""
    import sysconfig

    from prepare_data import PrepareArguments, prepare

    stdlib = sysconfig.get_paths()["stdlib"]
    fields = dict(output_dir=str(out), dataset="text", data_files=[f"{stdlib}/email/*.py"], train_tokenizer_vocab=384,
                  block_size=TINY_BLOCK, num_proc=1, val_tokens=4096)
    return prepare(PrepareArguments(**{**fields, **overrides}))


def tiny_run_args(data_dir, output_dir, **overrides) -> list[str]:
    """Command-line flags for run_pretrain on the tiny data: a 2-layer model, 8 rows x 32 tokens a step."""
    flags = dict(data_dir=data_dir, output_dir=output_dir, n_layer=2, n_head=2, n_embd=32, n_positions=TINY_BLOCK,
                 micro_batch_size=4, total_batch_tokens=8 * TINY_BLOCK, dataloader_workers=0, max_steps=12,
                 warmup_steps=2, learning_rate=3e-3, mixed_precision="no", tf32=False, log_every=1, eval_every=6,
                 eval_tokens=1024, sample_every=-1, save_every=6, report_to="none")
    flags.update(overrides)
    return [f"--{key}={value}" for key, value in flags.items()]


@pytest.fixture(scope="session")
def trained_run(tiny_data, tmp_path_factory):
    """A run_pretrain.py job on the tiny data, its `final/` a plain GPT-2 (the default)."""

    out = tmp_path_factory.mktemp("trained") / "run"
    assert run_pretrain.main(tiny_run_args(tiny_data, out, max_steps=6, save_every=0)) == 0
    return out


@pytest.fixture(scope="session")
def trained_scratch_run(tiny_data, tmp_path_factory):
    """The same job with `--final_format scratch`: its `final/` is this model's class (remote code)."""
    import run_pretrain

    out = tmp_path_factory.mktemp("trained_scratch") / "run"
    assert run_pretrain.main(tiny_run_args(tiny_data, out, max_steps=6, save_every=0, final_format="scratch")) == 0
    return out


def logged_train_steps(log_path: Path) -> list[int]:
    if not log_path.exists():
        return []
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    return [r["step"] for r in records if r["type"] == "train"]


def sigkill_during(command: list[str], log_path: Path, after_step: int, env: dict) -> int:
    """Start a training command and SIGKILL a training process of it (one of the launcher's workers, or the
    command itself) once its log shows step `after_step`, as a crash or an OOM killer would; returns the
    command's exit status."""
    import psutil

    with tempfile.TemporaryFile() as stderr:  # a pipe could fill up with progress bars and stall the run
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.time() + 300
        while process.poll() is None and time.time() < deadline:
            if any(step >= after_step for step in logged_train_steps(log_path)):
                break
            time.sleep(0.01)
        assert process.poll() is None, "the run ended before it could be killed"
        workers = [p for p in psutil.Process(process.pid).children(recursive=True)
                   if any(part.endswith("run_pretrain.py") for part in p.cmdline())]
        os.kill((workers[0] if workers else process).pid, signal.SIGKILL)
        return process.wait(timeout=120)


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


def write_jsonl(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


@pytest.fixture(scope="module")
def accelerator():
    return Accelerator(cpu=True, mixed_precision="no")


def adamw_config(**overrides):
    flags = dict(max_steps=100, warmup_steps=10, learning_rate=1e-3, min_lr_ratio=0.1, weight_decay=0.1,
                 max_grad_norm=1.0, mixed_precision="no")
    flags.update(overrides)
    return parse_config([f"--{k}={v}" for k, v in flags.items()])


def losses_in(log_path, kind="train", key="loss"):
    records = [json.loads(line) for line in open(log_path)]
    return [(r["step"], r[key]) for r in records if r["type"] == kind]


def run_script(args, env_extra=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "run_pretrain.py", *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True)


EOT = 50256


BLOCK = 32


DOCUMENTS = [
    "Hello world",
    "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer",
    "Numbers 1234567 and   spaces\t\ttabs, naïve café, 日本語, emoji 🎉 and it's we'll they've.",
    "The slings and arrows of outrageous fortune,\n\nOr to take arms against a sea of troubles",
    " leading space and trailing space ",
    "A" * 300,
    "And by opposing end them. To die, to sleep; no more; and by a sleep to say we end the heart-ache",
    "the thousand natural shocks that flesh is heir to: 'tis a consummation devoutly to be wish'd.",
]


@pytest.fixture(scope="session")
def ranks_file(shared_data):
    return str(shared_data / "gpt2.tiktoken")


@pytest.fixture(scope="session")
def reference(ranks_file):
    """tiktoken's own GPT-2 encoding (r50k_base's pattern and ranks): the independent reference."""
    return tiktoken.Encoding("r50k_reference", pat_str=r50k_pat_str, mergeable_ranks=load_tiktoken_bpe(ranks_file),
                             special_tokens={"<|endoftext|>": EOT})


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i, text in enumerate(DOCUMENTS):
        (folder / f"doc{i}.txt").write_text(text, encoding="utf-8")
    return folder


def prepare_corpus(corpus, out, ranks_file, **overrides):
    fields = dict(output_dir=str(out), dataset="text", data_files=[str(corpus / "*.txt")], tokenizer=ranks_file,
                  block_size=BLOCK, val_tokens=60, num_proc=1)
    fields.update(overrides)
    return prepare(PrepareArguments(**fields))


def rows_of(out, split):
    rows = PackedRows(datasets.load_from_disk(str(out))[split])
    return rows.take(np.arange(len(rows)))


def split_on(stream, separator):
    """Segments between separators (the first element is the separator itself)."""
    segments, current = [], None
    for token in stream:
        if token == separator:
            if current is not None:
                segments.append(current)
            current = []
        else:
            current.append(token)
    segments.append(current)
    return segments


def expect_error(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # progress bars may come before it
    assert err.startswith("prepare_data.py: error:"), err
    assert message in err, err


def patched_run_pretrain(folder: Path, patch: str) -> Path:
    """A script that runs run_pretrain.py's main() after `patch`, source that replaces a function of the kit:
    the device or fault a test stands in for, in processes of their own (a launcher's, or one Accelerate
    state that must differ from the test process's)."""
    script = folder / "patched_run_pretrain.py"
    script.write_text("import os\nimport sys\n\nimport torch\n\nimport run_pretrain\n" + patch
                      + "\nsys.exit(run_pretrain.main(sys.argv[1:]))\n")
    return script
