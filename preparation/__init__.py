"""The steps `prepare_data.py` runs, one module a job; the command itself only orders them.

- `corpus`: the source documents (a hub dataset or local files), cached or streamed
- `hub`: a hub dataset's files pinned to a commit, checked against the disk, downloaded with retries and verified
- `tokenizer`: the tokenizer (hub id, directory, GPT-2's .tiktoken ranks, or a BPE trained on the corpus) and
  the `datasets.map` function that encodes documents with tiktoken or `tokenizers`
- `splits`: which tokens are held out for validation, and each split's statistics (both pipelines)
- `packing`: a token stream cut into rows of `block_size + 1`, by groups of documents
- `cached`: the pipeline over a cached corpus (tokenize, split by documents, pack)
- `streaming`: the pipeline over a stream (a process pool tokenizes, rows are packed and written as they come)
- `output`: the output directory, written whole or not at all
"""


class PrepareError(Exception):
    """A problem with the input: reported on one line, with nothing written."""


class SourceUnavailable(PrepareError):
    """The source kept failing (the hub's 429s and 5xx, timeouts, content that does not match its digest) past its
    retries: nothing is written, what was downloaded is kept, and the same command run again resumes."""
