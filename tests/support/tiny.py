"""The tiny model, configuration, prepared data and run flags the suite trains with."""

import sysconfig
from pathlib import Path

from configuration import GPT2ScratchConfig
from training.arguments import RunConfig, parse_config

TINY_BLOCK = 32  # tokens per row of every prepared corpus in the suite


def tiny_config(**overrides) -> GPT2ScratchConfig:
    """Non-default sizes on purpose: odd vocabulary, heads that are not a power of two."""
    fields = dict(vocab_size=101, n_positions=48, n_embd=36, n_layer=3, n_head=3, bos_token_id=100,
                  eos_token_id=100, pad_vocab_size_multiple=64, loss_chunk_tokens=13)
    fields.update(overrides)
    return GPT2ScratchConfig(**fields)


def adamw_config(**overrides) -> RunConfig:
    flags = dict(max_steps=100, warmup_steps=10, learning_rate=1e-3, min_lr_ratio=0.1, weight_decay=0.1,
                 max_grad_norm=1.0, mixed_precision="no")
    flags.update(overrides)
    return parse_config([f"--{k}={v}" for k, v in flags.items()])


def prepare_tiny_data(out: Path, **overrides) -> dict:
    """Python's own `email` package sources, a 384-token BPE trained on them, packed in blocks of 32, into
    `out` (another folder gives the same data)."""
    from prepare_data import PrepareArguments, prepare

    stdlib = sysconfig.get_paths()["stdlib"]
    fields = dict(output_dir=str(out), dataset="text", data_files=[f"{stdlib}/email/*.py"], train_tokenizer_vocab=384,
                  block_size=TINY_BLOCK, num_proc=1, val_tokens=4096)
    return prepare(PrepareArguments(**{**fields, **overrides}))


def tiny_run_args(data_dir, output_dir, **overrides) -> list[str]:
    """Command-line flags for run_pretrain on the tiny data: a 2-layer model, 8 rows x 32 tokens a step."""
    flags = dict(data_dir=data_dir, output_dir=output_dir, n_layer=2, n_head=2, n_embd=32, n_positions=TINY_BLOCK,
                 micro_batch_size=4, total_batch_tokens=8 * TINY_BLOCK, dataloader_workers=0, max_steps=12,
                 warmup_steps=2, learning_rate=3e-3, mixed_precision="no", tf32=False, log_every=1, eval_every=6,
                 eval_tokens=1024, sample_every=-1, save_every=6, report_to="none")
    flags.update(overrides)
    return [f"--{key}={value}" for key, value in flags.items()]
