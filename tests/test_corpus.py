"""preparation/corpus.py: local files as documents (through the text builder, or read where they lie), what the
metadata says of them, and corpora refused."""

import os

import pytest

from preparation import PrepareError
from preparation.corpus import CorpusSource, bundle_bounds, documents_of_file, load_corpus, text_file_references


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


TRICKY = {  # what datasets' text builder must split the same way: newline kinds, blank runs, bad bytes, ends
    "crlf.txt": b"first line\r\nsecond\r\n\r\nnew paragraph\r\n",
    "old_mac.txt": b"one\rtwo\r\rthree",
    "blank_runs.txt": b"\n\na\n\n\n\nb\n\n\n",
    "bad_bytes.txt": b"valid \xff\xfe bytes\n\nmore \xc3(\n",
    "no_final_newline.txt": b"last paragraph without a newline\n\nend",
    "empty.txt": b"",
    "only_newlines.txt": b"\n\n\n",
}


@pytest.mark.parametrize("unit", ["document", "paragraph", "line"])
def test_files_split_into_the_documents_datasets_text_builder_makes(tmp_path, unit):
    for name, data in TRICKY.items():
        (tmp_path / name).write_bytes(data)
    references = text_file_references(source([str(tmp_path / "*.txt")], text_unit=unit))
    built = load_corpus(source([str(tmp_path / "*.txt")], text_unit=unit))["text"]  # the builder: the reference
    ours = [text for bundle in references["path"] for path in bundle for text in documents_of_file(path, unit)]
    assert ours == built and len(ours) > len(TRICKY) - 2


def test_file_references_change_with_a_file_and_are_none_where_files_cannot_be_read_in_place(tmp_path):
    (tmp_path / "a.txt").write_text("alpha")
    (tmp_path / "b.txt").write_text("beta")
    files = [str(tmp_path / "*.txt")]
    before = text_file_references(source(files))
    assert [[p.rsplit("/", 1)[1] for p in bundle] for bundle in before["path"]] == [["a.txt", "b.txt"]]
    assert before["size"] == [[5, 4]]
    os.utime(tmp_path / "b.txt", ns=(1, 1))  # the same bytes, touched
    assert text_file_references(source(files))._fingerprint != before._fingerprint
    (tmp_path / "c.txt.gz").write_bytes(b"")
    assert text_file_references(source([str(tmp_path / "*")])) is None  # compressed: the builder extracts it
    assert text_file_references(source(files, streaming=True)) is None
    assert text_file_references(source([str(tmp_path / "*.json")], dataset="json")) is None


@pytest.mark.parametrize("patterns", [["**/*.txt"], ["sub/*.txt", "a.txt"], [".*"], ["**"]])
def test_file_references_are_the_files_the_text_builder_reads_in_its_order(tmp_path, patterns):
    """Hidden files and folders and `__special__` folders are skipped unless a pattern names them."""
    for name in ("a.txt", ".hidden.txt", ".cache/x.txt", "__pycache__/y.txt", "sub/c.txt", "sub/b.txt",
                 "sub/deeper/d.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)  # each document names its file
    data_files = [str(tmp_path / pattern) for pattern in patterns]
    built = load_corpus(source(data_files))["text"]
    references = text_file_references(source(data_files))
    files = [path for bundle in references["path"] for path in bundle]
    assert [text for path in files for text in documents_of_file(path, "document")] == built
    assert ".cache/x.txt" not in built and "__pycache__/y.txt" not in built


def test_files_are_bundled_in_order_up_to_a_size_and_a_larger_file_alone():
    assert bundle_bounds([100, 100, 300, 50, 50, 50], 200) == [0, 2, 3, 6]
    assert bundle_bounds([300], 200) == [0, 1]
    assert bundle_bounds([0, 0, 0], 200) == [0, 3]
