"""training/data.py: the order of training rows for any number of processes, and the batches."""



from training.data import TrainBatchOrder


def test_batch_order_is_the_same_for_any_world_size_and_resumes():
    def step_rows(world, steps, start=0):
        orders = [iter(TrainBatchOrder(103, 2, 4 // world, world, rank, seed=7, start_step=start))
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
