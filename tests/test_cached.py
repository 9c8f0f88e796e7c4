"""preparation/cached.py: the cached pipeline's output does not depend on its worker count."""


import numpy as np
from support.corpus import prepare_corpus, rows_of


def test_output_is_identical_for_one_and_two_processes(corpus, tmp_path, ranks_file):
    prepare_corpus(corpus, tmp_path / "one", ranks_file, num_proc=1)
    prepare_corpus(corpus, tmp_path / "two", ranks_file, num_proc=2)
    for split in ("train", "validation"):
        assert np.array_equal(rows_of(tmp_path / "one", split), rows_of(tmp_path / "two", split))
