"""The pieces of `run_pretrain.py`'s recipe, one module a job (the run's log is `formats.run_log`).

- `arguments`: the run's typed configuration, read from YAML and overridden on the command line
- `data`: the step's shape (`BatchPlan`), the order of training rows for any number of processes, the batches
- `optimizer`: the optimizer and its learning-rate schedule
- `accelerator`: Accelerate set up for the run (mixed precision, compile, DDP), and its launch line
- `device`: what the device gets: auto precision, TF32, the attention kernel, start-up's report
- `memory`: the micro-batch search, running out of memory on one line, the memory estimate
- `step`: one optimizer step, with gradient accumulation and the step's one host sync
- `evaluation`: validation loss, samples and HellaSwag inside the loop
- `measurement`: FLOPs, MFU and throughput
- `checkpoints`: atomic, checksummed checkpoints, resuming from them, and the checks before a run
- `final_model`: the saved model, its stock GPT-2 export, the model card, and the hub upload
- `faults`: what stops a run from outside (preemption, a stalled or lost rank, the collective timeout), each
  ended on one line
- `exit_codes`: every status the run ends with
"""
