"""GPT-2, written out for pretraining, inside transformers' conventions.

Read top to bottom: the attention, the MLP and the block, then the model, then the language-model
head with its fused cross-entropy, then the conversions to and from stock `GPT2LMHeadModel`.

Everything a caller reaches through transformers behaves as in `transformers.GPT2LMHeadModel` with the
same weights: outputs (hidden states, attentions, tuples), `token_type_ids`, caches, generation, the
attention backends (`eager`, `sdpa`, `flash_attention_2`, `flex_attention`, hub kernels), resizing.
What differs, and why:
- `nn.Linear` layers instead of GPT-2's `Conv1D`: PyTorch's native layout. OpenAI's checkpoints store
  [in, out] matrices; `from_pretrained` transposes them on the way in, `to_gpt2()` on the way out.
- `return_logits=False` asks for the loss alone: a fused linear + cross-entropy that never holds the
  logits of the whole batch (they would be 64 x 1024 x 50304 floats, 13 GB in float32). The training
  loop and the validation pass ask for it; every other caller gets logits, as from any transformers model.
  Its matmuls use the head rounded up to `config.padded_vocab_size` rows (50304 for GPT-2), a
  GPU-friendly shape; the stored table keeps exactly `vocab_size` rows, as OpenAI's does.
- GELU's tanh approximation runs as PyTorch's fused kernel (see `FUSED_ACTIVATIONS`).
"""

import functools
import inspect
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
from transformers.masking_utils import create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

try:  # inside a checkpoint loaded with trust_remote_code, the two files form a package
    from .configuration import GPT2ScratchConfig
except ImportError:  # in this repository they are top-level modules
    from configuration import GPT2ScratchConfig


IGNORE_INDEX = -100
# GPT-2 stores these four matrices as Conv1D weights, [in_features, out_features].
CONV1D_WEIGHT_SUFFIXES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")

# transformers 5.2x renamed the cache argument and output field `past_key_values` -> `cache`. A checkpoint
# carries this file as remote code, so it speaks whichever name the installed transformers speaks.
CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"
MASK_CACHE_ARGUMENT = "cache" if "cache" in inspect.signature(create_causal_mask).parameters else "past_key_values"


def _takes_cache_under_its_old_name(forward):
    """Where `cache` is the current name, `past_key_values=` warns as stock's does; before the rename
    transformers itself (and `generate`) still passes `past_key_values`, which is taken silently."""
    if CACHE_FIELD == "cache":
        return deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")(forward)

    @functools.wraps(forward)
    def renamed(*args, **kwargs):
        if "past_key_values" in kwargs:
            kwargs["cache"] = kwargs.pop("past_key_values")
        return forward(*args, **kwargs)

    return renamed


def eager_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Attention written out, so that its weights exist (`output_attentions`).

    query (B, n_head, T, head_dim); key, value (B, n_head, T_keys, head_dim); attention_mask additive,
    (B or 1, 1, T, T_keys), or None. Returns the output (B, T, n_head, head_dim) and the weights
    (B, n_head, T, T_keys), as every function behind transformers' attention interface does.
    """
    if module.reorder_and_upcast_attn:  # GPT-2's flag: scores and softmax in float32, even under autocast
        with torch.autocast(query.device.type, enabled=False):
            scores = torch.matmul(query.float(), key.float().transpose(-1, -2)) * scaling
    else:
        scores = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    weights = F.softmax(scores, dim=-1).to(value.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2), weights


class CausalSelfAttention(nn.Module):
    is_causal = True  # read by transformers' attention functions

    def __init__(self, config: GPT2ScratchConfig, layer_idx: int):
        super().__init__()
        self.config = config  # its `_attn_implementation` chooses the attention function at every call
        self.n_head = config.n_head
        self.head_dim = config.n_embd // config.n_head
        self.layer_idx = layer_idx
        self.scaling = self.head_dim**-0.5 if config.scale_attn_weights else 1.0
        if config.scale_attn_by_inverse_layer_idx:
            self.scaling /= layer_idx + 1
        self.reorder_and_upcast_attn = config.reorder_and_upcast_attn
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # query, key, value in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.attn_pdrop = config.attn_pdrop
        self.resid_dropout = nn.Dropout(config.resid_pdrop)

    def forward(
        self,
        hidden_states: torch.Tensor,  # (B, T, C)
        attention_mask: torch.Tensor | None = None,  # as `create_causal_mask` builds it for the backend in use
        cache: Cache | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, seq_len, width = hidden_states.shape
        # (B, T, 3C) -> three (B, n_head, T, head_dim)
        qkv = self.c_attn(hidden_states).view(batch, seq_len, 3, self.n_head, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx)  # (B, n_head, T_keys, head_dim)
        # sdpa (the default) calls the fused kernel with `is_causal` when there is no mask: the training path.
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention)
        output, weights = attention(
            self,
            query,
            key,
            value,
            attention_mask,
            scaling=self.scaling,
            dropout=self.attn_pdrop if self.training else 0.0,
            **kwargs,
        )
        output = output.reshape(batch, seq_len, width)  # (B, T, n_head, head_dim) -> (B, T, C)
        return self.resid_dropout(self.c_proj(output)), weights


# GPT-2's "gelu_new" is GELU's tanh approximation written out in eight elementwise ops, each of which
# keeps a 4 x n_embd tensor for backward; PyTorch's fused kernel computes the same function (to 3e-7)
# and keeps only its input.
FUSED_ACTIVATIONS = {"gelu_new": "gelu_pytorch_tanh"}


class GPT2ScratchMLP(nn.Module):
    def __init__(self, config: GPT2ScratchConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.intermediate_size)
        self.act = ACT2FN[FUSED_ACTIVATIONS.get(config.activation_function, config.activation_function)]
        self.c_proj = nn.Linear(config.intermediate_size, config.n_embd)
        self.dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(hidden_states))))


class GPT2ScratchBlock(GradientCheckpointingLayer):
    """Pre-LayerNorm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config: GPT2ScratchConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = GPT2ScratchMLP(config)

    def forward(self, hidden_states, attention_mask=None, cache=None, **kwargs):
        attended, _ = self.attn(self.ln_1(hidden_states), attention_mask, cache, **kwargs)
        hidden_states = hidden_states + attended
        return hidden_states + self.mlp(self.ln_2(hidden_states))


class GPT2ScratchPreTrainedModel(PreTrainedModel):
    config_class = GPT2ScratchConfig
    config: GPT2ScratchConfig
    base_model_prefix = "transformer"
    _no_split_modules = ["GPT2ScratchBlock"]
    _skip_keys_device_placement = [CACHE_FIELD]
    # What transformers may rely on; each is exercised in tests/test_modeling_gpt2_scratch.py.
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True  # any function registered with transformers' AttentionInterface
    _can_compile_fullgraph = True  # static caches and compiled generation
    _can_record_outputs = {"hidden_states": GPT2ScratchBlock,
                           "attentions": OutputRecorder(CausalSelfAttention, index=1)}

    @torch.no_grad()
    def _init_weights(self, module):
        """GPT-2's initialisation: N(0, 0.02), zero biases, residual projections scaled by 1/sqrt(2 * n_layer)."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            if "c_proj" in self._name_of(module).split("."):
                # The attention's and the MLP's c_proj write into the residual stream: two additions per block, so
                # this keeps the stream's variance flat with depth.
                std = std / math.sqrt(2 * self.config.n_layer)
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)

    def _name_of(self, module: nn.Module) -> str:
        """The module's path in the model, as nanoGPT finds c_proj: by name (`...c_proj`, or `...c_proj.base_layer`
        under a PEFT or quantization wrapper), so nothing needs to be set on the layer itself."""
        names = self.__dict__.get("_module_names")
        if names is None or module not in names:  # built once, again if a module was swapped in
            names = self.__dict__["_module_names"] = {m: name for name, m in self.named_modules()}
        return names.get(module, "")


class GPT2ScratchModel(GPT2ScratchPreTrainedModel):
    def __init__(self, config: GPT2ScratchConfig):
        super().__init__(config)
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.n_positions, config.n_embd)
        self.drop = nn.Dropout(config.embd_pdrop)
        self.h = nn.ModuleList([GPT2ScratchBlock(config, layer_idx=i) for i in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.wte

    def set_input_embeddings(self, new_embeddings):
        self.wte = new_embeddings

    @merge_with_config_defaults  # use_cache from the config
    @capture_outputs  # output_hidden_states, output_attentions, return_dict
    @_takes_cache_under_its_old_name
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,  # (B, T)
        cache: Cache | None = None,
        attention_mask: torch.Tensor | None = None,  # (B, T_past + T), 1 for real tokens
        token_type_ids: torch.LongTensor | None = None,  # (B, T), embedded with the token table, as GPT-2 does
        position_ids: torch.LongTensor | None = None,  # (B or 1, T)
        inputs_embeds: torch.Tensor | None = None,  # (B, T, C)
        use_cache: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            self.warn_if_padding_and_no_attention_mask(input_ids, attention_mask)
            inputs_embeds = self.wte(input_ids)
        seq_len = inputs_embeds.shape[1]

        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        if not use_cache:  # (merge_with_config_defaults turns it off under gradient checkpointing)
            cache = None
        past_len = cache.get_seq_length() if cache is not None else 0  # a tensor for static caches
        # Under compile a static cache's length is data: the check would break the graph.
        if not torch.compiler.is_compiling() and past_len + seq_len > self.config.n_positions:
            raise ValueError(
                f"Sequence of {past_len + seq_len} tokens is longer than the model's n_positions "
                f"({self.config.n_positions}); truncate the input or use a model with more positions."
            )
        # In the form the configured backend takes: None on the plain causal path, so sdpa runs `is_causal`.
        # Only a caller's positions can mark packed sequences; checking our own would read the device.
        mask = create_causal_mask(
            config=self.config,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            **{MASK_CACHE_ARGUMENT: cache},
        )
        if position_ids is None:
            position_ids = (torch.arange(seq_len, device=inputs_embeds.device) + past_len)[None]
        hidden_states = inputs_embeds + self.wpe(position_ids)  # (B, T, C)
        if token_type_ids is not None:
            hidden_states = hidden_states + self.wte(token_type_ids)
        hidden_states = self.drop(hidden_states)
        for block in self.h:
            hidden_states = block(hidden_states, mask, cache, position_ids=position_ids, **kwargs)
        hidden_states = self.ln_f(hidden_states)
        return BaseModelOutputWithPast(last_hidden_state=hidden_states, **{CACHE_FIELD: cache})


class FusedLinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of `hidden @ weight.T`, a chunk of tokens at a time.

    Each chunk's logits live only inside the loop: the gradients with respect to `hidden` and
    `weight` are computed right there in the forward pass, and backward merely scales them. Peak
    memory for the head is one chunk of logits instead of the whole (B * T, vocab) tensor, and no
    matmul is repeated. The head is padded with zero rows to `padded_rows` (their logits masked out)
    so the matmuls have a GPU-friendly width. Logits are taken in the ambient (autocast) precision and
    reduced in float32. `grad_enabled` is the caller's grad mode (inside `forward` it is always off, and
    `needs_input_grad` still says True for a parameter under `torch.no_grad()`): without it, evaluation
    would pay for two more matmuls a chunk and a float32 copy of the head.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, normalizer, chunk_tokens, padded_rows, grad_enabled):
        # hidden (N, C); weight (V, C); targets (N,) with IGNORE_INDEX for skipped positions
        vocab = weight.shape[0]
        head = F.pad(weight, (0, 0, 0, padded_rows - vocab))  # (V_padded, C)
        needs_grad = grad_enabled and (ctx.needs_input_grad[0] or ctx.needs_input_grad[1])
        grad_hidden = torch.empty_like(hidden) if needs_grad else None
        grad_head = torch.zeros_like(head, dtype=torch.float32) if needs_grad else None
        loss_sum = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk_tokens):
            chunk_hidden = hidden[start : start + chunk_tokens]
            chunk_targets = targets[start : start + chunk_tokens]
            logits = (chunk_hidden @ head.t()).float()  # (n, V_padded)
            logits[:, vocab:] = float("-inf")  # padding ids are not tokens
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
                grad_hidden[start : start + chunk_tokens] = grad_logits @ head.to(grad_logits.dtype)
                grad_head += grad_logits.t() @ chunk_hidden
        if needs_grad:
            ctx.save_for_backward(grad_hidden, grad_head[:vocab].to(weight.dtype))
        return loss_sum / normalizer

    @staticmethod
    def backward(ctx, grad_loss):
        grad_hidden, grad_weight = ctx.saved_tensors
        return grad_hidden * grad_loss, grad_weight * grad_loss, None, None, None, None, None


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
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    @can_return_tuple
    @_takes_cache_under_its_old_name
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,  # (B, T)
        cache: Cache | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,  # (B, T), the inputs themselves: shifted here
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        return_logits: bool = True,
        num_items_in_batch: torch.Tensor | int | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """`shift_labels` (B, T), targets already aligned with the inputs, may stand in for `labels`.

        It arrives through `**kwargs`, as in transformers' own models, so that `Trainer` counts only
        `labels` as a label column. `return_logits=False` with targets computes the loss with the fused
        chunked cross-entropy and returns no logits: the training loop's call.
        """
        shift_labels = kwargs.pop("shift_labels", None)
        if shift_labels is not None:
            shift_labels = shift_labels.contiguous()  # slices of token rows are welcome (the loss views them)
        outputs = self.transformer(
            input_ids,
            cache=cache,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state  # (B, T, C)
        has_targets = labels is not None or shift_labels is not None

        loss = logits = None
        if return_logits:
            keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
            logits = self.lm_head(hidden_states if has_targets else hidden_states[:, keep])  # (B, T, vocab_size)
            if has_targets:
                loss = self.loss_function(logits, labels, vocab_size=self.config.vocab_size, shift_labels=shift_labels,
                                          num_items_in_batch=num_items_in_batch)
                logits = logits[:, keep]
        elif has_targets:
            targets = align_targets(labels, shift_labels).reshape(-1)
            normalizer = num_items_in_batch if num_items_in_batch is not None else (targets != IGNORE_INDEX).sum()
            loss = FusedLinearCrossEntropy.apply(
                hidden_states.reshape(-1, hidden_states.shape[-1]),
                self.lm_head.weight,
                targets,
                normalizer,
                self.config.loss_chunk_tokens,
                self.config.padded_vocab_size,
                torch.is_grad_enabled(),
            )
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            **{CACHE_FIELD: getattr(outputs, CACHE_FIELD)},
        )

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
        # One load that reports mismatched shapes instead of raising, so that the error can name every tensor
        # (transformers' own only logs them); a caller who asked to ignore them still can.
        wants_info, ignore = kwargs.pop("output_loading_info", False), kwargs.pop("ignore_mismatched_sizes", False)
        model, info = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs,
                                              ignore_mismatched_sizes=True, output_loading_info=True)
        if info["mismatched_keys"] and not ignore:
            shapes = "; ".join(f"{name}: checkpoint {tuple(a)} vs model {tuple(b)}" for name, a, b in
                               sorted(info["mismatched_keys"]))
            raise ValueError(f"{pretrained_model_name_or_path} does not fit the config: {shapes}")
        return (model, info) if wants_info else model

    @classmethod
    def from_gpt2(cls, stock: GPT2LMHeadModel, pad_vocab_size_multiple: int = 64) -> "GPT2ScratchForCausalLM":
        """The same network as a stock `GPT2LMHeadModel`, in this class (Conv1D weights transposed)."""
        if stock.config.add_cross_attention:
            raise ValueError("Only decoder-only GPT-2 checkpoints convert: this one has cross-attention layers")
        config = GPT2ScratchConfig(
            pad_vocab_size_multiple=pad_vocab_size_multiple,
            attn_implementation=stock.config._attn_implementation,
            **{name: getattr(stock.config, name) for name in _SHARED_CONFIG_FIELDS},
        )
        model = cls(config).to(device=stock.device, dtype=stock.dtype)
        model.load_state_dict(_swap_conv1d_layout(stock.state_dict()), strict=True)
        model.generation_config = stock.generation_config
        return model.train(stock.training)

    def to_gpt2(self, state_dict: dict | None = None) -> GPT2LMHeadModel:
        """A stock `GPT2LMHeadModel` with identical logits (Conv1D layout restored).

        `state_dict`: this model's full weights when they are not all here (gathered from FSDP shards).
        """
        fields = {name: getattr(self.config, name) for name in _SHARED_CONFIG_FIELDS}
        # sdpa, stock's default: the backend ours may be switched to (flex, a registered one) need not be stock's
        stock = GPT2LMHeadModel(GPT2Config(**fields, attn_implementation="sdpa"))
        stock.to(device=self.device, dtype=self.dtype)
        stock.load_state_dict(_swap_conv1d_layout(self.state_dict() if state_dict is None else state_dict), strict=True)
        stock.generation_config = self.generation_config
        return stock.train(self.training)


def _swap_conv1d_layout(state_dict: dict) -> dict:
    """The same weights with the four Conv1D matrices of each block transposed (the swap is its own inverse)."""
    return {name: tensor.t().contiguous() if name.endswith(CONV1D_WEIGHT_SUFFIXES) else tensor
            for name, tensor in state_dict.items()}


_SHARED_CONFIG_FIELDS = (
    "vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "n_inner", "activation_function",
    "resid_pdrop", "embd_pdrop", "attn_pdrop", "layer_norm_epsilon", "initializer_range",
    "scale_attn_weights", "scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn",
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
