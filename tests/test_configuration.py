"""configuration.py: GPT-2's own field names, vocabulary padding, and sizes refused at construction."""

import pytest
from huggingface_hub.errors import StrictDataclassError

from configuration import GPT2ScratchConfig


@pytest.mark.parametrize("bad", [dict(n_embd=40, n_head=3), dict(n_layer=0), dict(vocab_size=-1),
                                 dict(n_inner=0), dict(pad_vocab_size_multiple=0)])
def test_invalid_config_fails_at_construction(bad):
    with pytest.raises(StrictDataclassError, match="GPT2ScratchConfig"):
        GPT2ScratchConfig(**bad)


def test_a_stock_gpt2_config_reads_straight_in_and_pads_the_vocabulary():
    from transformers import GPT2Config

    stock = GPT2Config(n_layer=3, n_head=4, n_embd=64, vocab_size=50257).to_dict()
    shared = {k: v for k, v in stock.items() if k in GPT2ScratchConfig.__dataclass_fields__}
    config = GPT2ScratchConfig(**shared)
    assert (config.n_layer, config.num_hidden_layers, config.hidden_size) == (3, 3, 64)
    assert config.padded_vocab_size == 50304 and config.intermediate_size == 256
    assert GPT2ScratchConfig(vocab_size=101, pad_vocab_size_multiple=64).padded_vocab_size == 128
