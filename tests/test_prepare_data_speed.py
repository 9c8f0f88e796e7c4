"""benchmarks/prepare_data_speed.py: our pipelines against the reproduction's and the tokenizer alone, as commands."""

import argparse
import json

import pytest

from benchmarks import prepare_data_speed


@pytest.mark.slow
def test_prepare_data_speed_measures_the_pipelines_on_one_corpus(shared_data, tmp_path, capsys):
    output = tmp_path / "speed.json"
    # main() stops when the pipelines' token counts differ on a corpus
    # streaming's own output is tested in test_streaming.py; here the three others, as the benchmark runs them
    pipelines = ["baseline", "cached", "tokenizer_only"]
    prepare_data_speed.main(["--data_dir", str(shared_data), "--tokens", "1M", "--shapes", "pages",
                             "--pipelines", ",".join(pipelines), "--num_proc", "2", "--output", str(output)])
    records = json.loads(output.read_text())["records"]
    assert [r["pipeline"] for r in records] == pipelines
    assert {r["tokens"] for r in records} == {1_812_358}  # one copy of the texts, cut into pages
    for record in records:
        assert record["peak_rss_bytes"] >= record["peak_anonymous_bytes"] > 50e6  # the process tree was measured
        assert record["seconds"] > 0
    by_name = {r["pipeline"]: r for r in records}
    assert by_name["cached"]["cache_bytes"] > 0 and by_name["cached"]["output_bytes"] > 2 * 1_812_358
    assert by_name["baseline"]["output_bytes"] == 2 * 1_812_358 + 128  # uint16 tokens in one .npy shard
    assert capsys.readouterr().out.count("| pages |") == 3



@pytest.mark.parametrize("ranks, args, message", [
    (False, ["--data_dir", "{d}"], "--data_dir {d}: no gpt2.tiktoken there"),
    (False, [], "--data_dir is required"),
    (True, ["--data_dir", "{d}"], "--data_dir {d}: no books in shakespeare/*.txt or milton/*.txt"),
    (True, ["--data_dir", "{d}", "--shapes", "files,books"], "--shapes books: not one of paragraphs, pages, files"),
    (True, ["--data_dir", "{d}", "--pipelines", "cached,fast"],
     "--pipelines fast: not one of baseline, cached, streaming, tokenizer_only"),
])
def test_a_command_line_that_cannot_run_is_refused_in_one_line_before_any_work(tmp_path, capsys, ranks, args,
                                                                                message):
    if ranks:
        (tmp_path / "gpt2.tiktoken").write_text("")  # never read: the refusal comes first
    with pytest.raises(SystemExit) as exited:
        prepare_data_speed.main([arg.format(d=tmp_path) for arg in args])
    assert exited.value.code == 2
    assert f": error: {message.format(d=tmp_path)}" in capsys.readouterr().err.strip().splitlines()[-1]


def test_the_files_shape_reads_no_books(tmp_path):
    (tmp_path / "gpt2.tiktoken").write_text("")
    args = argparse.Namespace(data_dir=tmp_path, shapes="files", pipelines="baseline,cached")
    assert prepare_data_speed.argument_problem(args) is None
