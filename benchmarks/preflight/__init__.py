"""The pre-flight check that `benchmarks/gpu_check.py` runs: `plans` (the sizes, the GPU's or the CPU smoke run's),
`runner` (stages as functions with time budgets, each in a process of its own, one JSON record each), `stages`
(the six checks) and `report` (summary.json and summary.md)."""
