"""preparation/corpus.py: local files as documents, what the metadata says of them, and corpora refused."""

import pytest

from preparation import PrepareError
from preparation.corpus import CorpusSource, load_corpus


def source(data_files, **overrides):
    fields = dict(dataset="text", dataset_config=None, dataset_revision=None, split="train", data_files=data_files,
                  text_column="text", text_unit="document", max_documents=None, streaming=False, cache_dir=None)
    return CorpusSource(**{**fields, **overrides})


def test_text_files_are_documents_files_paragraphs_or_lines(tmp_path):
    (tmp_path / "a.txt").write_text("one line\nsecond line\n\nnew paragraph\n")
    (tmp_path / "b.txt").write_text("other file\n")
    files = [str(tmp_path / "*.txt")]
    assert len(load_corpus(source(files))) == 2
    assert len(load_corpus(source(files, text_unit="paragraph"))) == 3
    assert len(load_corpus(source(files, text_unit="line"))) == 5  # the empty line is a document too
    assert len(load_corpus(source(files, text_unit="line", max_documents=2))) == 2
    assert load_corpus(source(files)).column_names == ["text"]


def test_the_metadata_names_what_the_documents_are():
    text = source(["/data/*.txt"], text_unit="paragraph").description()
    assert text == {"dataset": "text", "split": "train", "data_files": ["/data/*.txt"], "text_column": "text",
                    "max_documents": None, "text_unit": "paragraph"}
    hub = source(None, dataset="HuggingFaceFW/fineweb-edu", dataset_config="sample-10BT").description()
    assert hub["dataset_config"] == "sample-10BT" and "text_unit" not in hub
    assert source(None, dataset="HuggingFaceFW/fineweb-edu").is_local is False
    assert "dataset_config" not in source(["x.json"], dataset="json").description()


def test_missing_files_columns_and_documents_are_one_line_errors(tmp_path):
    with pytest.raises(PrepareError, match="no file matches"):
        load_corpus(source([str(tmp_path / "none" / "*.txt")]))
    with pytest.raises(PrepareError, match="--dataset json needs --data_files"):
        load_corpus(source(None, dataset="json"))
    (tmp_path / "rows.json").write_text('{"body": "a"}\n{"body": "b"}\n')
    with pytest.raises(PrepareError, match=r"no column 'text' in the corpus; its columns are \['body'\]"):
        load_corpus(source([str(tmp_path / "rows.json")], dataset="json"))
    assert len(load_corpus(source([str(tmp_path / "rows.json")], dataset="json", text_column="body"))) == 2
    with pytest.raises(PrepareError, match=r"no column 'text' in the corpus; its columns are \['body'\]"):
        load_corpus(source([str(tmp_path / "rows.json")], dataset="json", streaming=True))
