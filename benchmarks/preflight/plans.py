"""The sizes of every stage of the pre-flight check: the GPU's, or the smoke run's on CPU. The code is the same."""

from dataclasses import dataclass, field

STAGES = ("environment", "correctness", "throughput", "muon", "hellaswag", "recipe")
MEMORY_GOAL_BYTES = 40e9  # 32 x 1024 micro-batches of the 124M recipe should fit a 40 GB card


@dataclass(frozen=True)
class Plan:
    """The sizes of every stage: the GPU's, or the smoke run's on CPU. The code is the same."""

    name: str
    model: dict  # n_layer, n_head, n_embd
    vocab: int
    seq_len: int
    micro_batch: int  # throughput and Muon
    memory_micro_batch: int  # the 40 GB goal's
    correctness_batch: int
    compile_backend: str | None  # the correctness stage's compiled copy; None: not compiled
    throughput: dict  # benchmarks.throughput.ThroughputSettings: the model's size, compile, steps timed
    matmul_size: int
    hellaswag_examples: int | None  # None: the whole carried set
    hellaswag_batch_sizes: tuple
    recipe_steps: int  # evaluation, samples and checkpoints at the half and the end
    recipe_prepare_flags: list
    recipe_flags: list  # both recipe runs (sizes)
    recipe_evaluation_flags: list  # the main run's evaluation sizes
    budgets: dict = field(default_factory=dict)  # seconds per stage

    @property
    def total_seconds(self) -> int:
        return sum(self.budgets.values())


def gpu_plan() -> Plan:
    from benchmarks.throughput import SIZES

    return Plan(
        name="gpu", model=SIZES["124m"], vocab=50257, seq_len=1024, micro_batch=64, memory_micro_batch=32,
        correctness_batch=8, compile_backend="inductor", matmul_size=8192, hellaswag_examples=None,
        hellaswag_batch_sizes=(16, 64), recipe_steps=16,  # 16: the CLI's default batch, 64: the loop's micro-batch
        throughput=dict(size="124m", compile=True, warmup=3, steps=10, profile_steps=1),
        recipe_prepare_flags=["--max_documents", "20000"], recipe_flags=[],
        recipe_evaluation_flags=["--eval_tokens", "65536"],
        # the recipe's share includes downloading FineWeb-Edu's first sample file (about 2 GB) from the hub
        budgets=dict(environment=10, correctness=60, throughput=100, muon=25, hellaswag=15, recipe=150),
    )


def smoke_plan() -> Plan:
    from benchmarks.throughput import SIZES

    return Plan(
        name="smoke", model=SIZES["tiny"], vocab=2048, seq_len=64, micro_batch=4, memory_micro_batch=2,
        correctness_batch=2, compile_backend="aot_eager", matmul_size=256, hellaswag_examples=8,
        hellaswag_batch_sizes=(4,), recipe_steps=4,
        throughput=dict(size="tiny", compile=False, warmup=1, steps=2, profile_steps=1),
        recipe_prepare_flags=["--max_documents", "1000", "--block_size", "64"],
        recipe_flags=["--n_layer", "2", "--n_head", "2", "--n_embd", "64", "--n_positions", "64",
                      "--micro_batch_size", "4", "--total_batch_tokens", "512", "--compile", "false",
                      "--dataloader_workers", "0"],
        recipe_evaluation_flags=["--eval_tokens", "2048", "--sample_tokens", "8"],
        # generous for a shared 2-core machine; it takes about a minute
        budgets=dict(environment=30, correctness=60, throughput=60, muon=40, hellaswag=40, recipe=90),
    )
