"""Configuration of GPT-2 trained from scratch.

The fields and their names are GPT-2's own (`transformers.GPT2Config`), so a stock GPT-2 `config.json`
reads straight into this class. Two things are added for the fused cross-entropy of training:
`pad_vocab_size_multiple`, which rounds the head's rows up to a GPU-friendly count for its matmuls
(50257 -> 50304; the stored table keeps `vocab_size` rows), and `loss_chunk_tokens`, how many tokens
it handles at a time.
"""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig


@strict
class GPT2ScratchConfig(PreTrainedConfig):
    model_type = "gpt2_scratch"
    attribute_map = {
        "hidden_size": "n_embd",
        "max_position_embeddings": "n_positions",
        "num_attention_heads": "n_head",
        "num_hidden_layers": "n_layer",
    }

    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None
    activation_function: str = "gelu_new"
    # The reproduction trains without dropout; set these to 0.1 to get GPT-2's fine-tuning setting.
    resid_pdrop: float | int = 0.0
    embd_pdrop: float | int = 0.0
    attn_pdrop: float | int = 0.0
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    # GPT-2's attention switches, as stock implements them: scores divided by sqrt(head_dim); also by the
    # layer's 1-based index; and (eager attention) scores and softmax in float32 under autocast.
    scale_attn_weights: bool = True
    scale_attn_by_inverse_layer_idx: bool = False
    reorder_and_upcast_attn: bool = False
    use_cache: bool = True
    bos_token_id: int | None = 50256
    eos_token_id: int | list[int] | None = 50256
    pad_token_id: int | None = None
    tie_word_embeddings: bool = True
    pad_vocab_size_multiple: int = 64
    loss_chunk_tokens: int = 8192

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the head in the fused loss's matmuls: `vocab_size` rounded up to `pad_vocab_size_multiple`."""
        multiple = self.pad_vocab_size_multiple
        return -(-self.vocab_size // multiple) * multiple

    @property
    def intermediate_size(self) -> int:
        return self.n_inner if self.n_inner is not None else 4 * self.n_embd

    def validate_sizes(self):
        for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "pad_vocab_size_multiple",
                     "loss_chunk_tokens"):
            value = getattr(self, name)
            if value <= 0:
                raise ValueError(f"GPT2ScratchConfig.{name} must be a positive integer, got {value}")
        if self.n_inner is not None and self.n_inner <= 0:
            raise ValueError(f"GPT2ScratchConfig.n_inner must be positive or None, got {self.n_inner}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(
                f"GPT2ScratchConfig.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})"
            )


__all__ = ["GPT2ScratchConfig"]
