"""preparation/tokenizer.py: GPT-2's .tiktoken ranks as a Hugging Face tokenizer, and both encoders against tiktoken."""


from support.corpus import DOCUMENTS, EOT, prepare_corpus
from tiktoken.load import load_tiktoken_bpe

from preparation.tokenizer import DocumentTokenizer, gpt2_mergeable_ranks
from preparation.tokenizer import tokenizer_from_source as load_tokenizer


def test_tiktoken_file_becomes_a_tokenizer_with_gpt2_ids(ranks_file, reference):
    tokenizer = load_tokenizer(ranks_file)
    assert tokenizer("Hello world")["input_ids"] == [15496, 995]
    assert len(tokenizer) == 50257 and tokenizer.eos_token_id == EOT
    for text in DOCUMENTS:
        assert tokenizer(text)["input_ids"] == reference.encode_ordinary(text), text
    assert tokenizer.decode(reference.encode_ordinary(DOCUMENTS[2])) == DOCUMENTS[2]


def test_tiktoken_and_tokenizers_backends_give_identical_ids(ranks_file, tmp_path):
    tokenizer = load_tokenizer(ranks_file)
    tokenizer.save_pretrained(tmp_path / "tok")
    ranks = gpt2_mergeable_ranks(tokenizer)
    assert ranks == load_tiktoken_bpe(ranks_file)  # recovered from the HF tokenizer, byte for byte
    import pyarrow as pa

    batch = pa.table({"text": DOCUMENTS})
    fast = DocumentTokenizer(str(tmp_path / "tok"), "text", EOT, "uint16", ranks)(batch)
    slow = DocumentTokenizer(str(tmp_path / "tok"), "text", EOT, "uint16", None)(batch)
    assert fast.equals(slow)


def test_documents_are_encoded_as_tiktoken_encodes_ordinary_text(ranks_file, reference, tmp_path):
    """The special token's text inside a document is ordinary text, as in `encode_ordinary`; so is an empty
    document (only its <|endoftext|>)."""
    import pyarrow as pa

    texts = [*DOCUMENTS, "", "before <|endoftext|> after<|endoftext|>", "<|endoftext|>"]
    tokenize = DocumentTokenizer(str(tmp_path), "text", EOT, "uint16", load_tiktoken_bpe(ranks_file))
    encoded = tokenize(pa.table({"text": texts})).column("input_ids").to_pylist()
    assert encoded == [[EOT, *reference.encode_ordinary(text)] for text in texts]
    assert EOT not in encoded[-1][1:]


def test_non_utf8_bytes_are_replaced_and_counted(corpus, tmp_path, ranks_file, capsys):
    (corpus / "broken.txt").write_bytes(b"valid start \xff\xfe then more text " * 4)
    metadata = prepare_corpus(corpus, tmp_path / "out", ranks_file)
    assert metadata["replacement_chars"] == 8
    assert "  undecodable bytes replaced by U+FFFD: 8\n" in capsys.readouterr().out
