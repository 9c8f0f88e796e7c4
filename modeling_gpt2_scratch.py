"""GPT-2, written out for pretraining, inside transformers' conventions.

Read top to bottom: the attention, the MLP and the block, then the model, then the language-model
head with its fused cross-entropy, then the conversions to and from stock `GPT2LMHeadModel`.

What differs from `transformers.GPT2LMHeadModel`, and why:
- `nn.Linear` layers instead of GPT-2's `Conv1D`: PyTorch's native layout. OpenAI's checkpoints store
  [in, out] matrices; `from_pretrained` transposes them on the way in, `to_gpt2()` on the way out.
- The embedding table has `config.padded_vocab_size` rows (50304 for GPT-2) so the head's matmul has
  a GPU-friendly shape. Logits returned to callers are exactly `vocab_size` wide, so padding ids can
  never be predicted or sampled.
- Attention always goes through `scaled_dot_product_attention`, with `is_causal` on the training
  path so flash attention is used.
- While training with labels, the loss is computed by a fused linear + cross-entropy that never holds
  the logits of the whole batch (they would be 64 x 1024 x 50304 floats, 13 GB in float32). In eval
  mode the output has loss and logits, as every transformers model's does.
- The attention masks are built here from the 2-D padding mask, for whatever cache is in use (none,
  dynamic or static), rather than through transformers' mask helpers, whose signatures change between
  minor releases; the checkpoint carries this file as remote code and must load on all of them.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    GenerationMixin,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedConfig,
    PreTrainedModel,
)
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

try:  # inside a checkpoint loaded with trust_remote_code, the two files form a package
    from .configuration import GPT2ScratchConfig
except ImportError:  # in this repository they are top-level modules
    from configuration import GPT2ScratchConfig


IGNORE_INDEX = -100
# transformers 5.2x renamed the cache argument and output field `past_key_values` -> `cache`: this file
# speaks whichever the installed transformers speaks, so a checkpoint's remote code runs on either.
CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"
# GPT-2 stores these four matrices as Conv1D weights, [in_features, out_features].
CONV1D_WEIGHT_SUFFIXES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPT2ScratchConfig, layer_idx: int):
        super().__init__()
        self.n_head = config.n_head
        self.head_dim = config.n_embd // config.n_head
        self.layer_idx = layer_idx
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # query, key, value in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.c_proj.is_residual_projection = True
        self.attn_pdrop = config.attn_pdrop
        self.resid_dropout = nn.Dropout(config.resid_pdrop)

    def forward(
        self,
        hidden_states: torch.Tensor,  # (B, T, C)
        attention_mask: torch.Tensor | None = None,  # (B, 1, T, T_past + T), True where attending
        cache: Cache | None = None,
    ) -> torch.Tensor:
        batch, seq_len, width = hidden_states.shape
        # (B, T, 3C) -> three (B, n_head, T, head_dim)
        qkv = self.c_attn(hidden_states).view(batch, seq_len, 3, self.n_head, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx)  # (B, n_head, T_keys, head_dim)
        if attention_mask is not None and attention_mask.shape[-1] < key.shape[-2]:
            # A static cache hands back all its slots; the ones past the mask are not written yet.
            attention_mask = F.pad(attention_mask, (0, key.shape[-2] - attention_mask.shape[-1]), value=False)
        attn = F.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=attention_mask,
            dropout_p=self.attn_pdrop if self.training else 0.0,
            # Without a mask only the plain causal case reaches here (see `build_attention_mask`);
            # a single decoding step attends to everything it has.
            is_causal=attention_mask is None and seq_len > 1,
        )
        attn = attn.transpose(1, 2).reshape(batch, seq_len, width)  # (B, T, C)
        return self.resid_dropout(self.c_proj(attn))


# GPT-2's "gelu_new" is GELU's tanh approximation written out in eight elementwise ops, each of which
# keeps a 4 x n_embd tensor for backward; PyTorch's fused kernel computes the same function (to 3e-7)
# and keeps only its input.
FUSED_ACTIVATIONS = {"gelu_new": "gelu_pytorch_tanh"}


class MLP(nn.Module):
    def __init__(self, config: GPT2ScratchConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.intermediate_size)
        self.act = ACT2FN[FUSED_ACTIVATIONS.get(config.activation_function, config.activation_function)]
        self.c_proj = nn.Linear(config.intermediate_size, config.n_embd)
        self.c_proj.is_residual_projection = True
        self.dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(hidden_states))))


class Block(GradientCheckpointingLayer):
    """Pre-LayerNorm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config: GPT2ScratchConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config)

    def forward(self, hidden_states, attention_mask=None, cache=None):
        hidden_states = hidden_states + self.attn(self.ln_1(hidden_states), attention_mask, cache)
        return hidden_states + self.mlp(self.ln_2(hidden_states))


def build_attention_mask(
    attention_mask: torch.Tensor | None, query_len: int, past_len: int | torch.Tensor, cache: Cache | None,
    device: torch.device,
) -> torch.Tensor | None:
    """Boolean SDPA mask (B or 1, 1, query_len, past_len + query_len), or None for the plain causal case.

    `attention_mask` is transformers' 2-D padding mask (B, past_len + query_len) with 1 for real tokens;
    a 4-D mask (as `generate` builds for static caches) is taken as already built. Queries sit in the
    cache's slots past_len, past_len + 1, ...; later slots of a static cache are hidden by causality.
    """
    if attention_mask is not None and attention_mask.dim() == 4:
        return attention_mask
    keys_are_exactly_the_past = cache is None or isinstance(cache, DynamicCache)  # a static cache has spare slots
    if attention_mask is None and keys_are_exactly_the_past and (past_len == 0 or query_len == 1):
        return None  # is_causal (or nothing to hide) handles it, and keeps the flash kernel
    key_len = attention_mask.shape[-1] if attention_mask is not None else past_len + query_len
    query_positions = torch.arange(query_len, device=device)[:, None] + past_len
    key_positions = torch.arange(key_len, device=device)[None, :]
    mask = (key_positions <= query_positions)[None, None]  # (1, 1, T, T_past + T)
    if attention_mask is not None:
        mask = mask & attention_mask[:, None, None, :].bool()
        # A left-padding query sees no real key; letting it see itself keeps softmax finite.
        mask = mask | (key_positions == query_positions)
    return mask


class GPT2ScratchPreTrainedModel(PreTrainedModel):
    config_class = GPT2ScratchConfig
    config: GPT2ScratchConfig
    base_model_prefix = "transformer"
    supports_gradient_checkpointing = True
    _no_split_modules = ["Block"]
    _skip_keys_device_placement = [CACHE_FIELD]
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module):
        """GPT-2's initialisation: N(0, 0.02), zero biases, residual projections scaled by 1/sqrt(2 * n_layer)."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            if getattr(module, "is_residual_projection", False):
                # Two residual additions per block: this keeps the residual stream's variance flat with depth.
                std = std / math.sqrt(2 * self.config.n_layer)
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)


class GPT2ScratchModel(GPT2ScratchPreTrainedModel):
    def __init__(self, config: GPT2ScratchConfig):
        super().__init__(config)
        self.wte = nn.Embedding(config.padded_vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.n_positions, config.n_embd)
        self.drop = nn.Dropout(config.embd_pdrop)
        self.h = nn.ModuleList([Block(config, layer_idx=i) for i in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.wte

    def set_input_embeddings(self, new_embeddings):
        self.wte = new_embeddings

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,  # (B, T)
        attention_mask: torch.Tensor | None = None,  # (B, T_past + T)
        position_ids: torch.LongTensor | None = None,  # (B or 1, T)
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,  # (B, T, C)
        use_cache: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        cache = cache if cache is not None else kwargs.pop("past_key_values", None)  # transformers before 5.2x
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.wte(input_ids)
        seq_len = inputs_embeds.shape[1]

        use_cache = use_cache if use_cache is not None else (self.config.use_cache and not self.training)
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        if not use_cache:
            cache = None
        past_len = cache.get_seq_length() if cache is not None else 0  # a tensor for static caches
        # Under compile a static cache's length is data: the check would break the graph.
        if not torch.compiler.is_compiling() and past_len + seq_len > self.config.n_positions:
            raise ValueError(
                f"Sequence of {past_len + seq_len} tokens is longer than the model's n_positions "
                f"({self.config.n_positions}); truncate the input or use a model with more positions."
            )
        if position_ids is None:
            position_ids = (torch.arange(seq_len, device=inputs_embeds.device) + past_len)[None]

        mask = build_attention_mask(attention_mask, seq_len, past_len, cache, inputs_embeds.device)
        hidden_states = self.drop(inputs_embeds + self.wpe(position_ids))  # (B, T, C)
        for block in self.h:
            hidden_states = block(hidden_states, mask, cache)
        hidden_states = self.ln_f(hidden_states)
        return BaseModelOutputWithPast(last_hidden_state=hidden_states, **{CACHE_FIELD: cache})


class FusedLinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of `hidden @ weight.T`, a chunk of tokens at a time.

    Each chunk's logits live only inside the loop: the gradients with respect to `hidden` and
    `weight` are computed right there in the forward pass, and backward merely scales them. Peak
    memory for the head is one chunk of logits instead of the whole (B * T, vocab) tensor, and no
    matmul is repeated. Logits are taken in the ambient (autocast) precision and reduced in float32.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, normalizer, chunk_tokens):
        # hidden (N, C); weight (V, C); targets (N,) with IGNORE_INDEX for skipped positions
        needs_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        grad_hidden = torch.empty_like(hidden) if needs_grad else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if needs_grad else None
        loss_sum = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk_tokens):
            chunk_hidden = hidden[start : start + chunk_tokens]
            chunk_targets = targets[start : start + chunk_tokens]
            logits = (chunk_hidden @ weight.t()).float()  # (n, V)
            valid = chunk_targets != IGNORE_INDEX
            safe_targets = chunk_targets.clamp(min=0)[:, None]
            log_norm = torch.logsumexp(logits, dim=-1)
            target_logit = logits.gather(1, safe_targets).squeeze(1)
            loss_sum = loss_sum + ((log_norm - target_logit) * valid).sum()
            if needs_grad:
                grad_logits = torch.exp_(logits.sub_(log_norm[:, None]))  # softmax, in place
                grad_logits.scatter_add_(1, safe_targets, -torch.ones_like(safe_targets, dtype=grad_logits.dtype))
                grad_logits.mul_((valid / normalizer)[:, None])
                grad_logits = grad_logits.to(chunk_hidden.dtype)
                grad_hidden[start : start + chunk_tokens] = grad_logits @ weight.to(grad_logits.dtype)
                grad_weight += grad_logits.t() @ chunk_hidden
        if needs_grad:
            ctx.save_for_backward(grad_hidden, grad_weight.to(weight.dtype))
        return loss_sum / normalizer

    @staticmethod
    def backward(ctx, grad_loss):
        grad_hidden, grad_weight = ctx.saved_tensors
        return grad_hidden * grad_loss, grad_weight * grad_loss, None, None, None


def align_targets(labels: torch.Tensor | None, shift_labels: torch.Tensor | None) -> torch.Tensor:
    """Targets aligned with the inputs: `shift_labels` as given, or `labels` shifted left by one."""
    if shift_labels is not None:
        return shift_labels
    return F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)


class GPT2ScratchForCausalLM(GPT2ScratchPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "transformer.wte.weight"}

    def __init__(self, config: GPT2ScratchConfig):
        super().__init__(config)
        self.transformer = GPT2ScratchModel(config)
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,  # (B, T)
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,  # (B, T), the inputs themselves: shifted here
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        return_logits: bool | None = None,
        num_items_in_batch: torch.Tensor | int | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """`shift_labels` (B, T), targets already aligned with the inputs, may stand in for `labels`.

        It arrives through `**kwargs`, as in transformers' own models, so that `Trainer` counts only
        `labels` as a label column. Logits come back unless the model is training and has targets
        (they are what blows the memory there); `return_logits` overrides either way.
        """
        shift_labels = kwargs.pop("shift_labels", None)
        outputs = self.transformer(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,  # the cache under its pre-5.2x name, `past_key_values`, is taken there
        )
        hidden_states = outputs.last_hidden_state  # (B, T, C)
        head_weight = self.lm_head.weight[: self.config.vocab_size]  # padding rows never become logits

        has_targets = labels is not None or shift_labels is not None
        if return_logits is None:
            return_logits = not (self.training and has_targets)
        targets = normalizer = None
        if has_targets:
            targets = align_targets(labels, shift_labels).reshape(-1)
            normalizer = num_items_in_batch if num_items_in_batch is not None else (targets != IGNORE_INDEX).sum()

        loss = logits = None
        if return_logits:
            kept = hidden_states[:, -logits_to_keep:] if logits_to_keep and not has_targets else hidden_states
            logits = F.linear(kept, head_weight)  # (B, T or logits_to_keep, vocab_size)
            if has_targets:
                flat_logits = logits.reshape(-1, logits.shape[-1]).float()
                loss = F.cross_entropy(flat_logits, targets, ignore_index=IGNORE_INDEX, reduction="sum") / normalizer
                logits = logits[:, -logits_to_keep:] if logits_to_keep else logits
        elif has_targets:
            loss = FusedLinearCrossEntropy.apply(
                hidden_states.reshape(-1, hidden_states.shape[-1]),
                head_weight,
                targets,
                normalizer,
                self.config.loss_chunk_tokens,
            )
        return CausalLMOutputWithPast(loss=loss, logits=logits, **{CACHE_FIELD: getattr(outputs, CACHE_FIELD)})

    # ---- conversions to and from OpenAI's GPT-2 layout ------------------------------------------------

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """Load our own checkpoints, or any stock GPT-2 checkpoint (OpenAI's `openai-community/gpt2` too)."""
        if kwargs.get("config") is None and _is_stock_gpt2(pretrained_model_name_or_path, kwargs):
            kwargs["output_loading_info"] = True
            stock, info = GPT2LMHeadModel.from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
            incomplete = {kind: keys for kind, keys in info.items() if kind != "error_msgs" and keys}
            if incomplete:
                raise ValueError(f"{pretrained_model_name_or_path} is not a complete GPT-2 checkpoint: {incomplete}")
            return cls.from_gpt2(stock)
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        except RuntimeError as error:
            if "ignore_mismatched_sizes" not in str(error):
                raise
            # transformers only logs which tensors differ; load once more to name them in the error itself.
            _, info = super().from_pretrained(
                pretrained_model_name_or_path, *model_args, **kwargs, ignore_mismatched_sizes=True,
                output_loading_info=True,
            )
            shapes = "; ".join(f"{name}: checkpoint {tuple(a)} vs model {tuple(b)}" for name, a, b in
                               sorted(info["mismatched_keys"]))
            raise ValueError(f"{pretrained_model_name_or_path} does not fit the config: {shapes}") from None

    @classmethod
    def from_gpt2(cls, stock: GPT2LMHeadModel, pad_vocab_size_multiple: int = 64) -> "GPT2ScratchForCausalLM":
        """The same network as a stock `GPT2LMHeadModel`, in this class (Conv1D weights transposed)."""
        stock_config = stock.config
        if stock_config.add_cross_attention or stock_config.scale_attn_by_inverse_layer_idx:
            raise ValueError("Only plain GPT-2 checkpoints convert: cross-attention and layer-scaled attention differ")
        config = GPT2ScratchConfig(
            pad_vocab_size_multiple=pad_vocab_size_multiple,
            **{name: getattr(stock_config, name) for name in _SHARED_CONFIG_FIELDS},
        )
        model = cls(config).to(device=stock.device, dtype=stock.dtype)
        state = {}
        for name, tensor in stock.state_dict().items():
            if name.endswith(CONV1D_WEIGHT_SUFFIXES):
                tensor = tensor.t()
            elif name in ("transformer.wte.weight", "lm_head.weight"):
                tensor = F.pad(tensor, (0, 0, 0, config.padded_vocab_size - config.vocab_size))  # zero rows
            state[name] = tensor
        model.load_state_dict(state, strict=True)
        model.generation_config = stock.generation_config
        return model.train(stock.training)

    def to_gpt2(self, state_dict: dict | None = None) -> GPT2LMHeadModel:
        """A stock `GPT2LMHeadModel` with identical logits: padding rows dropped, Conv1D layout restored.

        `state_dict`: this model's full weights when they are not all here (gathered from FSDP shards).
        """
        fields = {name: getattr(self.config, name) for name in _SHARED_CONFIG_FIELDS}
        stock = GPT2LMHeadModel(GPT2Config(**fields, attn_implementation="sdpa"))
        stock.to(device=self.device, dtype=self.dtype)
        state = {}
        for name, tensor in (self.state_dict() if state_dict is None else state_dict).items():
            if name.endswith(CONV1D_WEIGHT_SUFFIXES):
                tensor = tensor.t().contiguous()
            elif name in ("transformer.wte.weight", "lm_head.weight"):
                tensor = tensor[: self.config.vocab_size]
            state[name] = tensor
        stock.load_state_dict(state, strict=True)
        stock.generation_config = self.generation_config
        return stock.train(self.training)


_SHARED_CONFIG_FIELDS = (
    "vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "n_inner", "activation_function",
    "resid_pdrop", "embd_pdrop", "attn_pdrop", "layer_norm_epsilon", "initializer_range",
    "bos_token_id", "eos_token_id", "pad_token_id",
)  # fmt: skip
_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder", "proxies")


def _is_stock_gpt2(name_or_path, kwargs) -> bool:
    hub_kwargs = {key: kwargs[key] for key in _HUB_KWARGS if key in kwargs}
    config_dict, _ = PreTrainedConfig.get_config_dict(name_or_path, **hub_kwargs)
    return config_dict.get("model_type") == "gpt2"


AutoConfig.register(GPT2ScratchConfig.model_type, GPT2ScratchConfig, exist_ok=True)
AutoModel.register(GPT2ScratchConfig, GPT2ScratchModel, exist_ok=True)
AutoModelForCausalLM.register(GPT2ScratchConfig, GPT2ScratchForCausalLM, exist_ok=True)
# save_pretrained writes both files and an `auto_map`, so `trust_remote_code=True` loads a checkpoint anywhere.
GPT2ScratchConfig.register_for_auto_class()
GPT2ScratchModel.register_for_auto_class("AutoModel")
GPT2ScratchForCausalLM.register_for_auto_class("AutoModelForCausalLM")

__all__ = ["GPT2ScratchPreTrainedModel", "GPT2ScratchModel", "GPT2ScratchForCausalLM"]
