"""preparation/output.py: an output is written whole or not at all, and never over other data."""


import numpy as np
import pytest
from support.corpus import expect_error, prepare_corpus, rows_of

from preparation.output import staged
from prepare_data import main


def test_rerun_with_same_arguments_is_a_no_op(corpus, tmp_path, ranks_file, capsys):
    prepare_corpus(corpus, tmp_path / "out", ranks_file)
    stamp = (tmp_path / "out" / "prepare_metadata.json").stat().st_mtime_ns
    prepare_corpus(corpus, tmp_path / "out", ranks_file)
    assert "already holds this preparation" in capsys.readouterr().out
    assert (tmp_path / "out" / "prepare_metadata.json").stat().st_mtime_ns == stamp


def test_output_holding_other_data_is_refused_and_kept(corpus, tmp_path, ranks_file, capsys):
    prepare_corpus(corpus, tmp_path / "out", ranks_file)
    before = rows_of(tmp_path / "out", "train")
    argv = ["--output_dir", str(tmp_path / "out"), "--dataset", "text", "--data_files", str(corpus / "*.txt"),
            "--tokenizer", ranks_file, "--block_size", "16", "--num_proc", "1", "--val_tokens", "60"]
    expect_error(capsys, argv, "already holds other data; pass --overwrite")
    assert np.array_equal(rows_of(tmp_path / "out", "train"), before)
    assert main(argv + ["--overwrite"]) == 0
    assert rows_of(tmp_path / "out", "train").shape[1] == 17
    assert not (tmp_path / "out.tmp").exists() and not (tmp_path / "out.old").exists()


def test_a_failure_inside_leaves_the_previous_output_and_no_staging(tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    (output / "old").write_text("kept")
    with pytest.raises(KeyboardInterrupt), staged(output) as staging:
        (staging / "new").write_text("half")
        raise KeyboardInterrupt
    assert [p.name for p in output.iterdir()] == ["old"] and not (tmp_path / "out.tmp").exists()
    with staged(output) as staging:
        (staging / "new").write_text("whole")
    assert [p.name for p in output.iterdir()] == ["new"] and not (tmp_path / "out.old").exists()
