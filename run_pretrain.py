"""Pretrain GPT-2 with Accelerate: the reproduction's recipe, as a short main() over well-named steps.

    accelerate launch --config_file accelerate_configs/single_gpu.yaml \
        run_pretrain.py configs/gpt2_124m_fineweb_edu.yaml
    python run_pretrain.py configs/quickstart.yaml --max_steps 50    # any field overrides the YAML

The YAML has one section per dataclass of `training.arguments` (model, data, optimization, accelerator,
evaluation, output, checkpointing, hub); every field is also a command-line flag. Data comes from
`prepare_data.py`. This file is the recipe: main() -> train_and_save(): check the settings, set_up() the data,
accelerator, model, optimizer and micro-batch, train (evaluating and checkpointing as it goes), save and
push; each ingredient lives in its own module of `training/`. Exit statuses: `training/exit_codes.py`.
"""

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import set_seed
from accelerate.utils.memory import should_reduce_batch_size
from tqdm.auto import tqdm

from configuration import GPT2ScratchConfig
from formats.run_log import LOG_FILE, RunLog
from modeling_gpt2_scratch import GPT2ScratchForCausalLM
from training.accelerator import build_accelerator
from training.arguments import AUTO, NEVER, ConfigError, RunConfig, parse_config
from training.checkpoints import (
    CHECKPOINTS_DIR,
    CheckpointError,
    check_disk_space,
    check_run_directory,
    load_checkpoint,
    read_manifest,
    resolve_resume,
    save_checkpoint,
)
from training.data import (
    BatchPlan,
    TrainingData,
    batch_order,
    batch_plan,
    build_data,
    rows_per_process,
    train_batches,
    unguarded_script,
)
from training.device import setup_report
from training.evaluation import evaluate_hellaswag, evaluate_loss, generate_samples
from training.exit_codes import ExitCode
from training.faults import PreemptionFlag, RunStopped, StallWatchdog, stop_on_lost_peer
from training.final_model import create_hub_repo, push_final_model, save_final_model
from training.measurement import ThroughputMeter
from training.memory import OutOfMemory, checkpoint_bytes, find_micro_batch, out_of_memory_message
from training.optimizer import Optimizers, build_optimizer
from training.step import finish_step, train_step


@dataclass
class Run:
    """What one training run's steps and periodic jobs share."""

    config: RunConfig
    accelerator: Accelerator
    model: torch.nn.Module  # as prepared: DDP-wrapped and compiled when so configured
    optimizers: Optimizers
    data: TrainingData
    plan: BatchPlan  # the step's shape, decided once in set_up
    output_dir: Path
    log: RunLog
    watchdog: StallWatchdog
    start_step: int = 0
    progress: tqdm | None = None  # the training bar, which also carries the jobs' messages


# The errors a run ends on with one line, and the status each gives.
ERROR_STATUS = {ConfigError: ExitCode.BAD_SETTING, CheckpointError: ExitCode.CHECKPOINT_FAILED,
                OutOfMemory: ExitCode.OUT_OF_MEMORY, RunStopped: ExitCode.STALLED}


def main(argv: list[str] | None = None) -> int:
    try:
        config = parse_config(argv)
        return train_and_save(config)
    except tuple(ERROR_STATUS) as error:
        print(f"run_pretrain.py: error: {error}", file=sys.stderr)
        return next(status for kind, status in ERROR_STATUS.items() if isinstance(error, kind))


def train_and_save(config: RunConfig) -> int:
    """Check the settings, set the run up, train, save: each a function below."""
    output_dir = Path(config.output.output_dir)
    resume_from = check_before_start(config, output_dir)
    run = set_up(config, output_dir, resume_from)
    with run.watchdog:
        status = train_within_limits(run)
        if status == ExitCode.OK:
            run.watchdog.beat(config.optimization.max_steps, "saving the final model")
            status = save_and_push(run)
    run.accelerator.end_training()
    return status


def set_up(config: RunConfig, output_dir: Path, resume_from: Path | None) -> Run:
    """Data, accelerator, model, optimizer and micro-batch, restored from the checkpoint when resuming; the log
    started and what the device gets reported."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))  # set by accelerate launch, torchrun, or the SLURM script
    data = build_data(config, world_size)
    accelerator = build_accelerator(config)
    if accelerator.num_processes != world_size:
        raise ConfigError(f"accelerate runs {accelerator.num_processes} processes but WORLD_SIZE is {world_size}")
    if accelerator.mixed_precision == "fp16" and config.optimization.optimizer == "muon":
        raise ConfigError("--optimizer muon orthogonalizes in bf16, which this device lacks (fp16 chosen): use "
                          "--optimizer adamw here, or a GPU with bf16")
    set_seed(config.data.seed)
    model = build_model(config, data).to(accelerator.device)  # on its device before a fused AdamW sees it
    check_disk_space(output_dir, checkpoint_bytes(model, config.optimization.optimizer))
    if config.hub.push_to_hub:  # once the settings, the data and the model are known good, before training
        create_hub_repo(config, accelerator)
    if config.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    optimizers = build_optimizer(model, config, accelerator.device)
    plan = choose_batch_plan(config, data, model, optimizers, accelerator, resume_from)  # eager, before compiling
    model = optimizers.prepare(model, accelerator)
    start_step = 0
    if resume_from is not None:
        start_step = load_checkpoint(accelerator, resume_from, data.identity, config.data.data_dir)
    log = start_log(config, accelerator, output_dir, resume_from, start_step)
    watchdog = StallWatchdog(config.accelerator.stall_timeout_seconds, output_dir, accelerator.process_index)
    run = Run(config, accelerator, model, optimizers, data, plan, output_dir, log, watchdog, start_step)
    report_setup(run)
    return run


def train_within_limits(run: Run) -> int:
    """train(), with running out of device memory, or losing a peer process, said on one line (what to do next),
    not as a traceback."""
    try:
        return train(run)
    except RuntimeError as error:  # torch.OutOfMemoryError, the CPU allocator's and cuDNN's; gloo's and NCCL's
        if should_reduce_batch_size(error):  # CUDA's and the CPU allocator's, cuDNN's and cuBLAS's
            raise OutOfMemory(out_of_memory_message(run.plan.micro_batch, run.data.block_size,
                                                    run.accelerator.device)) from None
        stop_on_lost_peer(error, run.watchdog)
        raise


def save_and_push(run: Run) -> int:
    """final/, and the hub upload when asked for; returns the exit code (5: trained and saved, upload failed)."""
    final_dir = save_final_model(run.model, run.data, run.config, run.accelerator, run.output_dir)
    run.accelerator.print(f"saved {final_dir}")
    if run.config.hub.push_to_hub and run.accelerator.is_main_process:
        return push_final_model(run.output_dir, run.config)
    return ExitCode.OK


def check_before_start(config: RunConfig, output_dir: Path) -> Path | None:
    """Everything that can be wrong with the settings, before an accelerator is set up; returns the checkpoint
    to resume from, if any."""
    if config.hub.push_to_hub and not config.hub.hub_model_id:
        raise ConfigError("--push_to_hub needs --hub_model_id")
    if config.data.dataloader_workers and (script := unguarded_script()):
        raise ConfigError(f"{script} calls run_pretrain.main() at its top level: its DataLoader workers would "
                          "import it and start the run again. Call it under `if __name__ == \"__main__\":`, or "
                          "pass --dataloader_workers 0")
    resume_from = resolve_resume(config, output_dir)
    check_run_directory(config, output_dir, resuming=resume_from is not None)
    return resume_from


def choose_batch_plan(config: RunConfig, data: TrainingData, model, optimizers: Optimizers, accelerator: Accelerator,
                      resume_from: Path | None) -> BatchPlan:
    """The step's shape: the configured micro-batch, or with `--micro_batch_size auto` the micro-batch a resumed
    run had, otherwise the largest that fits every process. Accumulation follows, so the tokens per step, the
    data order and the results do not change."""
    processes = accelerator.num_processes
    if config.data.micro_batch_size != AUTO:
        return batch_plan(config, data.block_size, processes, config.data.micro_batch_size)
    rows = rows_per_process(config, data.block_size, processes)
    recorded = read_manifest(resume_from).get("micro_batch_size") if resume_from else None
    if recorded is not None and rows % recorded:  # resumed on another number of processes
        recorded = None
    if recorded is not None:
        chosen = recorded
    else:
        chosen = find_micro_batch(model, optimizers, accelerator, rows, data.block_size,
                                  data.metadata["tokenizer"]["vocab_size"])
    plan = batch_plan(config, data.block_size, processes, chosen)
    accelerator.print(f"micro-batch auto: {chosen} x {data.block_size}, accumulation {plan.accumulation}"
                      + (f" (as {resume_from} trained)" if recorded is not None else " (the largest that fits)"))
    return plan


def report_setup(run: Run):
    """What the device gets, printed and logged: precision, attention kernel, micro-batch, and memory."""
    report = setup_report(run.config, run.plan, run.data.block_size, run.accelerator.unwrap_model(run.model),
                          run.accelerator)
    run.accelerator.print(report.pop("summary"))
    run.log.write("setup", run.start_step, **report)


def start_log(config: RunConfig, accelerator: Accelerator, output_dir: Path, resume_from: Path | None,
              start_step: int) -> RunLog:
    """The output directory with this run's configuration, the trackers, and the log (a new run starts a new one)."""
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        if resume_from is None:
            (output_dir / LOG_FILE).unlink(missing_ok=True)
        (output_dir / "run_config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    accelerator.init_trackers("gpt2_scratch", config={k: v for s in config.to_dict().values() for k, v in s.items()
                                                      if isinstance(v, (int, float, str, bool))})
    log = RunLog(accelerator, output_dir)
    if resume_from is not None:
        log.write("resume", start_step, checkpoint=str(resume_from))
    return log


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
    shape = config.model
    model_config = GPT2ScratchConfig(
        vocab_size=vocab_size, n_positions=shape.n_positions, n_embd=shape.n_embd, n_layer=shape.n_layer,
        n_head=shape.n_head, resid_pdrop=shape.dropout, embd_pdrop=shape.dropout, attn_pdrop=shape.dropout,
        bos_token_id=eot_id, eos_token_id=eot_id,
    )
    return GPT2ScratchForCausalLM(model_config)


def train(run: Run) -> int:
    """The loop; returns the process exit code (0, preempted, or non-finite)."""
    config, accelerator = run.config, run.accelerator
    max_steps, on_nonfinite = config.optimization.max_steps, config.optimization.on_nonfinite
    order = batch_order(run.data, run.plan, config.data.seed, accelerator.process_index, run.start_step)
    batches = train_batches(run.data, order, config, accelerator)
    meter = ThroughputMeter(accelerator.unwrap_model(run.model), run.data.block_size,
                            config.data.total_batch_tokens, accelerator)
    window = LossWindow(accelerator.device)
    run.progress = tqdm(range(run.start_step, max_steps), initial=run.start_step, total=max_steps,
                        disable=not accelerator.is_main_process, desc="Training", dynamic_ncols=True)
    with PreemptionFlag() as preemption:
        for step in run.progress:
            done = step + 1
            run.watchdog.beat(done, "training")
            result = train_step(run.model, batches, run.plan.accumulation, config, accelerator)
            nonfinite, preempted, overflow = finish_step(run.optimizers, result, preemption.raised, accelerator)
            if overflow:  # fp16's dynamic loss scaling at work: not a broken run
                run.log.write("overflow", done, scale=accelerator.scaler.get_scale(), loss=result.loss.item())
            if nonfinite:
                run.log.write("nonfinite", done, action=on_nonfinite, loss=result.loss.item(),
                              grad_norm=result.grad_norm.item())
                if on_nonfinite == "stop":
                    accelerator.print(f"step {done}: non-finite loss or gradient norm; stopping without saving")
                    return ExitCode.NONFINITE
            else:
                window.add(result.loss)
            run.optimizers.schedule_step()
            meter.steps += 1
            if is_due(done, config.output.log_every, max_steps):
                log_training(run, done, window.mean(accelerator), result.grad_norm.item(), order.epoch_of(step),
                             meter.report())
            with meter.paused():
                run_periodic_jobs(run, done, must_save=preempted)
            if preempted:
                accelerator.print(f"step {done}: preemption signal received; checkpoint saved, exiting")
                return ExitCode.PREEMPTED
    return ExitCode.OK


class LossWindow:
    """The training loss summed on the device since the last report: read back only when logged."""

    def __init__(self, device: torch.device):
        self.total, self.steps = torch.zeros((), device=device), 0

    def add(self, loss: torch.Tensor):
        self.total += loss
        self.steps += 1

    def mean(self, accelerator: Accelerator) -> float | None:
        """The mean over the window and every process; None if every step of the window was skipped."""
        mean = accelerator.reduce(self.total, reduction="mean").item() / self.steps if self.steps else None
        self.total.zero_()
        self.steps = 0
        return mean


def log_training(run: Run, done: int, loss: float | None, grad_norm: float, epoch: int, speed: dict):
    """The step's metrics to the log and the trackers, with every parameter group's learning rate (`lr_<group>`;
    `lr` is the first group's), and the main ones on the progress bar."""
    rates = run.optimizers.learning_rates()
    run.log.write("train", done, loss=loss, lr=next(iter(rates.values())), **{f"lr_{g}": r for g, r in rates.items()},
                  grad_norm=grad_norm, epoch=epoch, **speed)
    # One rate when every group shares it (AdamW); otherwise each that differs (Muon's matrices, AdamW's rest).
    shown = {"lr": next(iter(rates.values()))} if len(set(rates.values())) == 1 else {
        f"lr_{group}": rate for group, rate in rates.items() if group != "vectors"}
    run.progress.set_postfix(loss=f"{loss:.4f}" if loss else "-", **{k: f"{v:.2e}" for k, v in shown.items()},
                             gnorm=f"{grad_norm:.2f}", tok_s=f"{speed['tokens_per_second']:,.0f}",
                             **({"mfu": f"{speed['mfu']:.1%}"} if speed["mfu"] else {}))


def run_periodic_jobs(run: Run, done: int, must_save: bool):
    """What is due after optimizer step `done`: validation loss, HellaSwag, samples, a checkpoint."""
    evaluation, last = run.config.evaluation, run.config.optimization.max_steps
    if is_due(done, evaluation.eval_every, last):
        run.watchdog.beat(done, "validation")
        validate(run, done)
    if is_due(done, evaluation.hellaswag_every, last):
        run.watchdog.beat(done, "HellaSwag")
        score_hellaswag(run, done)
    if is_due(done, evaluation.sample_every, last):
        run.watchdog.beat(done, "samples")
        write_samples(run, done)
    if is_due(done, run.config.checkpointing.save_every, last) or must_save:
        run.watchdog.beat(done, "checkpoint")
        checkpoint(run, done)


def validate(run: Run, done: int):
    val_loss = evaluate_loss(run.model, run.data, run.config, run.accelerator, run.plan.micro_batch,
                             on_batch=run.watchdog.beat)
    run.log.write("eval", done, val_loss=val_loss)
    if run.accelerator.is_main_process:
        run.progress.write(f"step {done}: validation loss {val_loss:.4f}")


def score_hellaswag(run: Run, done: int):
    run.log.write("hellaswag", done, **evaluate_hellaswag(run.model, run.data, run.accelerator, run.plan.micro_batch,
                                                          on_batch=run.watchdog.beat))


def write_samples(run: Run, done: int):
    samples = generate_samples(run.model, run.data.tokenizer, run.config, run.accelerator, done)
    run.log.write("samples", done, samples=samples)
    if run.accelerator.is_main_process:
        run.progress.write("\n".join(f"sample {i}: {text!r}" for i, text in enumerate(samples)))


def checkpoint(run: Run, done: int):
    with run.watchdog.watch_files(run.output_dir / CHECKPOINTS_DIR):  # a large save on a slow disk is progress
        save_checkpoint(run.accelerator, run.output_dir, done, run.config.checkpointing.keep_last,
                        {"data_identity": run.data.identity, "micro_batch_size": run.plan.micro_batch})


def is_due(step: int, every: int, last_step: int) -> bool:
    """Every periodic job alike: every `every` steps and after the last one; 0 only after the last; -1 never."""
    if every == NEVER:
        return False
    return (every > 0 and step % every == 0) or step == last_step


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
