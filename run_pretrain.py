"""Pretrain GPT-2 with Accelerate: the reproduction's recipe, as a short main() over well-named steps.

    accelerate launch --config_file accelerate_configs/single_gpu.yaml \
        run_pretrain.py configs/gpt2_124m_fineweb_edu.yaml
    python run_pretrain.py configs/quickstart.yaml --max_steps 50    # any field overrides the YAML

The YAML has one section per dataclass below (model, data, optimization, logging, checkpointing, hub);
every field is also a command-line flag. Data comes from `prepare_data.py`.
"""

import difflib
import hashlib
import json
import os
import shutil
import signal
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import datasets
import numpy as np
import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import DDPCommunicationHookType, DistributedDataParallelKwargs, TorchDynamoPlugin, set_seed
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, get_token
from tqdm.auto import tqdm
from transformers import AutoTokenizer, HfArgumentParser, get_cosine_with_min_lr_schedule_with_warmup

from configuration import GPT2ScratchConfig
from eval import hellaswag
from eval.plot import plot_run, read_log
from eval.val_loss import row_batches, validation_loss
from modeling_gpt2_scratch import GPT2ScratchForCausalLM
from prepare_data import FINEWEB_EDU, LOCAL_BUILDERS, METADATA_FILE, TOKENIZER_SUBDIR, PackedRows

PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL: "try again", what a requeueing job script looks for
NONFINITE_EXIT_CODE = 3
CHECKPOINT_EXIT_CODE = 4
HUB_EXIT_CODE = 5  # trained and saved, but the upload failed
LOG_FILE = "log.jsonl"  # one JSON record per line: train, eval, hellaswag, samples, nonfinite, resume
CURVES_FILE = "training_curves.png"  # eval.plot's picture of the run, beside the log and in the final folders
RUN_STATE_FILE = "trainer_state.json"
CHECKPOINTS_DIR = "checkpoints"
KILL_AFTER_STEP = int(os.environ.get("RUN_PRETRAIN_KILL_AFTER_STEP", "0"))


class ConfigError(Exception):
    """A configuration that cannot run: reported on one line before any GPU time is spent."""


class CheckpointError(Exception):
    """A checkpoint could not be written; the run stops with the earlier checkpoints intact."""


# ---- configuration -------------------------------------------------------------------------------------------


@dataclass
class ModelArguments:
    n_layer: int = field(default=12, metadata={"help": "Transformer blocks."})
    n_head: int = field(default=12, metadata={"help": "Attention heads per block."})
    n_embd: int = field(default=768, metadata={"help": "Width of the residual stream."})
    n_positions: int = field(default=1024, metadata={"help": "Longest sequence the model accepts."})
    dropout: float = field(default=0.0, metadata={"help": "Dropout everywhere (the reproduction uses none)."})
    init_from: str | None = field(default=None, metadata={"help": "Start from these weights (hub id or dir)."})
    compile: bool = field(default=False, metadata={"help": "torch.compile the model (inductor)."})
    compile_mode: str = field(default="default", metadata={
        "help": "Inductor mode: reduce-overhead adds CUDA graphs, max-autotune searches kernels (long warmup).",
        "choices": ["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Recompute activations in backward."})


@dataclass
class DataArguments:
    data_dir: str = field(default="data/fineweb_edu_10B", metadata={"help": "Output of prepare_data.py."})
    micro_batch_size: int = field(default=64, metadata={"help": "Rows per forward pass on each process."})
    total_batch_tokens: int = field(default=524_288, metadata={"help": "Tokens per optimizer step, all processes."})
    dataloader_workers: int = field(default=2, metadata={"help": "Processes that read batches ahead."})


@dataclass
class OptimizationArguments:
    max_steps: int = field(default=19_073, metadata={"help": "Optimizer steps (19,073 x 0.5M tokens = 10B)."})
    learning_rate: float = field(default=6e-4, metadata={"help": "Peak learning rate."})
    min_lr_ratio: float = field(default=0.1, metadata={"help": "Final learning rate as a share of the peak."})
    warmup_steps: int = field(default=715, metadata={"help": "Linear warmup steps."})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW decay, applied to 2-D weights only."})
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_epsilon: float = 1e-8
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping (0 turns it off)."})
    mixed_precision: str = field(default="bf16", metadata={"help": "no, bf16 or fp16.",
                                                           "choices": ["no", "bf16", "fp16"]})
    tf32: bool = field(default=True, metadata={"help": "TF32 matmuls on Ampere and newer GPUs."})
    ddp_bucket_cap_mb: int = field(default=25, metadata={"help": "DDP all-reduce bucket size in MiB (fewer, larger "
                                                         "collectives when raised)."})
    ddp_comm_hook: str = field(default="no", metadata={"help": "Compress gradients to bf16 or fp16 for the all-reduce "
                                                       "(half the bytes; for nodes without NVLink).",
                                                       "choices": ["no", "bf16", "fp16"]})
    seed: int = 1337
    on_nonfinite: str = field(default="stop", metadata={"help": "When loss or gradient norm is NaN/inf: stop the "
                                                        "run, or skip the step.", "choices": ["stop", "skip"]})


@dataclass
class LoggingArguments:
    output_dir: str = field(default="outputs/gpt2_124m", metadata={"help": "Logs, checkpoints, final model."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Start over in a directory of another run."})
    log_every: int = field(default=10, metadata={"help": "Optimizer steps between logged training metrics."})
    eval_every: int = field(default=250, metadata={"help": "Steps between validation losses (0: only at the end)."})
    eval_tokens: int = field(default=10_485_760, metadata={"help": "Validation tokens per evaluation, for any "
                                                           "number of processes."})
    sample_every: int = field(default=250, metadata={"help": "Steps between text samples (0: never)."})
    sample_prompt: str = "Hello, I'm a language model,"
    num_samples: int = 4
    sample_tokens: int = 32
    hellaswag_every: int = field(default=0, metadata={"help": "Steps between HellaSwag evaluations (0: never)."})
    hellaswag_file: str | None = field(default=None, metadata={"help": "HellaSwag-schema JSONL (default: hub)."})
    report_to: str = field(default="tensorboard", metadata={"help": "Accelerate trackers, comma-separated, or none."})


@dataclass
class CheckpointArguments:
    save_every: int = field(default=1000, metadata={"help": "Steps between checkpoints (0: only at the end)."})
    keep_last: int = field(default=3, metadata={"help": "Checkpoints kept on disk."})
    resume_from_checkpoint: str | None = field(default=None, metadata={"help": "'latest' or a checkpoint dir."})
    export_gpt2: bool = field(default=True, metadata={"help": "Also save the final model as stock GPT-2."})


@dataclass
class HubArguments:
    push_to_hub: bool = field(default=False, metadata={"help": "Upload the final model, tokenizer and model card."})
    hub_model_id: str | None = field(default=None, metadata={"help": "USER/NAME of the hub repository."})
    hub_private: bool = field(default=False, metadata={"help": "Create the repository private."})
    hub_format: str = field(default="scratch", metadata={
        "help": "Push this model (loads with trust_remote_code) or its stock GPT-2 export (loads in any GPT-2 tool).",
        "choices": ["scratch", "gpt2"]})


CONFIG_SECTIONS = {
    "model": ModelArguments, "data": DataArguments, "optimization": OptimizationArguments,
    "logging": LoggingArguments, "checkpointing": CheckpointArguments, "hub": HubArguments,
}  # fmt: skip


@dataclass
class RunConfig:
    model: ModelArguments
    data: DataArguments
    optimization: OptimizationArguments
    logging: LoggingArguments
    checkpointing: CheckpointArguments
    hub: HubArguments

    def to_dict(self) -> dict:
        return {name: asdict(getattr(self, name)) for name in CONFIG_SECTIONS}


def read_yaml_config(path: str) -> dict:
    """The YAML's sections flattened to field defaults; unknown names are an error with a suggestion."""
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read config {path}: {error}") from None
    defaults = {}
    for section, values in raw.items():
        if section not in CONFIG_SECTIONS:
            raise ConfigError(f"{path}: unknown section {section!r}{_suggest(section, CONFIG_SECTIONS)}")
        known = {f.name for f in fields(CONFIG_SECTIONS[section])}
        for key, value in (values or {}).items():
            if key not in known:
                raise ConfigError(f"{path}: unknown key {section}.{key}{_suggest(key, known)}")
            defaults[key] = value
    return defaults


def _suggest(name: str, candidates) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def parse_config(argv: list[str] | None = None) -> RunConfig:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(tuple(CONFIG_SECTIONS.values()), allow_abbrev=False)
    if argv and argv[0].endswith((".yaml", ".yml")):
        parser.set_defaults(**read_yaml_config(argv.pop(0)))
    parsed, unknown = parser.parse_known_args(argv)
    if unknown:
        options = [a.lstrip("-") for a in parser._option_string_actions if a.startswith("--")]
        flag = unknown[0].lstrip("-").split("=")[0]
        raise ConfigError(f"unknown option {unknown[0]}{_suggest(flag, options)}")
    sections = {}
    for name, cls in CONFIG_SECTIONS.items():
        sections[name] = cls(**{f.name: getattr(parsed, f.name) for f in fields(cls)})
    return RunConfig(**sections)


# ---- data ----------------------------------------------------------------------------------------------------


class RowBatches(torch.utils.data.Dataset):
    """A prepared split for the DataLoader, indexed by a whole batch of row numbers at once.

    Holds the `datasets.Dataset` (pickled by file reference into loader workers); each process maps
    the rows itself, lazily.
    """

    def __init__(self, split: datasets.Dataset):
        self.split = split
        self._rows = None

    @property
    def rows(self) -> PackedRows:
        if self._rows is None:
            self._rows = PackedRows(self.split)
        return self._rows

    def __len__(self):
        return len(self.split)

    def __getitem__(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.from_numpy(self.rows.take(np.sort(indices)).astype(np.int64))  # (B, block_size + 1)
        return rows[:, :-1].contiguous(), rows[:, 1:].contiguous()  # inputs, aligned targets


class TrainBatchOrder(torch.utils.data.Sampler):
    """Row numbers of this process's micro-batches, from a given optimizer step on.

    Every epoch is a fresh permutation drawn from (seed, epoch). Optimizer step s takes the next
    `rows_per_step` rows of it, whatever the number of processes; process r of W takes micro-batches
    r, r + W, ... among them. So the data a step sees does not depend on W, and resuming at step s
    is a matter of starting here at s.
    """

    def __init__(self, num_rows, micro_batch, accumulation, world_size, rank, seed, start_step=0):
        self.micro_batch, self.accumulation = micro_batch, accumulation
        self.world_size, self.rank, self.seed, self.start_step = world_size, rank, seed, start_step
        self.rows_per_step = micro_batch * accumulation * world_size
        self.steps_per_epoch = num_rows // self.rows_per_step
        self.num_rows = num_rows

    def epoch_of(self, step: int) -> int:
        return step // self.steps_per_epoch

    def __iter__(self):
        step, permutation, epoch = self.start_step, None, None
        while True:
            if self.epoch_of(step) != epoch:
                epoch = self.epoch_of(step)
                permutation = np.random.default_rng([self.seed, epoch]).permutation(self.num_rows)
            step_rows = permutation[(step % self.steps_per_epoch) * self.rows_per_step :][: self.rows_per_step]
            for micro in range(self.accumulation):
                chunk = micro * self.world_size + self.rank
                yield step_rows[chunk * self.micro_batch : (chunk + 1) * self.micro_batch]
            step += 1


@dataclass
class TrainingData:
    train: RowBatches
    validation: RowBatches
    metadata: dict
    tokenizer: object
    block_size: int
    accumulation: int
    rows_per_step: int  # micro-batch x accumulation x processes
    hellaswag: list | None  # examples, when the loop evaluates HellaSwag


def load_data_metadata(data_dir: str) -> dict:
    path = Path(data_dir) / METADATA_FILE
    if not path.exists():
        raise ConfigError(f"{data_dir} is not prepared data ({METADATA_FILE} missing): run prepare_data.py first")
    return json.loads(path.read_text())


def gradient_accumulation_steps(config: RunConfig, block_size: int, world_size: int) -> int:
    tokens_per_micro_step = config.data.micro_batch_size * block_size * world_size
    if config.data.total_batch_tokens % tokens_per_micro_step:
        raise ConfigError(
            f"total_batch_tokens {config.data.total_batch_tokens:,} is not a multiple of micro_batch_size x "
            f"block_size x processes = {config.data.micro_batch_size} x {block_size} x {world_size} = "
            f"{tokens_per_micro_step:,}"
        )
    return config.data.total_batch_tokens // tokens_per_micro_step


def build_data(config: RunConfig, world_size: int) -> TrainingData:
    metadata = load_data_metadata(config.data.data_dir)
    block_size = metadata["block_size"]
    if block_size > config.model.n_positions:
        raise ConfigError(f"data block_size {block_size} exceeds the model's n_positions {config.model.n_positions}")
    splits = datasets.load_from_disk(config.data.data_dir)
    tokenizer = AutoTokenizer.from_pretrained(Path(config.data.data_dir) / TOKENIZER_SUBDIR)
    accumulation = gradient_accumulation_steps(config, block_size, world_size)
    train, validation = RowBatches(splits["train"]), RowBatches(splits["validation"])
    rows_per_step = config.data.micro_batch_size * accumulation * world_size
    if len(train) < rows_per_step:
        raise ConfigError(f"{config.data.data_dir} holds {len(train)} training rows; one step needs {rows_per_step}")
    examples = None
    if config.logging.hellaswag_every:
        try:
            examples = hellaswag.load_examples(config.logging.hellaswag_file)
        except (hellaswag.HellaSwagDataError, OSError) as error:
            raise ConfigError(str(error)) from None
    return TrainingData(train, validation, metadata, tokenizer, block_size, accumulation, rows_per_step, examples)


def train_batches(data: TrainingData, config: RunConfig, accelerator: Accelerator, start_step: int):
    """An endless iterator of (inputs, targets) micro-batches on this process's device."""
    order = TrainBatchOrder(len(data.train), config.data.micro_batch_size, data.accumulation,
                            accelerator.num_processes, accelerator.process_index, config.optimization.seed,
                            start_step)
    loader = torch.utils.data.DataLoader(
        data.train, sampler=order, batch_size=None, num_workers=config.data.dataloader_workers,
        pin_memory=accelerator.device.type == "cuda", persistent_workers=config.data.dataloader_workers > 0,
        prefetch_factor=4 if config.data.dataloader_workers > 0 else None,
    )
    for inputs, targets in loader:
        yield inputs.to(accelerator.device, non_blocking=True), targets.to(accelerator.device, non_blocking=True)


# ---- model and optimizer -------------------------------------------------------------------------------------


def build_model(config: RunConfig, data: TrainingData) -> GPT2ScratchForCausalLM:
    vocab_size, eot_id = data.metadata["tokenizer"]["vocab_size"], data.metadata["tokenizer"]["eot_id"]
    if config.model.init_from:
        model = GPT2ScratchForCausalLM.from_pretrained(config.model.init_from)
        if model.config.vocab_size != vocab_size or model.config.eos_token_id != eot_id:
            raise ConfigError(
                f"{config.model.init_from} has vocab {model.config.vocab_size} (eos {model.config.eos_token_id}); "
                f"the data was prepared with vocab {vocab_size} (eos {eot_id}): prepare it with that tokenizer"
            )
        if data.block_size > model.config.n_positions:
            raise ConfigError(f"data block_size {data.block_size} exceeds {config.model.init_from}'s n_positions")
        return model
    m = config.model
    model_config = GPT2ScratchConfig(
        vocab_size=vocab_size, n_positions=m.n_positions, n_embd=m.n_embd, n_layer=m.n_layer, n_head=m.n_head,
        resid_pdrop=m.dropout, embd_pdrop=m.dropout, attn_pdrop=m.dropout, bos_token_id=eot_id, eos_token_id=eot_id,
    )
    return GPT2ScratchForCausalLM(model_config)


def build_optimizer(model: torch.nn.Module, config: RunConfig, device: torch.device):
    """AdamW with weight decay on 2-D weights only (matmuls and embeddings), and the cosine schedule."""
    o = config.optimization
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": o.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    # Fused on CUDA: one kernel over all parameters, and the step counter is never read back to the host.
    # (On CPU the fused version measured 4% slower on the quick-start model.)
    optimizer = torch.optim.AdamW(groups, lr=o.learning_rate, betas=(o.adam_beta1, o.adam_beta2), eps=o.adam_epsilon,
                                  fused=device.type == "cuda")
    # Not passed through accelerator.prepare: a prepared scheduler steps once per process per step.
    scheduler = get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, num_warmup_steps=o.warmup_steps, num_training_steps=o.max_steps, min_lr_rate=o.min_lr_ratio
    )
    return optimizer, scheduler


# ---- measurement ---------------------------------------------------------------------------------------------

# Dense bf16 tensor-core peaks (FLOP/s) from the vendors' data sheets, matched against the device name.
PEAK_BF16_FLOPS = {
    "H200": 989e12, "H100 SXM": 989e12, "H100 NVL": 835e12, "H100 PCIe": 756e12, "H100": 989e12, "GH200": 989e12,
    "B200": 2250e12, "A100": 312e12, "A800": 312e12, "L40S": 362e12, "L40": 181e12, "A10G": 70e12, "A10": 125e12,
    "L4": 121e12, "RTX 4090": 165e12, "RTX 3090": 71e12, "A6000": 155e12, "MI300X": 1307e12, "MI250X": 383e12,
}  # fmt: skip


def device_peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, flops in PEAK_BF16_FLOPS.items():  # the table lists more specific names first
        if key in name:
            return flops
    return None


def flops_per_token(config: GPT2ScratchConfig, seq_len: int) -> float:
    """Model FLOPs per trained token: 6 per matmul weight (2 forward, 4 backward), the head's `vocab_size`
    rows included and its padding rows not, plus attention's scores and mixing over `seq_len` positions."""
    matmul_weights = 12 * config.n_layer * config.n_embd**2 + config.vocab_size * config.n_embd
    return 6 * matmul_weights + 12 * config.n_layer * config.n_embd * seq_len


class RunLog:
    """Metrics to the trackers and one JSON object per line in output_dir/log.jsonl (main process only)."""

    def __init__(self, accelerator: Accelerator, output_dir: Path):
        self.accelerator = accelerator
        self.path = output_dir / LOG_FILE

    def write(self, kind: str, step: int, **values):
        if not self.accelerator.is_main_process:
            return
        record = {"type": kind, "step": step, "time": time.time(), **values}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        numeric = {f"{kind}/{k}": v for k, v in values.items() if isinstance(v, (int, float)) and v is not None}
        if numeric:
            self.accelerator.log(numeric, step=step)


# ---- evaluation ----------------------------------------------------------------------------------------------


def validation_rows(data: TrainingData, config: RunConfig) -> int:
    """How many validation rows make up `eval_tokens` (all of them, if the split is smaller)."""
    return min(len(data.validation), max(1, config.logging.eval_tokens // data.block_size))


def evaluate_loss(model, data: TrainingData, config: RunConfig, accelerator: Accelerator) -> float:
    """Mean loss over the first `eval_tokens` validation tokens, the same rows for any number of processes."""
    mine = np.arange(accelerator.process_index, validation_rows(data, config), accelerator.num_processes)
    batches = row_batches(data.validation.rows, mine, config.data.micro_batch_size)
    return validation_loss(model, batches, accelerator)


def eager_module(model, accelerator: Accelerator) -> torch.nn.Module:
    """The model without DDP and without torch.compile: variable shapes (generation, HellaSwag batches) would
    recompile, and a compiled module's state dict names every tensor `_orig_mod.<name>`."""
    return accelerator.unwrap_model(model, keep_torch_compile=False)


@torch.no_grad()
def generate_samples(model, tokenizer, config: RunConfig, accelerator: Accelerator, step: int) -> list[str]:
    """Top-k 50 continuations of the prompt through the model's own `generate`, seeded by the step."""
    unwrapped = eager_module(model, accelerator)
    unwrapped.eval()
    prompt = tokenizer(config.logging.sample_prompt, return_tensors="pt").input_ids.to(accelerator.device)
    prompt = prompt.repeat(config.logging.num_samples, 1)
    with torch.random.fork_rng(devices=[accelerator.device] if accelerator.device.type == "cuda" else []):
        torch.manual_seed(config.optimization.seed + step)
        with accelerator.autocast():
            out = unwrapped.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=True, top_k=50,
                                     max_new_tokens=config.logging.sample_tokens, pad_token_id=tokenizer.eos_token_id)
    unwrapped.train()
    return tokenizer.batch_decode(out, skip_special_tokens=True)


def evaluate_hellaswag(model, data: TrainingData, config: RunConfig, accelerator: Accelerator) -> dict:
    return hellaswag.evaluate_model(eager_module(model, accelerator), data.tokenizer, data.hellaswag,
                                    accelerator=accelerator, batch_size=config.data.micro_batch_size)


# ---- checkpoints ---------------------------------------------------------------------------------------------


def checkpoint_dirs(output_dir: Path) -> list[Path]:
    """Checkpoints whose manifest is in place, oldest first (the manifest is written last)."""
    root = output_dir / CHECKPOINTS_DIR
    if not root.exists():
        return []
    found = [p for p in root.iterdir() if p.name.startswith("step_") and not p.name.endswith(".tmp")]
    return sorted((p for p in found if (p / RUN_STATE_FILE).exists()), key=lambda p: int(p.name.split("_")[1]))


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_problem(checkpoint: Path) -> str | None:
    """What is wrong with a checkpoint (naming the file), or None when every file matches its manifest."""
    try:
        manifest = json.loads((checkpoint / RUN_STATE_FILE).read_text())
    except (OSError, json.JSONDecodeError) as error:
        return f"{checkpoint / RUN_STATE_FILE} is unreadable ({error})"
    for name, expected in manifest.get("files", {}).items():
        path = checkpoint / name
        if not path.exists():
            return f"{path} is missing"
        if path.stat().st_size != expected["bytes"]:
            return f"{path} is truncated or altered ({path.stat().st_size} bytes, expected {expected['bytes']})"
        if file_digest(path) != expected["sha256"]:
            return f"{path} is corrupted (checksum mismatch)"
    return None


def save_checkpoint(accelerator: Accelerator, output_dir: Path, step: int, keep_last: int, extra: dict):
    """accelerator.save_state into step_N.tmp, a manifest of checksums, then a rename: a checkpoint is
    either whole or absent, and a failed write leaves the previous ones as they were."""
    final = output_dir / CHECKPOINTS_DIR / f"step_{step:07d}"
    staging = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
    accelerator.wait_for_everyone()
    error = None
    try:
        accelerator.save_state(str(staging))
        if accelerator.is_main_process:
            files = {p.relative_to(staging).as_posix(): {"bytes": p.stat().st_size, "sha256": file_digest(p)}
                     for p in sorted(staging.rglob("*")) if p.is_file()}
            manifest = staging / (RUN_STATE_FILE + ".partial")
            manifest.write_text(json.dumps({"step": step, **extra, "files": files}, indent=2))
            manifest.rename(staging / RUN_STATE_FILE)
    except OSError as caught:  # disk full, quota, permissions: this save is lost, nothing else
        error = caught
    failed = accelerator.reduce(torch.tensor(float(error is not None), device=accelerator.device), "sum").item()
    if failed:
        if accelerator.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
        reason = error or "another process failed to write its part"
        raise CheckpointError(f"could not write checkpoint {final}: {reason}; earlier checkpoints are intact")
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
        for old in checkpoint_dirs(output_dir)[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(old)  # the newest, just written and verified, is always kept
    accelerator.wait_for_everyone()


def resolve_resume(config: RunConfig, output_dir: Path) -> Path | None:
    """The checkpoint to resume from: `latest` is the newest intact one (damaged ones are skipped, with a
    warning); an explicit path must be intact."""
    requested = config.checkpointing.resume_from_checkpoint
    if not requested:
        return None
    if requested == "latest":
        found = checkpoint_dirs(output_dir)
        for checkpoint in reversed(found):
            problem = checkpoint_problem(checkpoint)
            if problem is None:
                return checkpoint
            print(f"run_pretrain.py: warning: skipping damaged checkpoint: {problem}", file=sys.stderr)
        if found:
            raise ConfigError(f"no intact checkpoint in {output_dir / CHECKPOINTS_DIR}")
        return None  # nothing saved yet: a first launch of a requeueing job starts from scratch
    path = Path(requested)
    if not (path / RUN_STATE_FILE).exists():
        raise ConfigError(f"{path} is not a complete checkpoint ({RUN_STATE_FILE} missing)")
    problem = checkpoint_problem(path)
    if problem:
        raise ConfigError(f"cannot resume: {problem}")
    return path


def check_disk_space(output_dir: Path, num_parameters: int):
    """A checkpoint holds fp32 weights and two AdamW moments: 12 bytes a parameter. Refuse to start without room."""
    needed = 12 * num_parameters * 1.1
    existing = next(p for p in [output_dir, *output_dir.resolve().parents] if p.exists())
    free = shutil.disk_usage(existing).free
    if free < needed:
        raise ConfigError(f"{existing} has {free / 2**30:.2f} GiB free; one checkpoint needs about "
                          f"{needed / 2**30:.2f} GiB")


def check_output_dir(config: RunConfig, output_dir: Path, resuming: bool):
    """Refuse to mix two runs in one directory, unless resuming or told to overwrite."""
    previous = output_dir / "run_config.yaml"
    # `latest` is how a requeued job relaunches: the directory holds this very run, maybe without a checkpoint yet.
    if not previous.exists() or resuming or config.checkpointing.resume_from_checkpoint == "latest":
        return
    if not config.logging.overwrite_output_dir:
        raise ConfigError(f"{output_dir} holds another run; resume it (--resume_from_checkpoint latest) or pass "
                          "--overwrite_output_dir")


# ---- the final model ---------------------------------------------------------------------------------------


def final_model_dir(output_dir: Path, stock_gpt2: bool = False) -> Path:
    return output_dir / ("final_gpt2" if stock_gpt2 else "final")


def save_final_model(model, data: TrainingData, config: RunConfig, accelerator: Accelerator, output_dir: Path):
    """`final/` (this model) and `final_gpt2/` (stock GPT-2), each with the tokenizer and a model card."""
    accelerator.wait_for_everyone()
    unwrapped = eager_module(model, accelerator)
    final_dir = final_model_dir(output_dir)
    unwrapped.save_pretrained(final_dir, is_main_process=accelerator.is_main_process,
                              save_function=accelerator.save, state_dict=accelerator.get_state_dict(unwrapped))
    if accelerator.is_main_process:
        curves = plot_run(output_dir / LOG_FILE, output_dir / CURVES_FILE, {},
                          references=data.metadata["source"]["dataset"] == FINEWEB_EDU)
        data.tokenizer.save_pretrained(final_dir)
        model_card(unwrapped, data, config, output_dir, stock_gpt2=False).save(final_dir / "README.md")
        shutil.copyfile(curves, final_dir / CURVES_FILE)
        if config.checkpointing.export_gpt2:
            gpt2_dir, stock = final_model_dir(output_dir, stock_gpt2=True), unwrapped.to_gpt2()
            stock.save_pretrained(gpt2_dir)
            data.tokenizer.save_pretrained(gpt2_dir)
            model_card(stock, data, config, output_dir, stock_gpt2=True).save(gpt2_dir / "README.md")
            shutil.copyfile(curves, gpt2_dir / CURVES_FILE)
    return final_dir


def model_card(model, data: TrainingData, config: RunConfig, output_dir: Path, stock_gpt2: bool) -> ModelCard:
    """The README.md beside the final weights, pushed with them: what was trained, on what, how it scored."""
    c, source = model.config, data.metadata["source"]
    on_hub = source["dataset"] not in LOCAL_BUILDERS
    name = config.hub.hub_model_id or str(final_model_dir(output_dir, stock_gpt2))
    subset = f" ({source['dataset_config']})" if source.get("dataset_config") else ""
    corpus = f"`{source['dataset']}`{subset}" if on_hub else f"local files ({', '.join(source['data_files'])})"
    title = config.hub.hub_model_id.rsplit("/", 1)[-1] if config.hub.hub_model_id else output_dir.resolve().name
    log_path = output_dir / LOG_FILE
    log = read_log(log_path) if log_path.exists() else {}
    scores, eval_results = [], []
    if log.get("eval"):
        evaluation = log["eval"][-1]
        tokens = validation_rows(data, config) * data.block_size
        scores.append(f"| validation loss, {tokens:,} held-out tokens (step {evaluation['step']:,}) | "
                      f"{evaluation['val_loss']:.4f} |")
        eval_results.append(EvalResult(
            task_type="text-generation", task_name="Language modelling", metric_type="loss",
            metric_name="validation loss", metric_value=round(evaluation["val_loss"], 4),
            dataset_type=source["dataset"] if on_hub else "local", dataset_name=f"held-out split of {corpus}",
            dataset_split="validation"))
    if log.get("hellaswag"):
        swag = log["hellaswag"][-1]
        swag_data = config.logging.hellaswag_file or "Rowan/hellaswag validation"
        scores.append(f"| HellaSwag-schema `acc_norm`, {swag['examples']:,} examples, "
                      f"{swag_data} (step {swag['step']:,}) | {swag['acc_norm']:.4f} |")
        eval_results.append(EvalResult(
            task_type="multiple-choice", task_name="HellaSwag (the reproduction's scoring)", metric_type="acc_norm",
            metric_value=round(swag["acc_norm"], 4), dataset_name=swag_data, dataset_split="validation",
            dataset_type="local" if config.logging.hellaswag_file else "Rowan/hellaswag"))
    # eval_results become the card's model-index: the hub shows them as the model's scores.
    metadata = ModelCardData(library_name="transformers", pipeline_tag="text-generation",
                             tags=["gpt2", "gpt2-scratch", "pretraining"],
                             datasets=[source["dataset"]] if on_hub else None,
                             model_name=title, eval_results=eval_results or None)
    start = f"from `{config.model.init_from}`" if config.model.init_from else "from scratch"
    o, tokens_per_step = config.optimization, config.data.total_batch_tokens
    stock_note = " Saved as stock `GPT2LMHeadModel`." if stock_gpt2 else ""
    load_args = "" if stock_gpt2 else ", trust_remote_code=True"
    lm_eval_args = f"pretrained={name}" + ("" if stock_gpt2 else ",trust_remote_code=True")
    text = f"""---
{metadata.to_yaml()}
---

# {title}

A GPT-2 language model trained {start} with gpt2-scratch's `run_pretrain.py`: {c.n_layer} layers,
{c.n_head} heads, width {c.n_embd}, context {c.n_positions}, {model.num_parameters():,} parameters.{stock_note}
Trained for {o.max_steps:,} optimizer steps of {tokens_per_step:,} tokens ({o.max_steps * tokens_per_step:,} tokens)
on {corpus}, tokenized with `{data.metadata["tokenizer"]["name_or_path"]}`.

| measure | value |
| --- | --- |
{chr(10).join(scores) or "| (no evaluation logged) | |"}

![Training curves]({CURVES_FILE})

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
    return ModelCard(text)


def create_hub_repo(config: RunConfig):
    """Before training, as transformers' Trainer does: a missing token or a refused name fails now, not at the end."""
    if get_token() is None:
        raise ConfigError("--push_to_hub needs a Hugging Face token: run `hf auth login` or set HF_TOKEN")
    try:
        HfApi().create_repo(config.hub.hub_model_id, private=config.hub.hub_private, exist_ok=True)
    except Exception as error:  # HTTP refusals and network failures alike: nothing has been trained yet
        raise ConfigError(f"cannot create hub repository {config.hub.hub_model_id}: {error}") from error


def push_final_model(output_dir: Path, config: RunConfig) -> int:
    """Upload the saved folder as one commit; on failure the model stays on disk and the message says how to retry."""
    folder = final_model_dir(output_dir, stock_gpt2=config.hub.hub_format == "gpt2")
    try:
        url = HfApi().upload_folder(repo_id=config.hub.hub_model_id, folder_path=folder,
                                    commit_message=f"gpt2-scratch: {config.optimization.max_steps:,} steps")
    except Exception as error:  # whatever the hub or the network says, the trained model is safe on disk
        print(f"run_pretrain.py: error: pushing {folder} to the hub failed: {error}\n"
              f"The model is saved; retry with: hf upload {config.hub.hub_model_id} {folder} .", file=sys.stderr)
        return HUB_EXIT_CODE
    print(f"pushed {folder} to {url}")
    return 0


# ---- training ------------------------------------------------------------------------------------------------


class PreemptionFlag:
    """Set by SIGTERM or SIGUSR1 (what SLURM and cloud schedulers send before killing a job)."""

    def __init__(self):
        self.raised = False
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.raised = True


@dataclass
class StepResult:
    loss: torch.Tensor  # mean over the step's micro-batches, this process
    grad_norm: torch.Tensor


def train_step(model, optimizer, batches, accumulation: int, config: RunConfig, accelerator: Accelerator):
    """One optimizer step: `accumulation` micro-batches, gradients all-reduced on the last one only."""
    loss_sum = torch.zeros((), device=accelerator.device)
    for micro in range(accumulation):
        inputs, targets = next(batches)
        sync = micro == accumulation - 1
        with nullcontext() if sync else accelerator.no_sync(model):
            # labels and shift_labels both: stock transformers models then score the same aligned targets
            loss = model(input_ids=inputs, labels=targets, shift_labels=targets, use_cache=False).loss
            accelerator.backward(loss / accumulation)
        loss_sum += loss.detach()
    if config.optimization.max_grad_norm > 0:
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), config.optimization.max_grad_norm)
    else:
        grad_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()
                                                          if p.grad is not None]))
    return StepResult(loss_sum / accumulation, grad_norm)


def finish_step(optimizer, result: StepResult, preemption_requested: bool, accelerator: Accelerator):
    """Apply the update unless the loss or gradient norm is non-finite on any process; returns (nonfinite, preempted).

    The flags are agreed on by every process in one reduction, the step's only host sync.
    """
    broken = ((~torch.isfinite(result.loss)) | (~torch.isfinite(result.grad_norm))).float()
    flags = torch.stack([broken, torch.full_like(broken, float(preemption_requested))])  # no host-to-device copy
    nonfinite, preempted = (accelerator.reduce(flags, reduction="sum") > 0).tolist()
    if not nonfinite:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return nonfinite, preempted


class ThroughputMeter:
    """Tokens/s and MFU of the training steps since the last report, time spent `paused()` left out."""

    def __init__(self, model_config, block_size: int, tokens_per_step: int, accelerator: Accelerator):
        self.tokens_per_step = tokens_per_step
        self.step_flops = flops_per_token(model_config, block_size) * tokens_per_step
        peak = device_peak_flops(accelerator.device)
        self.peak_flops = peak * accelerator.num_processes if peak else None
        self.steps, self.started, self.excluded = 0, time.perf_counter(), 0.0

    @contextmanager
    def paused(self):
        """Evaluation, sampling and checkpoints are not training time."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.excluded += time.perf_counter() - start

    def report(self) -> dict:
        elapsed = time.perf_counter() - self.started - self.excluded
        tokens_per_second = self.tokens_per_step * self.steps / elapsed
        mfu = self.step_flops * self.steps / elapsed / self.peak_flops if self.peak_flops else None
        self.steps, self.started, self.excluded = 0, time.perf_counter(), 0.0
        return {"tokens_per_second": tokens_per_second, "mfu": mfu}


def is_due(step: int, every: int, last_step: int) -> bool:
    """Periodic work runs every `every` steps (0: never) and always after the last step."""
    return (every > 0 and step % every == 0) or step == last_step


def evaluate_sample_and_save(done: int, must_save: bool, model, data: TrainingData, config: RunConfig,
                             accelerator: Accelerator, output_dir: Path, log: RunLog, progress):
    """The periodic work after optimizer step `done`: validation loss, HellaSwag, samples, checkpoint, as due."""
    lg, last = config.logging, config.optimization.max_steps
    if is_due(done, lg.eval_every, last):
        val_loss = evaluate_loss(model, data, config, accelerator)
        log.write("eval", done, val_loss=val_loss)
        if accelerator.is_main_process:
            progress.write(f"step {done}: validation loss {val_loss:.4f}")
    if lg.hellaswag_every and is_due(done, lg.hellaswag_every, last):
        log.write("hellaswag", done, **evaluate_hellaswag(model, data, config, accelerator))
    if lg.sample_every and lg.num_samples and is_due(done, lg.sample_every, last):
        samples = generate_samples(model, data.tokenizer, config, accelerator, done)
        log.write("samples", done, samples=samples)
        if accelerator.is_main_process:
            progress.write("\n".join(f"sample {i}: {text!r}" for i, text in enumerate(samples)))
    if is_due(done, config.checkpointing.save_every, last) or must_save:
        save_checkpoint(accelerator, output_dir, done, config.checkpointing.keep_last,
                        {"data_fingerprint": _data_key(data)})


def train(config: RunConfig, accelerator: Accelerator, model, optimizer, scheduler, data: TrainingData,
          start_step: int, output_dir: Path, log: RunLog) -> int:
    """The loop; returns the process exit code (0, preempted, or non-finite)."""
    o, lg = config.optimization, config.logging
    batches = train_batches(data, config, accelerator, start_step)
    unwrapped = accelerator.unwrap_model(model)
    meter = ThroughputMeter(unwrapped.config, data.block_size, config.data.total_batch_tokens, accelerator)
    steps_per_epoch = len(data.train) // data.rows_per_step
    preemption = PreemptionFlag()
    loss_sum, good_steps = torch.zeros((), device=accelerator.device), 0  # since the last report
    progress = tqdm(range(start_step, o.max_steps), initial=start_step, total=o.max_steps,
                    disable=not accelerator.is_main_process, desc="Training", dynamic_ncols=True)
    for step in progress:
        done = step + 1
        result = train_step(model, optimizer, batches, data.accumulation, config, accelerator)
        nonfinite, preempted = finish_step(optimizer, result, preemption.raised, accelerator)
        if nonfinite:
            log.write("nonfinite", done, action=o.on_nonfinite, loss=result.loss.item(),
                      grad_norm=result.grad_norm.item())
            if o.on_nonfinite == "stop":
                accelerator.print(f"step {done}: non-finite loss or gradient norm; stopping without saving")
                return NONFINITE_EXIT_CODE
        else:
            loss_sum += result.loss
            good_steps += 1
        scheduler.step()
        meter.steps += 1

        if is_due(done, lg.log_every, o.max_steps):
            mean_loss = accelerator.reduce(loss_sum, reduction="mean").item() / good_steps if good_steps else None
            metrics = dict(loss=mean_loss, lr=scheduler.get_last_lr()[0], grad_norm=result.grad_norm.item(),
                           epoch=step // steps_per_epoch, **meter.report())
            log.write("train", done, **metrics)
            progress.set_postfix(loss=f"{mean_loss:.4f}" if mean_loss else "-", lr=f"{metrics['lr']:.2e}",
                                 gnorm=f"{metrics['grad_norm']:.2f}", tok_s=f"{metrics['tokens_per_second']:,.0f}",
                                 **({"mfu": f"{metrics['mfu']:.1%}"} if metrics["mfu"] else {}))
            loss_sum.zero_()
            good_steps = 0
        with meter.paused():
            evaluate_sample_and_save(done, preempted, model, data, config, accelerator, output_dir, log, progress)
        if preempted:
            accelerator.print(f"step {done}: preemption signal received; checkpoint saved, exiting")
            return PREEMPTED_EXIT_CODE
        if done == KILL_AFTER_STEP:  # fault injection for the resume tests: die as `kill -9` would
            os.kill(os.getpid(), signal.SIGKILL)
    return 0


def _data_key(data: TrainingData) -> dict:
    meta = data.metadata
    return {"arguments": meta["arguments"], "created": meta["created"], "block_size": meta["block_size"]}


# ---- main ----------------------------------------------------------------------------------------------------


def compile_plugin(config: RunConfig) -> TorchDynamoPlugin | None:
    return TorchDynamoPlugin(backend="inductor", mode=config.model.compile_mode) if config.model.compile else None


def ddp_settings(config: RunConfig) -> DistributedDataParallelKwargs:
    # Gradients are views into the all-reduce buckets: one copy less of 124M floats per step.
    o = config.optimization
    return DistributedDataParallelKwargs(gradient_as_bucket_view=True, bucket_cap_mb=o.ddp_bucket_cap_mb,
                                         comm_hook=DDPCommunicationHookType(o.ddp_comm_hook))


def build_accelerator(config: RunConfig) -> Accelerator:
    o = config.optimization
    trackers = [t for t in config.logging.report_to.split(",") if t and t != "none"]
    accelerator = Accelerator(
        mixed_precision=o.mixed_precision, log_with=trackers or None, project_dir=config.logging.output_dir,
        dynamo_plugin=compile_plugin(config), kwargs_handlers=[ddp_settings(config)],
    )
    if o.tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return accelerator


def run(config: RunConfig) -> int:
    # Everything that can be wrong with the configuration is checked before the accelerator is set up.
    output_dir = Path(config.logging.output_dir)
    if config.hub.push_to_hub and not config.hub.hub_model_id:
        raise ConfigError("--push_to_hub needs --hub_model_id")
    if config.hub.push_to_hub and config.hub.hub_format == "gpt2" and not config.checkpointing.export_gpt2:
        raise ConfigError("--hub_format gpt2 pushes the stock GPT-2 export; it needs --export_gpt2 true")
    resume_from = resolve_resume(config, output_dir)
    check_output_dir(config, output_dir, resuming=resume_from is not None)
    if config.hub.push_to_hub and int(os.environ.get("RANK", "0")) == 0:
        create_hub_repo(config)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))  # set by accelerate launch, torchrun, or the SLURM script
    data = build_data(config, world_size)
    accelerator = build_accelerator(config)
    if accelerator.num_processes != world_size:
        raise ConfigError(f"accelerate runs {accelerator.num_processes} processes but WORLD_SIZE is {world_size}")
    set_seed(config.optimization.seed)
    model = build_model(config, data).to(accelerator.device)  # on its device before a fused AdamW sees it
    check_disk_space(output_dir, model.num_parameters())
    if config.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    optimizer, scheduler = build_optimizer(model, config, accelerator.device)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)

    start_step = 0
    if resume_from is not None:
        state = json.loads((resume_from / RUN_STATE_FILE).read_text())
        if state.get("data_fingerprint") != _data_key(data):
            raise ConfigError(f"{resume_from} was trained on other data than {config.data.data_dir}")
        accelerator.load_state(str(resume_from))
        start_step = state["step"]
        accelerator.print(f"resumed from {resume_from} at step {start_step}")
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        if resume_from is None:
            (output_dir / LOG_FILE).unlink(missing_ok=True)  # a new run (overwrite_output_dir) starts a new log
        (output_dir / "run_config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    accelerator.init_trackers("gpt2_scratch", config={k: v for s in config.to_dict().values() for k, v in s.items()
                                                      if isinstance(v, (int, float, str, bool))})
    log = RunLog(accelerator, output_dir)
    if resume_from is not None:
        log.write("resume", start_step, checkpoint=str(resume_from))
    accelerator.print(
        f"{accelerator.unwrap_model(model).num_parameters():,} parameters, {accelerator.num_processes} processes, "
        f"micro-batch {config.data.micro_batch_size} x {data.block_size}, accumulation {data.accumulation}, "
        f"{config.data.total_batch_tokens:,} tokens per step, {len(data.train):,} training rows"
    )
    status = train(config, accelerator, model, optimizer, scheduler, data, start_step, output_dir, log)
    if status == 0:
        final_dir = save_final_model(model, data, config, accelerator, output_dir)
        accelerator.print(f"saved {final_dir}")
        if config.hub.push_to_hub and accelerator.is_main_process:
            status = push_final_model(output_dir, config)
    accelerator.end_training()
    return status


def main(argv: list[str] | None = None) -> int:
    try:
        config = parse_config(argv)
        return run(config)
    except ConfigError as error:
        print(f"run_pretrain.py: error: {error}", file=sys.stderr)
        return 2
    except CheckpointError as error:
        print(f"run_pretrain.py: error: {error}", file=sys.stderr)
        return CHECKPOINT_EXIT_CODE


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
