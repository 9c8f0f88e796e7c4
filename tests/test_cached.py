"""preparation/cached.py: the cached pipeline's output does not depend on its worker count, and follows the files."""

import gc

import numpy as np
import pytest
from support.corpus import EOT, prepare_corpus, rows_of, split_on

from preparation.cached import shared_with_forked_workers
from preparation.corpus import documents_of_file


def test_output_is_identical_for_one_and_two_processes(corpus, tmp_path, ranks_file):
    prepare_corpus(corpus, tmp_path / "one", ranks_file, num_proc=1)
    prepare_corpus(corpus, tmp_path / "two", ranks_file, num_proc=2)
    for split in ("train", "validation"):
        assert np.array_equal(rows_of(tmp_path / "one", split), rows_of(tmp_path / "two", split))


def test_an_edited_file_is_tokenized_again_and_its_new_text_is_what_the_splits_hold(corpus, tmp_path, ranks_file,
                                                                                   reference):
    """Files are read where they lie, so the map's cache is keyed by their size and time: one edited file makes
    the next preparation tokenize again, and its documents are the new text's tokens (tiktoken, the reference)."""
    cache = tmp_path / "cache"
    first = prepare_corpus(corpus, tmp_path / "first", ranks_file, text_unit="paragraph", cache_dir=str(cache))
    (corpus / "doc1.txt").write_text("A new first paragraph.\n\nAnd a second one, longer than before it was.")
    second = prepare_corpus(corpus, tmp_path / "second", ranks_file, text_unit="paragraph", cache_dir=str(cache))
    expected = [[EOT] + reference.encode_ordinary(text) for path in sorted(corpus.glob("*.txt"))
                for text in documents_of_file(str(path), "paragraph")]
    assert sum(s["documents"] for s in second["splits"].values()) == len(expected)
    assert sum(s["tokens"] for s in second["splits"].values()) == sum(map(len, expected))
    assert sum(s["tokens"] for s in first["splits"].values()) != sum(map(len, expected))
    found = []
    for split in ("train", "validation"):
        rows = rows_of(tmp_path / "second", split)
        stream = np.concatenate([rows[0]] + [row[1:] for row in rows[1:]]).tolist()
        found += [[EOT] + s for s in split_on(stream, EOT)][:-1]
    assert found and all(ids in expected for ids in found)


def test_objects_are_frozen_out_of_collection_only_while_workers_run():
    """Frozen while the workers run (so their collections write to none of the pages they share with this
    process), collected again afterwards, even when the map fails."""
    assert gc.get_freeze_count() == 0
    with shared_with_forked_workers():
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0
    with pytest.raises(KeyboardInterrupt), shared_with_forked_workers():
        raise KeyboardInterrupt
    assert gc.get_freeze_count() == 0
