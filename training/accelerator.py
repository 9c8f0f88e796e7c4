"""Accelerate set up for the run: mixed precision, trackers, torch.compile and DDP settings; and how to launch it."""

import sys

import torch
from accelerate import Accelerator
from accelerate.utils import (
    DDPCommunicationHookType,
    DistributedDataParallelKwargs,
    TorchDynamoPlugin,
)

from training.arguments import RunConfig
from training.checkpoints import save_tied_weights_once
from training.device import device_precision, has_tf32
from training.faults import process_group_settings


def compile_plugin(config: RunConfig) -> TorchDynamoPlugin | None:
    settings = config.accelerator
    return TorchDynamoPlugin(backend="inductor", mode=settings.compile_mode) if settings.compile else None


def ddp_settings(config: RunConfig) -> DistributedDataParallelKwargs:
    # Gradients are views into the all-reduce buckets: one copy less of 124M floats per step.
    settings = config.accelerator
    return DistributedDataParallelKwargs(gradient_as_bucket_view=True, bucket_cap_mb=settings.ddp_bucket_cap_mb,
                                         comm_hook=DDPCommunicationHookType(settings.ddp_comm_hook))


def build_accelerator(config: RunConfig) -> Accelerator:
    settings = config.accelerator
    trackers = [t for t in config.output.report_to.split(",") if t and t != "none"]
    accelerator = Accelerator(
        mixed_precision=device_precision(settings.mixed_precision), log_with=trackers or None,
        project_dir=config.output.output_dir, dynamo_plugin=compile_plugin(config),
        kwargs_handlers=[ddp_settings(config), *process_group_settings(settings.stall_timeout_seconds)],
    )
    accelerator.register_save_state_pre_hook(save_tied_weights_once)
    if settings.tf32 and has_tf32():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return accelerator


# What `accelerate launch` needs on a machine without GPUs: gloo processes of one thread each.
CPU_LAUNCH_ENV = {"ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}


def launch_command(script: str, num_processes: int, *args: str) -> list[str]:
    """`accelerate launch` of `script` on one machine, precision and compilation left to the run's own settings
    (the command line a user types, as argv)."""
    # Port 0: the rendezvous takes a free port, so two launches on one machine never meet on the same one.
    return [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--mixed_precision", "no",
            "--dynamo_backend", "no", *(["--multi_gpu", "--main_process_port", "0"] if num_processes > 1 else []),
            "--num_processes", str(num_processes), script, *args]
