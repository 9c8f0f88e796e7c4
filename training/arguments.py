"""The run's configuration: typed dataclasses, one per YAML section, every field also a command-line flag.

Sections by concern: the model, the data, what the optimizer does, what the accelerator and precision
do, evaluation, where outputs go, checkpoints, the hub. Every periodic job (`log_every`, `eval_every`,
`hellaswag_every`, `sample_every`, `save_every`) reads its number the same way: N > 0 every N steps and
after the last one, 0 only after the last step, -1 never.
"""

import difflib
import sys
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml
from transformers import HfArgumentParser

from eval.val_loss import DEFAULT_EVAL_TOKENS


class ConfigError(Exception):
    """A configuration that cannot run: reported on one line before any GPU time is spent."""


NEVER = -1  # a periodic job's `*_every` that turns it off
AUTO = "auto"  # a micro-batch or precision the device decides
EVERY_HELP = " (0: only after the last step, -1: never)."


def every(default: int, what: str):
    return field(default=default, metadata={"help": f"Optimizer steps between {what}, and after the last{EVERY_HELP}"})


@dataclass
class ModelArguments:
    n_layer: int = field(default=12, metadata={"help": "Transformer blocks."})
    n_head: int = field(default=12, metadata={"help": "Attention heads per block."})
    n_embd: int = field(default=768, metadata={"help": "Width of the residual stream (a multiple of n_head)."})
    n_positions: int = field(default=1024, metadata={"help": "Longest sequence the model accepts."})
    dropout: float = field(default=0.0, metadata={"help": "Dropout everywhere (the reproduction uses none)."})
    init_from: str | None = field(default=None, metadata={"help": "Start from these weights (hub id or dir)."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Recompute activations in backward."})


@dataclass
class DataArguments:
    data_dir: str = field(default="data/fineweb_edu_10B", metadata={"help": "Output of prepare_data.py."})
    micro_batch_size: str = field(default="64", metadata={
        "help": "Rows per forward pass on each process, or auto: the largest that fits this device, found before "
                "training (accumulation then makes up the tokens per step)."})
    total_batch_tokens: int = field(default=524_288, metadata={"help": "Tokens per optimizer step, all processes."})
    dataloader_workers: int = field(default=2, metadata={"help": "Processes that read batches ahead."})
    seed: int = field(default=1337, metadata={"help": "Seeds the initial weights, the data order and the samples."})


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
    muon_momentum: float = field(default=0.95, metadata={"help": "With muon: Nesterov momentum."})
    muon_momentum_warmup_steps: int = field(default=0, metadata={
        "help": "With muon: raise the momentum linearly from 0.85 over these steps (0: none)."})
    muon_adjust_lr: str = field(default="match_rms_adamw", metadata={
        "help": "With muon: the learning-rate scale per matrix shape: match_rms_adamw (0.2 sqrt(max dim): AdamW's "
                "update RMS) or original (sqrt(max(1, rows / cols))).", "choices": ["match_rms_adamw", "original"]})
    muon_qkv: str = field(default="whole", metadata={
        "help": "With muon: orthogonalize c_attn as one 3C x C matrix, or as query, key and value apart.",
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
    on_nonfinite: str = field(default="stop", metadata={"help": "When loss or gradient norm is NaN/inf: stop the "
                                                        "run, or skip the step.", "choices": ["stop", "skip"]})


@dataclass
class AcceleratorArguments:
    mixed_precision: str = field(default="auto", metadata={
        "help": "auto: bf16 where the GPU supports it, fp16 with dynamic loss scaling where not, none on CPU.",
        "choices": ["auto", "no", "bf16", "fp16"]})
    tf32: bool = field(default=True, metadata={"help": "TF32 matmuls where they exist (Ampere and newer GPUs)."})
    compile: bool = field(default=False, metadata={"help": "torch.compile the model (inductor)."})
    compile_mode: str = field(default="default", metadata={
        "help": "With compile: inductor's mode; reduce-overhead adds CUDA graphs, max-autotune searches kernels "
                "(long warmup).", "choices": ["default", "reduce-overhead", "max-autotune",
                                              "max-autotune-no-cudagraphs"]})
    ddp_bucket_cap_mb: int = field(default=25, metadata={"help": "DDP all-reduce bucket size in MiB (fewer, larger "
                                                         "collectives when raised)."})
    ddp_comm_hook: str = field(default="no", metadata={"help": "Compress gradients to bf16 or fp16 for the all-reduce "
                                                       "(half the bytes; for nodes without NVLink).",
                                                       "choices": ["no", "bf16", "fp16"]})
    stall_timeout_seconds: int = field(default=900, metadata={
        "help": "End the run (exit 76, every thread's stack in OUTPUT_DIR/stall_rank{R}.txt) when a process makes no "
                "progress (a step, an evaluation batch, checkpoint bytes) for this long; collectives time out a "
                "minute later. 0: off, and the process group keeps its library timeout."})


@dataclass
class EvaluationArguments:
    eval_every: int = every(250, "validation losses")
    eval_tokens: int = field(default=DEFAULT_EVAL_TOKENS, metadata={"help": "Validation tokens per evaluation, for "
                                                                    "any number of processes."})
    hellaswag_every: int = every(NEVER, "HellaSwag evaluations")
    hellaswag_file: str | None = field(default=None, metadata={"help": "HellaSwag-schema JSONL (default: hub)."})
    sample_every: int = every(250, "text samples")
    sample_prompt: str = "Hello, I'm a language model,"
    num_samples: int = 4
    sample_tokens: int = 32


@dataclass
class OutputArguments:
    output_dir: str = field(default="outputs/gpt2_124m", metadata={"help": "Logs, checkpoints, final model."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Start over in a directory of another run."})
    log_every: int = every(10, "logged training metrics")
    report_to: str = field(default="tensorboard", metadata={"help": "Accelerate trackers, comma-separated, or none."})
    final_format: str = field(default="gpt2", metadata={
        "help": "final/ as gpt2: a plain GPT-2 that every GPT-2 tool loads (no remote code), or scratch: this "
                "model's class, which loads with trust_remote_code=True.", "choices": ["gpt2", "scratch"]})


@dataclass
class CheckpointArguments:
    save_every: int = every(1000, "checkpoints")
    keep_last: int = field(default=3, metadata={"help": "Checkpoints kept on disk (0: all)."})
    resume_from_checkpoint: str | None = field(default=None, metadata={"help": "'latest' or a checkpoint dir."})


@dataclass
class HubArguments:
    push_to_hub: bool = field(default=False, metadata={"help": "Upload final/, its tokenizer and model card."})
    hub_model_id: str | None = field(default=None, metadata={"help": "USER/NAME of the hub repository."})
    hub_private: bool = field(default=False, metadata={"help": "Create the repository private."})


CONFIG_SECTIONS = {
    "model": ModelArguments, "data": DataArguments, "optimization": OptimizationArguments,
    "accelerator": AcceleratorArguments, "evaluation": EvaluationArguments, "output": OutputArguments,
    "checkpointing": CheckpointArguments, "hub": HubArguments,
}  # fmt: skip
SECTION_OF = {f.name: section for section, cls in CONFIG_SECTIONS.items() for f in fields(cls)}


@dataclass
class RunConfig:
    model: ModelArguments
    data: DataArguments
    optimization: OptimizationArguments
    accelerator: AcceleratorArguments
    evaluation: EvaluationArguments
    output: OutputArguments
    checkpointing: CheckpointArguments
    hub: HubArguments

    def to_dict(self) -> dict:
        return {name: asdict(getattr(self, name)) for name in CONFIG_SECTIONS}


def read_yaml_config(path: str) -> dict:
    """The YAML's sections flattened to field defaults; a misplaced or unknown name is an error that says where
    it belongs or what it might have meant."""
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read config {path}: {error}") from None
    defaults = {}
    for section, values in raw.items():
        values = values or {}
        if section not in CONFIG_SECTIONS:
            raise ConfigError(f"{path}: unknown section {section!r}{_suggest(section, CONFIG_SECTIONS)}")
        for key, value in values.items():
            if SECTION_OF.get(key, section) != section:
                raise ConfigError(f"{path}: {key} belongs under {SECTION_OF[key]}, not {section}")
            if key not in SECTION_OF:
                raise ConfigError(f"{path}: unknown key {section}.{key}{_suggest(key, SECTION_OF)}")
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
        flag = unknown[0].lstrip("-").split("=")[0]
        options = [a.lstrip("-") for a in parser._option_string_actions if a.startswith("--")]
        raise ConfigError(f"unknown option {unknown[0]}{_suggest(flag, options)}")
    sections = {}
    for name, cls in CONFIG_SECTIONS.items():
        sections[name] = cls(**{f.name: getattr(parsed, f.name) for f in fields(cls)})
    config = RunConfig(**sections)
    check_values(config)
    check_for_inert_options(config, written=set(parsed_option_names(argv)))
    return config


def parsed_option_names(argv: list[str]):
    """The option names written on a command line (`--name value` or `--name=value`)."""
    for token in argv:
        if token.startswith("--"):
            yield token[2:].split("=")[0]


def check_values(config: RunConfig):
    """Values no run can use, each named on one line; a warm-up longer than the run is only a warning."""
    model, data, optim, accel = config.model, config.data, config.optimization, config.accelerator
    if str(data.micro_batch_size) != AUTO:  # a YAML number, or a flag's text
        try:
            data.micro_batch_size = int(data.micro_batch_size)
        except ValueError:
            raise ConfigError(f"--micro_batch_size {data.micro_batch_size!r} must be a number of rows or "
                              "auto") from None
    evaluation, output, saving = config.evaluation, config.output, config.checkpointing
    rules = [
        (model.n_layer > 0 and model.n_head > 0 and model.n_embd > 0 and model.n_positions > 0,
         f"model sizes must be positive (n_layer {model.n_layer}, n_head {model.n_head}, n_embd {model.n_embd}, "
         f"n_positions {model.n_positions})"),
        (model.n_head <= 0 or model.n_embd % model.n_head == 0,
         f"--n_embd {model.n_embd} is not divisible by --n_head {model.n_head}: each head needs n_embd / n_head "
         "dimensions"),
        (0 <= model.dropout < 1, f"--dropout {model.dropout} must be in [0, 1)"),
        (data.micro_batch_size == AUTO or data.micro_batch_size > 0,
         f"--micro_batch_size {data.micro_batch_size} must be positive"),
        (data.total_batch_tokens > 0, f"--total_batch_tokens {data.total_batch_tokens} must be positive"),
        (data.dataloader_workers >= 0, f"--dataloader_workers {data.dataloader_workers} must be 0 or more"),
        (optim.max_steps > 0, f"--max_steps {optim.max_steps} must be positive"),
        (optim.learning_rate > 0, f"--learning_rate {optim.learning_rate} must be positive"),
        (optim.muon_learning_rate > 0, f"--muon_learning_rate {optim.muon_learning_rate} must be positive"),
        (optim.embedding_learning_rate is None or optim.embedding_learning_rate > 0,
         f"--embedding_learning_rate {optim.embedding_learning_rate} must be positive"),
        (0 <= optim.muon_momentum < 1, f"--muon_momentum {optim.muon_momentum} must be in [0, 1)"),
        (optim.muon_momentum_warmup_steps >= 0,
         f"--muon_momentum_warmup_steps {optim.muon_momentum_warmup_steps} must be 0 or more"),
        (0 < optim.decay_fraction <= 1, f"--decay_fraction {optim.decay_fraction} must be in (0, 1]"),
        (0 <= optim.min_lr_ratio <= 1, f"--min_lr_ratio {optim.min_lr_ratio} must be in [0, 1]"),
        (optim.warmup_steps >= 0, f"--warmup_steps {optim.warmup_steps} must be 0 or more"),
        (optim.weight_decay >= 0, f"--weight_decay {optim.weight_decay} must be 0 or more"),
        (0 <= optim.adam_beta1 < 1 and 0 <= optim.adam_beta2 < 1,
         f"--adam_beta1 {optim.adam_beta1} and --adam_beta2 {optim.adam_beta2} must be in [0, 1)"),
        (optim.adam_epsilon > 0, f"--adam_epsilon {optim.adam_epsilon} must be positive"),
        (optim.max_grad_norm >= 0, f"--max_grad_norm {optim.max_grad_norm} must be 0 (off) or positive"),
        (accel.ddp_bucket_cap_mb > 0, f"--ddp_bucket_cap_mb {accel.ddp_bucket_cap_mb} must be positive"),
        (accel.stall_timeout_seconds >= 0, f"--stall_timeout_seconds {accel.stall_timeout_seconds} must be 0 (off) or "
                                       "positive"),
        (evaluation.eval_tokens > 0, f"--eval_tokens {evaluation.eval_tokens} must be positive"),
        (evaluation.num_samples > 0 and evaluation.sample_tokens > 0,
         f"--num_samples {evaluation.num_samples} and --sample_tokens {evaluation.sample_tokens} must be positive"),
        (saving.keep_last >= 0, f"--keep_last {saving.keep_last} must be 0 (all) or more"),
    ]
    for name, value in (("log_every", output.log_every), ("eval_every", evaluation.eval_every),
                        ("hellaswag_every", evaluation.hellaswag_every), ("sample_every", evaluation.sample_every),
                        ("save_every", saving.save_every)):
        rules.append((value >= NEVER, f"--{name} {value} must be a step count, 0 (only after the last step) "
                                      "or -1 (never)"))
    for holds, message in rules:
        if not holds:
            raise ConfigError(message)
    if optim.warmup_steps > optim.max_steps:
        warnings.warn(f"--warmup_steps {optim.warmup_steps} is longer than the run ({optim.max_steps} steps): the "
                      "learning rate never reaches its peak", stacklevel=2)


def check_for_inert_options(config: RunConfig, written: set[str]):
    """Options set away from their defaults that the chosen settings would silently ignore: refused when
    `written` on the command line; set by the recipe and made inert by an override there, set back to their
    defaults with a one-line note (`--eval_every -1` on a recipe that sets `eval_tokens`)."""
    optim, evaluation = config.optimization, config.evaluation
    muon = ("embedding_learning_rate", "muon_learning_rate", "muon_momentum", "muon_momentum_warmup_steps",
            "muon_adjust_lr", "muon_qkv")
    conditions = [
        (optim.optimizer == "muon", muon, "--optimizer muon"),
        (optim.lr_schedule == "wsd", ("decay_fraction",), "--lr_schedule wsd"),
        (config.accelerator.compile, ("compile_mode",), "--compile true"),
        (config.hub.push_to_hub, ("hub_model_id", "hub_private"), "--push_to_hub true"),
        (evaluation.hellaswag_every != NEVER, ("hellaswag_file",), "--hellaswag_every 0 or more"),
        (evaluation.sample_every != NEVER, ("sample_prompt", "num_samples", "sample_tokens"),
         "--sample_every 0 or more"),
        (evaluation.eval_every != NEVER, ("eval_tokens",), "--eval_every 0 or more"),
        (config.checkpointing.save_every != NEVER, ("keep_last",), "--save_every 0 or more"),
    ]
    for acts, names, needs in conditions:
        if acts:
            continue
        for name in names:
            section = getattr(config, SECTION_OF[name])
            default = next(f.default for f in fields(section) if f.name == name)
            if getattr(section, name) == default:
                continue
            if name in written:
                raise ConfigError(f"--{name} acts only with {needs}; drop it or set that too")
            print(f"run_pretrain.py: note: the recipe's {name} acts only with {needs}; left out",
                  file=sys.stderr)
            setattr(section, name, default)
