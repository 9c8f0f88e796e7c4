"""training/data.py: the step's shape, and the order of training rows for any number of processes."""

import pytest
from support.tiny import adamw_config

from training.arguments import ConfigError
from training.data import BatchPlan, TrainBatchOrder, batch_plan, rows_per_process


def test_batch_order_is_the_same_for_any_world_size_and_resumes():
    def step_rows(world, steps, start=0):
        plan = BatchPlan(micro_batch=2, accumulation=4 // world, processes=world)
        orders = [iter(TrainBatchOrder(103, plan, rank, seed=7, start_step=start))
                  for rank in range(world)]
        per_step = []
        for _ in range(steps):
            rows = [r for order in orders for _ in range(4 // world) for r in next(order)]
            per_step.append(sorted(rows))
        return per_step

    single, double = step_rows(1, 30), step_rows(2, 30)
    assert single == double
    assert step_rows(1, 10, start=20) == single[20:]
    per_epoch = 103 // 8
    first_epoch = [r for rows in single[:per_epoch] for r in rows]
    assert len(set(first_epoch)) == len(first_epoch)  # no row twice within an epoch
    assert single[per_epoch] != single[0]  # the next epoch is reshuffled


def test_a_batch_plan_keeps_the_tokens_per_step_and_is_never_changed():
    config = adamw_config(total_batch_tokens=8 * 4 * 32)  # 8 rows of 32 tokens on each of 4 processes
    assert rows_per_process(config, block_size=32, processes=4) == 8
    plan = batch_plan(config, block_size=32, processes=4, micro_batch=2)
    assert (plan.micro_batch, plan.accumulation, plan.processes, plan.rows_per_step) == (2, 4, 4, 32)
    with pytest.raises(AttributeError):
        plan.micro_batch = 4  # frozen: decided once, read everywhere
    with pytest.raises(ConfigError, match="not a multiple of micro_batch_size x block_size x processes = "
                                          "3 x 32 x 4 = 384"):
        batch_plan(config, block_size=32, processes=4, micro_batch=3)
