"""Training data for the loop: which rows each optimizer step trains on, for any number of processes."""

import ast
import inspect
import multiprocessing
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch
from accelerate import Accelerator

from eval import hellaswag
from formats.packed_data import (
    NotPreparedError,
    PackedRows,
    data_identity,
    inputs_and_targets,
    load_splits,
    load_tokenizer,
    read_metadata,
)
from training.arguments import AUTO, NEVER, ConfigError, RunConfig


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
        return inputs_and_targets(self.rows.take(np.sort(indices)))


@dataclass(frozen=True)
class BatchPlan:
    """A step's shape, decided once when the run is set up (from the configuration, or the micro-batch search)
    and read everywhere after: each of `processes` runs `accumulation` micro-batches of `micro_batch` rows."""

    micro_batch: int
    accumulation: int
    processes: int

    @property
    def rows_per_step(self) -> int:
        """Rows one optimizer step trains on, all processes together."""
        return self.micro_batch * self.accumulation * self.processes


def rows_per_process(config: RunConfig, block_size: int, processes: int) -> int:
    """The rows one step gives each process: the largest micro-batch, with no accumulation."""
    tokens_per_row_everywhere = block_size * processes
    if config.data.total_batch_tokens % tokens_per_row_everywhere:
        raise ConfigError(f"total_batch_tokens {config.data.total_batch_tokens:,} is not a multiple of block_size x "
                          f"processes = {block_size} x {processes}")
    return config.data.total_batch_tokens // tokens_per_row_everywhere


def batch_plan(config: RunConfig, block_size: int, processes: int, micro_batch: int) -> BatchPlan:
    """Micro-batches of `micro_batch` rows, accumulated to the configured tokens per step."""
    tokens_per_micro_step = micro_batch * block_size * processes
    if config.data.total_batch_tokens % tokens_per_micro_step:
        raise ConfigError(
            f"total_batch_tokens {config.data.total_batch_tokens:,} is not a multiple of micro_batch_size x "
            f"block_size x processes = {micro_batch} x {block_size} x {processes} = {tokens_per_micro_step:,}")
    return BatchPlan(micro_batch, config.data.total_batch_tokens // tokens_per_micro_step, processes)


class TrainBatchOrder(torch.utils.data.Sampler):
    """Row numbers of this process's micro-batches, from a given optimizer step on.

    Every epoch is a fresh permutation drawn from (seed, epoch). Optimizer step s takes the next
    `rows_per_step` rows of it, whatever the number of processes; process r of W takes micro-batches
    r, r + W, ... among them. So the data a step sees does not depend on W, and resuming at step s
    is a matter of starting here at s.
    """

    def __init__(self, num_rows: int, plan: BatchPlan, rank: int, seed: int, start_step: int = 0):
        self.plan, self.rank, self.seed, self.start_step = plan, rank, seed, start_step
        self.steps_per_epoch = num_rows // plan.rows_per_step
        self.num_rows = num_rows

    def epoch_of(self, step: int) -> int:
        return step // self.steps_per_epoch

    def __iter__(self):
        plan, step, permutation, epoch = self.plan, self.start_step, None, None
        while True:
            if self.epoch_of(step) != epoch:
                epoch = self.epoch_of(step)
                permutation = np.random.default_rng([self.seed, epoch]).permutation(self.num_rows)
            step_rows = permutation[(step % self.steps_per_epoch) * plan.rows_per_step :][: plan.rows_per_step]
            for micro in range(plan.accumulation):
                chunk = micro * plan.processes + self.rank
                yield step_rows[chunk * plan.micro_batch : (chunk + 1) * plan.micro_batch]
            step += 1


@dataclass
class TrainingData:
    train: RowBatches
    validation: RowBatches
    metadata: dict
    tokenizer: object
    block_size: int
    hellaswag: list | None  # examples, when the loop evaluates HellaSwag
    identity: dict  # formats.packed_data.data_identity: what a checkpoint records of its data


def build_data(config: RunConfig, world_size: int) -> TrainingData:
    """The prepared data, checked against the settings: its block size against the model's positions, the
    step's tokens against its rows and the number of processes, and enough rows for one step."""
    try:
        metadata = read_metadata(config.data.data_dir)
    except NotPreparedError as error:
        raise ConfigError(str(error)) from None
    block_size = metadata["block_size"]
    if block_size > config.model.n_positions:
        raise ConfigError(f"data block_size {block_size} exceeds the model's n_positions {config.model.n_positions}")
    splits = load_splits(config.data.data_dir)
    tokenizer = load_tokenizer(config.data.data_dir)
    micro_batch = config.data.micro_batch_size
    largest = rows_per_process(config, block_size, world_size) if micro_batch == AUTO else micro_batch
    step_rows = batch_plan(config, block_size, world_size, largest).rows_per_step  # any micro-batch: the same rows
    train, validation = RowBatches(splits["train"]), RowBatches(splits["validation"])
    if len(train) < step_rows:
        raise ConfigError(f"{config.data.data_dir} holds {len(train)} training rows; one step needs {step_rows}")
    examples = None
    if config.evaluation.hellaswag_every != NEVER:
        try:
            examples = hellaswag.load_examples(config.evaluation.hellaswag_file)
        except (hellaswag.HellaSwagDataError, OSError) as error:
            raise ConfigError(str(error)) from None
    return TrainingData(train, validation, metadata, tokenizer, block_size, examples, data_identity(metadata))


def batch_order(data: TrainingData, plan: BatchPlan, seed: int, rank: int, start_step: int) -> TrainBatchOrder:
    """This process's micro-batches of the run, from `start_step` on."""
    return TrainBatchOrder(len(data.train), plan, rank, seed, start_step)


def unguarded_script() -> str | None:
    """The script that is calling into the kit from its top level, not under `if __name__ == "__main__":`, if
    any. The fork server that starts the DataLoader workers imports the launching script, as spawn does: such a
    script would run its call again inside the server, and the run would meet a second copy of itself."""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    if path is None:  # an interactive session or `python -c`: nothing to re-import
        return None
    caller = next((frame for frame in inspect.stack(context=0) if frame.function == "<module>"
                   and os.path.abspath(frame.filename) == os.path.abspath(path)), None)
    if caller is None:
        return None
    statement = next((node for node in ast.parse(Path(path).read_text()).body
                      if node.lineno <= caller.lineno <= node.end_lineno), None)
    return None if statement is not None and is_main_guard(statement) else path


def is_main_guard(node: ast.stmt) -> bool:
    """`if __name__ == "__main__":`, either way round."""
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare) or len(node.test.comparators) != 1:
        return False
    sides = [node.test.left, node.test.comparators[0]]
    names = {side.id for side in sides if isinstance(side, ast.Name)}
    constants = {side.value for side in sides if isinstance(side, ast.Constant)}
    return isinstance(node.test.ops[0], ast.Eq) and names == {"__name__"} and constants == {"__main__"}


def worker_context():
    """The fork server imports this module (torch, datasets) once; each worker is then a quick fork of it."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


def train_batches(data: TrainingData, order: TrainBatchOrder, config: RunConfig, accelerator: Accelerator):
    """An endless iterator of (inputs, targets) micro-batches on this process's device, in `order`."""
    workers = config.data.dataloader_workers
    # Workers from a fork server, not forked from this process, which has threads by now (the stall watchdog,
    # the progress bar's, the process group's): a fork can copy a lock one of them holds into a worker.
    loader = torch.utils.data.DataLoader(
        data.train, sampler=order, batch_size=None, num_workers=workers, pin_memory=accelerator.device.type == "cuda",
        persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None,
        multiprocessing_context=worker_context() if workers > 0 else None,
    )
    for inputs, targets in loader:
        yield inputs.to(accelerator.device, non_blocking=True), targets.to(accelerator.device, non_blocking=True)
