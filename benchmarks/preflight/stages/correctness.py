"""Stage 2: our model against stock `GPT2LMHeadModel` with the same weights, by `eval.parity`'s verdicts (the CPU
tests' too); flash attention ran; a compiled training step agrees with eager; the fused loss peaks below full
logits."""

import copy

import torch

from benchmarks.preflight.plans import Plan
from benchmarks.preflight.report import correctness_figures
from benchmarks.preflight.runner import Stage
from eval.parity import Measured, checks, gap
from formats.packed_data import inputs_and_targets, score_next_tokens
from training.measurement import available_device, flash_attention_check, profile_steps

COMPILED_AGREEMENT = 1e-2  # bf16 training losses of a compiled and an eager copy: each rounds on its own path


def run(stage: Stage) -> dict:
    from configuration import GPT2ScratchConfig
    from modeling_gpt2_scratch import GPT2ScratchForCausalLM

    plan, device = stage.plan, available_device()
    torch.backends.cuda.matmul.allow_tf32 = False  # the fp32 references are true fp32
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    ours = GPT2ScratchForCausalLM(GPT2ScratchConfig(vocab_size=plan.vocab, n_positions=plan.seq_len, **plan.model))
    ours = ours.to(device)
    stock = ours.to_gpt2()  # the same weights in OpenAI's layout
    ids = torch.randint(0, plan.vocab, (plan.correctness_batch, plan.seq_len + 1), device=device)
    batch = inputs_and_targets(ids)
    quantities = measure_both_ways({"ours": ours, "stock": stock}, batch)
    verdicts = checks([quantities["eval_loss"], quantities["train_loss"]],
                      [quantities["logits"], quantities["embedding_gradient"]])
    attention = attention_kernel_used(ours, batch, device)
    verdicts["SDPA ran flash attention (forward and backward)"] = attention["backend"] == ["flash"]
    stage.keep({"checks": dict(verdicts), "attention": attention})
    # At the throughput stage's shape: its compile of ours then finds this one in inductor's on-disk cache.
    ids = torch.randint(0, plan.vocab, (plan.micro_batch, plan.seq_len + 1), device=device)
    compiled = compiled_against_eager(copy.deepcopy(ours), plan, *inputs_and_targets(ids))
    verdicts["compiled and eager training losses agree within 1% (bf16)"] = (
        compiled["max_relative_gap"] <= COMPILED_AGREEMENT)
    memory = fused_loss_memory(ours, batch, device)
    if memory is not None:
        verdicts["fused loss peaks below full logits"] = memory["fused_peak_gib"] < memory["full_logits_peak_gib"]
    record = {
        "tokens": plan.correctness_batch * plan.seq_len, "passed": all(verdicts.values()), "checks": verdicts,
        "fp32_gap": {name: gap(q.ours_fp32, q.stock_fp32) for name, q in quantities.items()},
        "bf16_own_error": {name: dict(zip(("ours", "stock"), q.own_errors(), strict=True))
                           for name, q in quantities.items()},
        "bf16_gap_ours_stock": {name: gap(q.ours_bf16, q.stock_bf16) for name, q in quantities.items()},
        "attention": attention, "compiled_against_eager": compiled, "fused_loss_memory": memory,
    }
    record["ok"] = record["passed"]
    record["figures"] = correctness_figures(record, plan)
    return record


def measure_both_ways(models: dict, batch: tuple) -> dict[str, Measured]:
    """Eval loss and logits, training loss and the token embedding's gradient (tied to the head, so the loss's
    backward feeds it), of both models in float32 and under bf16 autocast."""
    found = {}
    for name, model in models.items():
        for bf16 in (False, True):
            loss, logits = forward(model, batch, bf16)
            train_loss, gradient = train_gradient(model, batch, bf16)
            found[name, bf16] = {"eval_loss": loss, "logits": logits, "train_loss": train_loss,
                                 "embedding_gradient": gradient}
    return {key: Measured(found["ours", False][key], found["stock", False][key], found["ours", True][key],
                          found["stock", True][key]) for key in found["ours", False]}


def forward(model, batch: tuple, bf16: bool) -> tuple[float, torch.Tensor]:
    """Eval-mode loss and float32 logits."""
    model.eval()
    with torch.no_grad(), torch.autocast(available_device().type, dtype=torch.bfloat16, enabled=bf16):
        out = score_next_tokens(model, *batch, return_logits=True)
    model.train()
    return out.loss.item(), out.logits.float()


def train_gradient(model, batch: tuple, bf16: bool) -> tuple[float, torch.Tensor]:
    """Training-mode loss (ours on its fused loss) and the token embedding's gradient."""
    model.train()
    model.zero_grad(set_to_none=True)
    with torch.autocast(available_device().type, dtype=torch.bfloat16, enabled=bf16):
        loss = score_next_tokens(model, *batch).loss
    loss.backward()
    gradient = model.get_input_embeddings().weight.grad.float().clone()
    model.zero_grad(set_to_none=True)
    return loss.item(), gradient


def attention_kernel_used(model, batch: tuple, device: torch.device) -> dict:
    """The SDPA implementation one bf16 training step dispatched to, from the profiler; why not flash, if not."""
    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            score_next_tokens(model, *batch).loss.backward()
        model.zero_grad(set_to_none=True)

    profiled = profile_steps(step, 1, device, top=5, trace_path=None)
    found = {"backend": profiled["attention_backend"], "operators": profiled["attention_ops"]}
    if found["backend"] != ["flash"] and device.type == "cuda":
        config = model.config
        _, _, reasons = flash_attention_check(device, torch.bfloat16, batch[0].shape[0], config.n_head,
                                              batch[0].shape[1], config.n_embd // config.n_head)
        found["why_not_flash"] = reasons or "torch gave no reason"
    return found


def compiled_against_eager(model, plan: Plan, inputs: torch.Tensor, targets: torch.Tensor, steps: int = 3) -> dict:
    """Training losses of an eager and a compiled copy of one model through the loop's train_step and
    finish_step, bf16 autocast, AdamW, the same batch each step."""
    from training.accelerator import build_accelerator
    from training.arguments import parse_config
    from training.optimizer import build_optimizer
    from training.step import finish_step, train_step

    config = parse_config(["--mixed_precision=bf16", "--compile=false", "--report_to=none", "--warmup_steps=0",
                           "--learning_rate=1e-3", "--max_steps=100"])
    accelerator = build_accelerator(config)
    losses = {}
    for name, copy_of in (("eager", copy.deepcopy(model)), ("compiled", model)):
        optimizers = build_optimizer(copy_of, config, accelerator.device)
        prepared = optimizers.prepare(copy_of, accelerator)
        if name == "compiled" and plan.compile_backend:
            torch._dynamo.reset()
            prepared = torch.compile(prepared, backend=plan.compile_backend)
        batches = iter(lambda: (inputs, targets), None)
        losses[name] = []
        for _ in range(steps):
            result = train_step(prepared, batches, 1, config, accelerator)
            finish_step(optimizers, result, False, accelerator)
            optimizers.schedule_step()
            losses[name].append(result.loss.item())
    gaps = [gap(a, b) for a, b in zip(losses["compiled"], losses["eager"], strict=True)]
    return {**losses, "max_relative_gap": max(gaps), "backend": plan.compile_backend or "not compiled"}


def fused_loss_memory(model, batch: tuple, device: torch.device) -> dict | None:
    """Peak CUDA memory above the weights of one bf16 training forward and backward: the fused loss, then
    the same model made to build full logits (`return_logits=True`). None on CPU (a test measures it there)."""
    if device.type != "cuda":
        return None
    peaks = {}
    for name, return_logits in (("fused", False), ("full_logits", True)):
        model.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            score_next_tokens(model, *batch, return_logits=return_logits).loss.backward()
        torch.cuda.synchronize()
        peaks[f"{name}_peak_gib"] = (torch.cuda.max_memory_allocated() - base) / 2**30
    model.zero_grad(set_to_none=True)
    return peaks
