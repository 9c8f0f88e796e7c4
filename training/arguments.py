"""The run's configuration: typed dataclasses, one per YAML section, every field also a command-line flag."""

import difflib
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml
from transformers import HfArgumentParser

from eval.val_loss import DEFAULT_EVAL_TOKENS


class ConfigError(Exception):
    """A configuration that cannot run: reported on one line before any GPU time is spent."""


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
    optimizer: str = field(default="adamw", metadata={
        "help": "adamw: AdamW everywhere (the reproduction). muon: Muon for the blocks' matrices, AdamW for "
                "embeddings and vectors.", "choices": ["adamw", "muon"]})
    learning_rate: float = field(default=6e-4, metadata={"help": "Peak learning rate (AdamW's groups)."})
    embedding_learning_rate: float | None = field(default=None, metadata={
        "help": "With muon: peak learning rate of the embeddings and tied head (default: learning_rate)."})
    muon_learning_rate: float = field(default=6e-4, metadata={
        "help": "With muon: peak learning rate of the blocks' matrices, before Muon's shape adjustment."})
    muon_momentum: float = 0.95
    muon_momentum_warmup_steps: int = field(default=0, metadata={
        "help": "With muon: raise the momentum linearly from 0.85 over these steps (0: none)."})
    muon_adjust_lr: str = field(default="match_rms_adamw", metadata={
        "help": "Muon's learning-rate scale per matrix shape: match_rms_adamw (0.2 sqrt(max dim): AdamW's update "
                "RMS) or original (sqrt(max(1, rows / cols))).", "choices": ["match_rms_adamw", "original"]})
    muon_qkv: str = field(default="whole", metadata={
        "help": "Orthogonalize c_attn as one 3C x C matrix, or as query, key and value apart.",
        "choices": ["whole", "split"]})
    lr_schedule: str = field(default="cosine", metadata={
        "help": "cosine: warm-up then cosine decay. wsd: warm-up, stable, then linear decay over decay_fraction.",
        "choices": ["cosine", "wsd"]})
    decay_fraction: float = field(default=0.2, metadata={"help": "With wsd: share of the steps spent decaying."})
    min_lr_ratio: float = field(default=0.1, metadata={"help": "Final learning rate as a share of the peak."})
    warmup_steps: int = field(default=715, metadata={"help": "Linear warmup steps."})
    weight_decay: float = field(default=0.1, metadata={"help": "Decoupled decay of 2-D weights (AdamW and Muon)."})
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
    eval_tokens: int = field(default=DEFAULT_EVAL_TOKENS, metadata={"help": "Validation tokens per evaluation, for "
                                                                    "any number of processes."})
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
