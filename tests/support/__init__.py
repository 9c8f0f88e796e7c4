"""Helpers the tests share, by concern (conftest.py holds the fixtures alone):

- `paths`: the checkout and the shared data beside it
- `tiny`: the tiny model, configuration, prepared data and run flags the suite trains with
- `runs`: running `run_pretrain.py` (in a process, patched, killed) and reading its log
- `corpus`: the small corpus of the data-preparation tests and how to read what it became
"""
