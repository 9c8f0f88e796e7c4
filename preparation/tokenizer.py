"""The tokenizer of a preparation, and the `datasets.map` function that encodes documents with it."""

import itertools
import json

import numpy as np
import pyarrow as pa
from transformers import GPT2Tokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import TikTokenConverter, bytes_to_unicode

from formats.packed_data import row_dtype, tokenizer_dir
from preparation import PrepareError
from preparation.corpus import documents_of_file

EOT = "<|endoftext|>"
GPT2_SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""


def tokenizer_from_source(source: str) -> PreTrainedTokenizerBase:
    """A Hugging Face fast tokenizer from a hub id, a directory, or GPT-2's .tiktoken ranks file."""
    try:
        if source.endswith(".tiktoken"):
            vocab, merges = TikTokenConverter(vocab_file=source).extract_vocab_merges_from_model(source)
            vocab[EOT] = len(vocab)  # GPT-2: 50,256 ranked tokens, then <|endoftext|> = 50256
            return GPT2Tokenizer(vocab=vocab, merges=merges, name_or_path=source)
        from transformers import AutoTokenizer  # it imports torch, which a .tiktoken source never needs

        return AutoTokenizer.from_pretrained(source)
    except Exception as error:  # any failure here means the same thing to the user
        raise PrepareError(f"cannot load tokenizer {source!r}: {type(error).__name__}: {error}") from None


def train_bpe_tokenizer(corpus, text_column: str, vocab_size: int) -> PreTrainedTokenizerFast:
    """A GPT-2-style byte-level BPE learned from the corpus, with <|endoftext|> as its only special token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    texts = (batch[text_column] for batch in corpus.iter(batch_size=1000))
    tokenizer.train_from_iterator(texts, trainer=trainer, length=len(corpus))
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=EOT, eos_token=EOT, unk_token=EOT,
                                   name_or_path=f"bpe-{vocab_size}")


def end_of_text_id(tokenizer: PreTrainedTokenizerBase) -> int:
    token_id = tokenizer.convert_tokens_to_ids(EOT) if EOT in tokenizer.get_vocab() else tokenizer.eos_token_id
    if token_id is None:
        raise PrepareError(f"tokenizer {tokenizer.name_or_path!r} has neither {EOT} nor an eos token")
    return token_id


def gpt2_mergeable_ranks(tokenizer: PreTrainedTokenizerBase) -> dict[bytes, int] | None:
    """The tokenizer's BPE as tiktoken ranks when it is GPT-2's byte-level BPE; else None.

    tiktoken encodes about twice as fast as `tokenizers` on one core, so the pipeline uses it when the
    tokenizer has GPT-2's pre-tokenizer, the 256 byte tokens at ids 0-255, and merges whose priority
    follows the id of the token they make, which is how tiktoken ranks merges. (OpenAI's own
    `tokenizer.json` and the one converted from `gpt2.tiktoken` both qualify; the tests check the ids.)
    """
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    model, pre_tokenizer = state["model"], state.get("pre_tokenizer") or {}
    is_gpt2_pre_tokenizer = (pre_tokenizer.get("type") == "ByteLevel" and pre_tokenizer.get("use_regex")
                             and not pre_tokenizer.get("add_prefix_space"))
    if model.get("type") != "BPE" or not is_gpt2_pre_tokenizer or state.get("normalizer"):
        return None
    byte_of_char = {ord(char): byte for byte, char in bytes_to_unicode().items()}
    special = {token["content"] for token in state.get("added_tokens", [])}
    vocab = {token: token_id for token, token_id in model["vocab"].items() if token not in special}
    if not set(map(ord, "".join(vocab))) <= byte_of_char.keys():  # a token that is not byte-level
        return None
    ranks = {token.translate(byte_of_char).encode("latin-1"): token_id for token, token_id in vocab.items()}
    merges = [m.split(" ") if isinstance(m, str) else m for m in model["merges"]]
    bytes_first = sorted(ranks.get(bytes([b]), -1) for b in range(256)) == list(range(256))
    merged_ids = [vocab.get(left + right, -1) for left, right in merges]
    merges_in_id_order = min(merged_ids, default=0) >= 256 and all(a <= b for a, b in itertools.pairwise(merged_ids))
    return ranks if bytes_first and merges_in_id_order else None


class DocumentTokenizer:
    """`datasets.map` function: a batch of documents -> one list<uint16|uint32> of ids per document, each
    starting with <|endoftext|>, and the count of undecodable bytes each document had.

    Pickled into each worker by its source and ids only; the encoder is built lazily in the worker.
    """

    batch_size = 1000  # documents a call

    def __init__(self, tokenizer_dir: str, text_column: str, eot_id: int, dtype: str, ranks: dict | None):
        self.tokenizer_dir, self.text_column, self.eot_id = tokenizer_dir, text_column, eot_id
        self.dtype, self.ranks = dtype, ranks
        self._encode = None

    @property
    def backend(self) -> str:
        return "tiktoken" if self.ranks is not None else "tokenizers"

    def __getstate__(self):
        return {**self.__dict__, "_encode": None}

    def _build_encoder(self):
        """A function from a document's text to its token ids as a numpy array (no Python list in between)."""
        if self.ranks is not None:
            import tiktoken

            # The one special token is never allowed in `encode`, so its text is encoded as ordinary text, as
            # `encode_ordinary` would; it is there because tiktoken's special-token scan degrades to a search at
            # every character when there are none, which made `encode_to_numpy` slower than a list.
            unused_id = max(self.ranks.values()) + 1
            encoding = tiktoken.Encoding("gpt2", pat_str=GPT2_SPLIT_PATTERN, mergeable_ranks=self.ranks,
                                         special_tokens={EOT: unused_id})
            return lambda text: encoding.encode_to_numpy(text, allowed_special=set(), disallowed_special=())
        from transformers import AutoTokenizer

        backend = AutoTokenizer.from_pretrained(self.tokenizer_dir).backend_tokenizer
        return lambda text: np.array(backend.encode(text, add_special_tokens=False).ids, dtype=np.uint32)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return self.tokenize_texts(batch.column(self.text_column).to_pylist())

    def tokenize_texts(self, texts: list[str]) -> pa.Table:
        """The documents' ids and undecodable-byte counts, as `__call__` returns them for a batch."""
        if self._encode is None:
            self._encode = self._build_encoder()
        eot = np.array([self.eot_id], dtype=np.uint32)
        pieces = [piece for text in texts for piece in (eot, self._encode(text))]  # each document after an EOT
        lengths = np.fromiter(map(len, pieces[1::2]), dtype=np.int64, count=len(texts)) + 1
        offsets = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        ids = np.concatenate(pieces).astype(self.dtype, copy=False) if pieces else np.empty(0, dtype=self.dtype)
        replacements = [text.count("\ufffd") for text in texts]  # undecodable bytes, replaced when read
        return pa.table({
            "input_ids": pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(ids)),
            "replacement_chars": pa.array(replacements, pa.int64()),
        })


class FileTokenizer:
    """`datasets.map` function over bundles of file references (`corpus.text_file_references`), one bundle a call:
    each file's documents, read where the file lies, tokenized by a `DocumentTokenizer`; one output row a
    document, in the files' order."""

    batch_size = 1  # bundle

    def __init__(self, documents: DocumentTokenizer, text_unit: str):
        self.documents, self.text_unit = documents, text_unit
        self.dtype, self.eot_id, self.backend = documents.dtype, documents.eot_id, documents.backend
        self.text_column = documents.text_column

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = [text for bundle in batch.column("path").to_pylist() for path in bundle
                 for text in documents_of_file(path, self.text_unit)]
        return self.documents.tokenize_texts(texts)


def document_tokenizer(tokenizer: PreTrainedTokenizerBase, eot_id: int, text_column: str,
                       output_dir) -> DocumentTokenizer:
    """Save the tokenizer into the output and build the map function that encodes documents with it."""
    tokenizer.save_pretrained(tokenizer_dir(output_dir))
    return DocumentTokenizer(str(tokenizer_dir(output_dir)), text_column, eot_id, row_dtype(len(tokenizer)),
                             gpt2_mergeable_ranks(tokenizer))
