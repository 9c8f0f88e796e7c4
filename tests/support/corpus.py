"""The small corpus of the data-preparation tests, and how to read what it became."""

import json

import datasets
import numpy as np

from formats.packed_data import PackedRows
from prepare_data import PrepareArguments, main, prepare
from support.tiny import TINY_BLOCK

EOT = 50256  # GPT-2's <|endoftext|>

DOCUMENTS = [
    "Hello world",
    "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer",
    "Numbers 1234567 and   spaces\t\ttabs, naïve café, 日本語, emoji 🎉 and it's we'll they've.",
    "The slings and arrows of outrageous fortune,\n\nOr to take arms against a sea of troubles",
    " leading space and trailing space ",
    "A" * 300,
    "And by opposing end them. To die, to sleep; no more; and by a sleep to say we end the heart-ache",
    "the thousand natural shocks that flesh is heir to: 'tis a consummation devoutly to be wish'd.",
]


def prepare_corpus(corpus, out, ranks_file, **overrides):
    fields = dict(output_dir=str(out), dataset="text", data_files=[str(corpus / "*.txt")], tokenizer=ranks_file,
                  block_size=TINY_BLOCK, val_tokens=60, num_proc=1)
    fields.update(overrides)
    return prepare(PrepareArguments(**fields))


def rows_of(out, split):
    rows = PackedRows(datasets.load_from_disk(str(out))[split])
    return rows.take(np.arange(len(rows)))


def split_on(stream, separator):
    """Segments between separators (the first element is the separator itself)."""
    segments, current = [], None
    for token in stream:
        if token == separator:
            if current is not None:
                segments.append(current)
            current = []
        else:
            current.append(token)
    segments.append(current)
    return segments


def expect_error(capsys, argv, message):
    """prepare_data.py's main() refuses `argv` with exit 2 and one line holding `message`."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # progress bars may come before it
    assert err.startswith("prepare_data.py: error:"), err
    assert message in err, err


def write_jsonl(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path
