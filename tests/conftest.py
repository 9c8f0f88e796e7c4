"""The suite's fixtures; the helpers they and the tests share live in `support/`, by concern."""

import json
import random

import pytest
import tiktoken
import torch
from accelerate import Accelerator
from support.corpus import DOCUMENTS, EOT
from support.hub import FinewebHub, write_fineweb_edu, write_hellaswag, write_tokenizer_repo
from support.paths import shared_data_dir
from support.tiny import prepare_tiny_data, tiny_config, tiny_run_args
from tiktoken.load import load_tiktoken_bpe
from tiktoken_ext.openai_public import r50k_pat_str
from transformers import AutoTokenizer

import run_pretrain
from eval.hellaswag import Example
from modeling_gpt2_scratch import GPT2ScratchForCausalLM
from preparation.tokenizer import tokenizer_from_source


@pytest.fixture(scope="session")
def shared_data():
    path = shared_data_dir()
    if not (path / "gpt2.tiktoken").exists():
        pytest.skip(f"shared data not found at {path} (set GPT2_SCRATCH_DATA)")
    return path


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """Python's own `email` package sources, a 384-token BPE trained on them, packed in blocks of 32."""
    out = tmp_path_factory.mktemp("tiny") / "data"
    prepare_tiny_data(out)
    return out


@pytest.fixture(scope="session")
def trained_run(tiny_data, tmp_path_factory):
    """A run_pretrain.py job on the tiny data, its `final/` a plain GPT-2 (the default)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    assert run_pretrain.main(tiny_run_args(tiny_data, out, max_steps=6, save_every=0)) == 0
    return out


@pytest.fixture(scope="session")
def trained_scratch_run(tiny_data, tmp_path_factory):
    """The same job with `--final_format scratch`: its `final/` is this model's class (remote code)."""
    out = tmp_path_factory.mktemp("trained_scratch") / "run"
    assert run_pretrain.main(tiny_run_args(tiny_data, out, max_steps=6, save_every=0, final_format="scratch")) == 0
    return out


WORDS = "the king and queen of a castle went to see his horse by night while old men slept in one red house".split()


@pytest.fixture(scope="module")
def tokenizer(tiny_data):
    return AutoTokenizer.from_pretrained(tiny_data / "tokenizer")


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(1)
    config = tiny_config(vocab_size=len(tokenizer), n_positions=256, bos_token_id=0, eos_token_id=0)
    return GPT2ScratchForCausalLM(config).eval()


@pytest.fixture(scope="module")
def examples():
    """HellaSwag-schema examples with endings of different lengths, so that padding and per-token
    normalisation both matter."""
    rng = random.Random(0)
    sentence = lambda n: " ".join(rng.choice(WORDS) for _ in range(n))  # noqa: E731
    return [Example(sentence(rng.randint(3, 30)), [sentence(rng.randint(1, 12)) for _ in range(4)], rng.randint(0, 3))
            for _ in range(23)]


@pytest.fixture(scope="module")
def accelerator():
    return Accelerator(cpu=True, mixed_precision="no")


@pytest.fixture(scope="session")
def ranks_file(shared_data):
    return str(shared_data / "gpt2.tiktoken")


@pytest.fixture(scope="session")
def reference(ranks_file):
    """tiktoken's own GPT-2 encoding (r50k_base's pattern and ranks): the independent reference."""
    return tiktoken.Encoding("r50k_reference", pat_str=r50k_pat_str, mergeable_ranks=load_tiktoken_bpe(ranks_file),
                             special_tokens={"<|endoftext|>": EOT})


@pytest.fixture(scope="session")
def fineweb_hub(shared_data, ranks_file, tmp_path_factory):
    """A FineWeb-Edu-shaped hub folder (Tiny Shakespeare's paragraphs as 3 shards of `sample-10BT`), GPT-2's
    tokenizer as `openai-community/gpt2` and the cloze set as `Rowan/hellaswag`'s validation split: the root a
    `HubStandIn` serves, and the documents of each shard."""
    root = tmp_path_factory.mktemp("hub")
    paragraphs = [p for p in (shared_data / "tinyshakespeare.txt").read_text().split("\n\n") if p.strip()]
    third = len(paragraphs) // 3
    paragraphs[5] += " (a U+FFFD the source itself holds: \ufffd)"  # not an undecodable byte of the kit's reading
    shards = [paragraphs[:third], paragraphs[third:2 * third], paragraphs[2 * third:]]
    paths = write_fineweb_edu(root, shards)
    write_tokenizer_repo(root, tokenizer_from_source(ranks_file))
    cloze = (shared_data / "cloze_shakespeare_val.jsonl").read_text().splitlines()
    write_hellaswag(root, [json.loads(line) for line in cloze if line.strip()])
    return FinewebHub(root, dict(zip(paths, shards, strict=True)))


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i, text in enumerate(DOCUMENTS):
        (folder / f"doc{i}.txt").write_text(text, encoding="utf-8")
    return folder
