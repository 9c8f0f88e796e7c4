"""preparation/splits.py: the validation-size policy; whole documents, or a lone document's last rows, held out."""



import numpy as np
from support.corpus import DOCUMENTS, prepare_corpus, rows_of

from preparation.splits import choose_validation_documents, split_statistics, validation_budget


def test_default_validation_size_is_proportional():
    assert validation_budget(None, 10_000_000_000, 1024) == 100_000_000
    assert validation_budget(None, 2_000_000, 1024) == 100_000
    assert validation_budget(None, 1000, 1024) == 4096


def test_single_document_corpus_carves_validation_from_the_stream(tmp_path, ranks_file, reference):
    text = " ".join(DOCUMENTS * 6)
    (tmp_path / "one.txt").write_text(text)
    metadata = prepare_corpus(tmp_path, tmp_path / "out", ranks_file, data_files=[str(tmp_path / "one.txt")],
                              val_tokens=64)
    train, val = rows_of(tmp_path / "out", "train"), rows_of(tmp_path / "out", "validation")
    assert len(val) == 2 and train[-1, -1] == val[0, 0]
    total = len(reference.encode_ordinary(text)) + 1
    assert metadata["splits"]["train"]["tokens"] + metadata["splits"]["validation"]["tokens"] == total


def test_a_stream_holds_out_the_reproductions_100m_and_a_request_is_kept():
    assert validation_budget(None, None, 1024) == 100_000_000
    assert validation_budget(5000, 10_000_000_000, 1024) == 5000


def test_validation_documents_are_seeded_and_just_enough():
    doc_tokens = np.array([10, 50, 20, 30, 40, 60])
    chosen = choose_validation_documents(doc_tokens, val_tokens=70, seed=3)
    assert np.array_equal(chosen, choose_validation_documents(doc_tokens, val_tokens=70, seed=3))
    order = np.random.default_rng(3).permutation(6)  # the documents in the seeded order, until 70 tokens
    needed = int(np.searchsorted(np.cumsum(doc_tokens[order]), 70)) + 1
    assert np.array_equal(chosen, np.sort(order[:needed])) and doc_tokens[chosen].sum() >= 70
    assert doc_tokens[np.sort(order[: needed - 1])].sum() < 70


def test_split_statistics_count_what_packing_left_untargeted():
    counts = {"train": {"documents": 3, "tokens": 100}, "validation": {"documents": 1, "tokens": 40}}
    stats = split_statistics(counts, {"train": 3, "validation": 1}, block_size=32)
    assert stats == {"train": {"documents": 3, "tokens": 100, "rows": 3, "dropped_tokens": 4},
                     "validation": {"documents": 1, "tokens": 40, "rows": 1, "dropped_tokens": 8}}
