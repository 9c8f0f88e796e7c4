"""Helpers the tests share, by concern (conftest.py holds the fixtures alone):

- `paths`: the checkout and the shared data beside it
- `tiny`: the tiny model, configuration, prepared data and run flags the suite trains with
- `runs`: running `run_pretrain.py` (in a process, patched, killed) and reading its log
- `corpus`: the small corpus of the data-preparation tests and how to read what it became
- `hub`: a stand-in of the Hugging Face Hub (its HTTP API on 127.0.0.1, faults injected per file) and the
  repositories it serves (FineWeb-Edu, HellaSwag and GPT-2's tokenizer shaped), and running prepare_data.py on it
"""
