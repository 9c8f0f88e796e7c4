"""What the kit writes to disk and reads back, each format with its writer and reader in one module.

- `packed_data`: prepared data (`prepare_data.py` writes it; training, evaluation and the benchmarks read it)
- `run_log`: a training run's `log.jsonl` (the loop writes it; plots, model cards and benchmarks read it)
"""
