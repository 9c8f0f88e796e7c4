"""Measurements of the kit: each module is a command (`python benchmarks/NAME.py --help`) whose figures go into
`benchmarks/RESULTS.md`; `gpu_check.py` runs the GPU ones in one call."""
