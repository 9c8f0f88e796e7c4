"""The pre-flight check's six stages; each takes its `Stage` and returns its record, whose `figures` are rows
of the report. What "as accurate as stock" means is `eval.parity`'s, as in the CPU model tests."""

import copy
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from benchmarks.preflight.plans import MEMORY_GOAL_BYTES, Plan
from benchmarks.preflight.runner import REPO_ROOT, Stage
from eval.parity import (
    AGREEMENT_FACTOR,
    BF16_LOSS_RTOL,
    BF16_RMS_RTOL,
    ERROR_FLOOR,
    FP32_RTOL,
    bf16_as_accurate_as_stock,
    relative_gap,
    relative_rms,
)
from formats.packed_data import score_next_tokens


def the_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def stage_environment(stage: Stage) -> dict:
    import accelerate
    import transformers

    from benchmarks.throughput import cuda_driver, measured_matmul_flops
    from training.measurement import device_peak_flops

    device = the_device()
    cuda = device.type == "cuda"
    record = {
        "device": torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu",
        "driver": cuda_driver() if cuda else None, "cuda": torch.version.cuda, "python": platform.python_version(),
        "torch": torch.__version__, "transformers": transformers.__version__, "accelerate": accelerate.__version__,
        "datasets": package_version("datasets"), "tiktoken": package_version("tiktoken"),
        "bf16_supported": torch.cuda.is_bf16_supported() if cuda else True,
        "compute_capability": ".".join(map(str, torch.cuda.get_device_capability(device))) if cuda else None,
        "memory_gib": torch.cuda.get_device_properties(device).total_memory / 2**30 if cuda else None,
        "sdpa_kernels_that_run": sdpa_kernels_that_run(device),
        "datasheet_bf16_flops": device_peak_flops(device),
    }
    size = stage.plan.matmul_size
    record["measured_bf16_matmul_flops"] = max(measured_matmul_flops(device, torch.bfloat16, size, 10)
                                               for _ in range(3))
    record["figures"] = {
        "device": f"{record['device']}, driver {record['driver']}, CUDA {record['cuda']}",
        "versions": f"torch {record['torch']}, transformers {record['transformers']}, "
                    f"accelerate {record['accelerate']}, datasets {record['datasets']}",
        "bf16 matmul, measured": f"{record['measured_bf16_matmul_flops'] / 1e12:,.0f} TFLOP/s "
                                 f"({size}^2, best of 3 x 10)",
        "SDPA kernels that run (bf16, causal)": ", ".join(k for k, ok in record["sdpa_kernels_that_run"].items()
                                                          if ok is True),
    }
    return record


def package_version(name: str) -> str:
    try:
        return __import__(name).__version__
    except Exception as error:  # the GPU image lacks datasets unless its wheels were carried
        return f"not importable ({type(error).__name__}: {error})"


def sdpa_kernels_that_run(device: torch.device) -> dict:
    """Each SDPA backend forced alone on a small bf16 causal attention: True, or why it did not run."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.randn(2, 4, 128, 64, device=device, dtype=torch.bfloat16)
    found = {}
    for name in ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"):
        try:
            with sdpa_kernel([getattr(SDPBackend, name)]):
                torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
            found[name.lower()] = True
        except Exception as error:
            found[name.lower()] = str(error).splitlines()[0][:200]
    return found


def stage_correctness(stage: Stage) -> dict:
    from configuration import GPT2ScratchConfig
    from formats.packed_data import inputs_and_targets
    from modeling_gpt2_scratch import GPT2ScratchForCausalLM

    plan, device = stage.plan, the_device()
    torch.backends.cuda.matmul.allow_tf32 = False  # the fp32 references are true fp32
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    ours = GPT2ScratchForCausalLM(GPT2ScratchConfig(vocab_size=plan.vocab, n_positions=plan.seq_len, **plan.model))
    ours = ours.to(device)
    stock = ours.to_gpt2()  # the same weights in OpenAI's layout
    ids = torch.randint(0, plan.vocab, (plan.correctness_batch, plan.seq_len + 1), device=device)
    inputs, targets = inputs_and_targets(ids)
    batch = (inputs, targets)  # for score_next_tokens

    eval_fp32 = {name: forward(model, batch, bf16=False) for name, model in (("ours", ours), ("stock", stock))}
    eval_bf16 = {name: forward(model, batch, bf16=True) for name, model in (("ours", ours), ("stock", stock))}
    loss_error = {name: relative_gap(eval_bf16[name][0], eval_fp32[name][0]) for name in eval_fp32}
    logits_error = {name: relative_rms(eval_bf16[name][1], eval_fp32[name][1]) for name in eval_fp32}
    fp32_loss_gap = relative_gap(eval_fp32["ours"][0], eval_fp32["stock"][0])
    fp32_logits_gap = relative_rms(eval_fp32["ours"][1], eval_fp32["stock"][1])
    bf16_loss_gap = abs(eval_bf16["ours"][0] - eval_bf16["stock"][0]) / eval_fp32["stock"][0]
    bf16_logits_gap = relative_rms(eval_bf16["ours"][1], eval_bf16["stock"][1])
    del eval_fp32, eval_bf16

    # Training mode: our fused chunked loss (no logits) and its backward, against stock's full logits.
    models = {"ours": ours, "stock": stock}
    grads = {(name, bf16): train_gradient(model, batch, bf16) for name, model in models.items()
             for bf16 in (False, True)}
    train_loss_error = {name: relative_gap(grads[name, True][0], grads[name, False][0]) for name in ("ours", "stock")}
    grad_error = {name: relative_rms(grads[name, True][1], grads[name, False][1]) for name in ("ours", "stock")}
    fp32_grad_gap = relative_rms(grads["ours", False][1], grads["stock", False][1])
    bf16_grad_gap = relative_rms(grads["ours", True][1], grads["stock", True][1])
    del grads

    # eval.parity's definitions, the CPU model tests' too
    checks = {
        "fp32: ours equals stock (loss, logits, embedding gradient)":
            max(fp32_loss_gap, fp32_logits_gap, fp32_grad_gap) <= FP32_RTOL,
        "bf16: ours' loss as accurate as stock's (eval and training)": all(
            bf16_as_accurate_as_stock(errors["ours"], errors["stock"], BF16_LOSS_RTOL)
            for errors in (loss_error, train_loss_error)),
        "bf16: ours' logits and embedding gradient as accurate as stock's": all(
            bf16_as_accurate_as_stock(errors["ours"], errors["stock"], BF16_RMS_RTOL)
            for errors in (logits_error, grad_error)),
        "bf16: ours and stock no further apart than 2x either's own rounding": all(
            gap <= AGREEMENT_FACTOR * max(errors.values()) + ERROR_FLOOR
            for gap, errors in ((bf16_logits_gap, logits_error), (bf16_grad_gap, grad_error),
                                (bf16_loss_gap, loss_error))),
    }  # fmt: skip
    attention = attention_kernel_used(ours, batch, device)
    checks["SDPA ran flash attention (forward and backward)"] = attention["backend"] == ["flash"]
    stage.keep({"checks": dict(checks), "attention": attention})
    # At the throughput stage's shape: its compile of ours then finds this one in inductor's on-disk cache.
    ids = torch.randint(0, plan.vocab, (plan.micro_batch, plan.seq_len + 1), device=device)
    compiled = compiled_against_eager(copy.deepcopy(ours), plan, *inputs_and_targets(ids))
    checks["compiled and eager training losses agree within 1% (bf16)"] = compiled["max_relative_gap"] <= 1e-2
    memory = fused_loss_memory(ours, batch, device)
    if memory is not None:
        checks["fused loss peaks below full logits"] = memory["fused_peak_gib"] < memory["full_logits_peak_gib"]
    record = {
        "tokens": plan.correctness_batch * plan.seq_len, "passed": all(checks.values()), "checks": checks,
        "fp32_gap": {"loss": fp32_loss_gap, "logits_rms": fp32_logits_gap, "embedding_grad_rms": fp32_grad_gap},
        "bf16_own_error": {"loss": loss_error, "train_loss": train_loss_error, "logits_rms": logits_error,
                           "embedding_grad_rms": grad_error},
        "bf16_gap_ours_stock": {"loss": bf16_loss_gap, "logits_rms": bf16_logits_gap,
                                "embedding_grad_rms": bf16_grad_gap},
        "attention": attention, "compiled_against_eager": compiled, "fused_loss_memory": memory,
    }
    record["ok"] = record["passed"]
    record["figures"] = {
        "correctness checks": f"{sum(checks.values())} of {len(checks)} passed"
                              + "".join(f"; FAILED: {name}" for name, ok in checks.items() if not ok),
        "bf16 logits RMS error, ours / stock / gap": f"{logits_error['ours']:.2e} / {logits_error['stock']:.2e} / "
                                                     f"{bf16_logits_gap:.2e}",
        "attention kernel": ", ".join(attention["backend"]) + (f" ({attention['why_not_flash']})"
                                                               if attention.get("why_not_flash") else ""),
        "compiled vs eager loss, largest relative gap": f"{compiled['max_relative_gap']:.1e} over "
                                                        f"{len(compiled['eager'])} steps ({compiled['backend']})",
    }
    if memory is not None:
        record["figures"]["loss peak memory, fused vs full logits"] = (
            f"{memory['fused_peak_gib']:.2f} vs {memory['full_logits_peak_gib']:.2f} GiB "
            f"({plan.correctness_batch} x {plan.seq_len})")
    return record


def forward(model, batch: tuple, bf16: bool) -> tuple[float, torch.Tensor]:
    """Eval-mode loss and float32 logits."""
    model.eval()
    with torch.no_grad(), torch.autocast(the_device().type, dtype=torch.bfloat16, enabled=bf16):
        out = score_next_tokens(model, *batch, return_logits=True)
    model.train()
    return out.loss.item(), out.logits.float()


def train_gradient(model, batch: tuple, bf16: bool) -> tuple[float, torch.Tensor]:
    """Training-mode loss and the token embedding's gradient (tied to the head, so the loss's backward feeds it)."""
    model.train()
    model.zero_grad(set_to_none=True)
    with torch.autocast(the_device().type, dtype=torch.bfloat16, enabled=bf16):
        loss = score_next_tokens(model, *batch).loss
    loss.backward()
    gradient = model.get_input_embeddings().weight.grad.float().clone()
    model.zero_grad(set_to_none=True)
    return loss.item(), gradient


def attention_kernel_used(model, batch: tuple, device: torch.device) -> dict:
    """The SDPA implementation one bf16 training step dispatched to, from the profiler; why not flash, if not."""
    from benchmarks.throughput import profile_steps

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            score_next_tokens(model, *batch).loss.backward()
        model.zero_grad(set_to_none=True)

    profiled = profile_steps(step, 1, device, top=5, trace_path=None)
    found = {"backend": profiled["attention_backend"], "operators": profiled["attention_ops"]}
    if found["backend"] != ["flash"] and device.type == "cuda":
        found["why_not_flash"] = why_not_flash(model, batch, device)
    return found


def why_not_flash(model, batch: tuple, device: torch.device) -> str:
    """torch's own reasons, from `can_use_flash_attention(debug=True)`, for our attention's shapes."""
    config = model.config
    head_dim = config.n_embd // config.n_head
    q = torch.randn(batch[0].shape[0], config.n_head, batch[0].shape[1], head_dim,
                    device=device, dtype=torch.bfloat16)
    try:
        params = torch.backends.cuda.SDPAParams(q, q, q, None, 0.0, True, False)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            usable = torch.backends.cuda.can_use_flash_attention(params, debug=True)
        reasons = "; ".join(str(w.message).splitlines()[0] for w in caught)
        return reasons or f"can_use_flash_attention: {usable}"
    except Exception as error:  # the SDPAParams signature changes between torch releases
        return f"could not ask torch ({type(error).__name__}: {error})"


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
    gaps = [abs(a - b) / abs(a) for a, b in zip(losses["eager"], losses["compiled"], strict=True)]
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


def stage_throughput(stage: Stage) -> dict:
    plan, peak = stage.plan, stage.measured_peak()
    record = {"shape": f"{plan.micro_batch} x {plan.seq_len}", "results": {}}
    for model in ("ours", "stock"):  # one at a time, each kept before the next compiles
        report = run_throughput(plan, plan.micro_batch, 1, model)
        result, record["setting"] = report["results"][0], report["setting"]
        if "error" in result:  # out of memory: the same tokens per step in two micro-batches
            retry = run_throughput(plan, plan.micro_batch // 2, 2, model)["results"][0]
            result = {**retry, "shape": f"{plan.micro_batch // 2} x {plan.seq_len} x 2",
                      "at_full_micro_batch": result["error"]}
        else:
            result["shape"] = record["shape"]
        record["results"][model] = with_mfu(result, plan, peak)
        stage.keep(with_throughput_figures(record, plan))
    speeds = [record["results"][name].get("tokens_per_second") for name in ("ours", "stock")]
    if all(speeds):
        record["ratio_ours_over_stock"] = speeds[0] / speeds[1]
    memory = run_throughput(plan, plan.memory_micro_batch, 1, "ours", profile=False)["results"][0]
    record["memory_at_small_micro_batch"] = memory
    reserved = memory.get("peak_reserved_gib")
    record["within_40gb_goal"] = reserved * 2**30 <= MEMORY_GOAL_BYTES if reserved is not None else None
    return with_throughput_figures(record, plan)


def with_throughput_figures(record: dict, plan: Plan) -> dict:
    figures = {}
    for name, r in record["results"].items():
        figures[f"{name}: tokens/s, MFU, peak reserved ({r.get('shape')})"] = throughput_line(r)
        syncs = r.get("cuda_syncs_per_step", r.get("host_reads_in_train_step"))
        if syncs is not None:
            figures[f"{name}: host syncs per step"] = str(syncs)
    if "ratio_ours_over_stock" in record:
        figures["ratio ours / stock"] = f"{record['ratio_ours_over_stock']:.2f}"
    if "memory_at_small_micro_batch" in record:
        memory, reserved = record["memory_at_small_micro_batch"], record["memory_at_small_micro_batch"].get(
            "peak_reserved_gib")
        figures[f"ours at {plan.memory_micro_batch} x {plan.seq_len}: peak reserved"] = (
            f"{reserved:.1f} GiB ({reserved * 2**30 / 1e9:.1f} GB; goal 40 GB)" if reserved is not None
            else memory.get("error", "not measured on CPU"))
    return {**record, "figures": figures}


def run_throughput(plan: Plan, micro_batch: int, accumulation: int, model: str, optimizer: str = "adamw",
                   profile: bool = True) -> dict:
    """benchmarks/throughput.py's measurement of one model at this shape, bf16."""
    from benchmarks.throughput import ThroughputSettings, measure

    settings = dict(plan.throughput, seq_len=plan.seq_len, vocab=plan.vocab, micro_batch=micro_batch,
                    accumulation=accumulation, models=(model,), mixed_precision="bf16", optimizer=optimizer,
                    muon_qkv="split")
    if not profile:
        settings["profile_steps"] = 0
    return measure(ThroughputSettings(**settings))


def with_mfu(result: dict, plan: Plan, peak: float | None) -> dict:
    """MFU against stage 1's measured matmul peak (throughput.py's own figure measures a shorter run)."""
    if "tokens_per_second" not in result or not peak:
        return result
    from configuration import GPT2ScratchConfig
    from modeling_gpt2_scratch import GPT2ScratchForCausalLM
    from training.measurement import flops_per_token

    with torch.device("meta"):  # the parameters' shapes are all the count needs
        model = GPT2ScratchForCausalLM(GPT2ScratchConfig(vocab_size=plan.vocab, n_positions=plan.seq_len, **plan.model))
    return {**result, "mfu_vs_stage1_peak": result["tokens_per_second"] * flops_per_token(model, plan.seq_len) / peak}


def throughput_line(result: dict) -> str:
    if "tokens_per_second" not in result:
        return result.get("error", "not measured")
    parts = [f"{result['tokens_per_second']:,.0f} tokens/s"]
    if result.get("mfu_vs_stage1_peak") is not None:
        parts.append(f"MFU {result['mfu_vs_stage1_peak']:.1%} of measured, "
                     f"{result['mfu_vs_datasheet']:.1%} of data sheet" if result.get("mfu_vs_datasheet")
                     else f"MFU {result['mfu_vs_stage1_peak']:.1%} of measured")
    if result.get("peak_reserved_gib") is not None:
        parts.append(f"{result['peak_reserved_gib']:.1f} GiB reserved")
    return ", ".join(parts)


def stage_muon(stage: Stage) -> dict:
    plan = stage.plan
    earlier = (stage.earlier("throughput") or {}).get("results", {}).get("ours", {})
    shape = (plan.micro_batch, 1)
    if earlier.get("at_full_micro_batch"):  # ours ran out of memory at the full micro-batch in stage 3
        shape = (plan.micro_batch // 2, 2)
    if "tokens_per_second" in earlier:
        adamw, source = earlier, "stage 3 (throughput)"
    else:
        adamw, source = run_throughput(plan, *shape, "ours", profile=False)["results"][0], "measured here"
    stage.keep({"adamw": adamw, "adamw_from": source})
    muon = run_throughput(plan, *shape, "ours", optimizer="muon", profile=False)["results"][0]
    record = {"shape": f"{shape[0]} x {plan.seq_len} x {shape[1]}", "adamw": adamw, "adamw_from": source,
              "muon": muon}
    if "tokens_per_second" in adamw and "tokens_per_second" in muon:
        record["muon_over_adamw_tokens_per_second"] = muon["tokens_per_second"] / adamw["tokens_per_second"]
    record["figures"] = {
        f"Muon (split QKV): tokens/s ({record['shape']})": throughput_line(muon),
        "Muon / AdamW tokens/s": f"{record['muon_over_adamw_tokens_per_second']:.3f}"
        if "muon_over_adamw_tokens_per_second" in record else "not measured",
    }
    return record


def stage_hellaswag(stage: Stage) -> dict:
    from benchmarks.throughput import synchronize
    from configuration import GPT2ScratchConfig
    from eval import hellaswag
    from modeling_gpt2_scratch import GPT2ScratchForCausalLM
    from preparation.tokenizer import tokenizer_from_source

    plan, data, device = stage.plan, stage.data, the_device()
    tokenizer = tokenizer_from_source(str(data / "gpt2.tiktoken"))
    examples = hellaswag.load_examples(str(data / "cloze_shakespeare_val.jsonl"), limit=plan.hellaswag_examples)
    torch.manual_seed(0)
    config = GPT2ScratchConfig(vocab_size=len(tokenizer), n_positions=1024, **plan.model)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32  # what `python -m eval.hellaswag` loads
    model = GPT2ScratchForCausalLM(config).to(device=device, dtype=dtype)
    record = {"examples": len(examples), "dtype": str(dtype).removeprefix("torch."), "by_batch_size": {}}
    for batch_size in plan.hellaswag_batch_sizes:
        hellaswag.evaluate_model(model, tokenizer, examples[:batch_size], batch_size=batch_size)  # warm-up
        synchronize(device)
        start = time.perf_counter()
        scores = hellaswag.evaluate_model(model, tokenizer, examples, batch_size=batch_size)
        synchronize(device)
        seconds = time.perf_counter() - start
        rate = len(examples) / seconds
        record["by_batch_size"][batch_size] = {
            "seconds": seconds, "examples_per_second": rate, **scores,
            "extrapolated_seconds_for_validation": hellaswag.VALIDATION_EXAMPLES / rate,
        }
        stage.keep(record)
    record["figures"] = {
        f"HellaSwag, batch {size}: examples/s (-> {hellaswag.VALIDATION_EXAMPLES:,} examples)":
            f"{r['examples_per_second']:,.0f} (-> {r['extrapolated_seconds_for_validation']:.0f} s)"
        for size, r in record["by_batch_size"].items()
    }
    return record


def stage_recipe(stage: Stage) -> dict:
    from formats.run_log import LOG_FILE, read_log
    from training.checkpoints import checkpoint_dir
    from training.final_model import final_model_dir

    plan, data = stage.plan, stage.data
    work = Path(tempfile.mkdtemp(prefix="gpu_check_recipe_"))
    data_dir, run_dir = work / "data", work / "run"
    cloze = data / "cloze_shakespeare_val.jsonl"
    if plan.hellaswag_examples:  # the loop scores a whole file: a shorter one
        lines = cloze.read_text().splitlines(keepends=True)[: plan.hellaswag_examples]
        cloze = work / cloze.name
        cloze.write_text("".join(lines))
    cores = str(min(8, os.cpu_count() or 1))
    prepare = [sys.executable, "prepare_data.py", "--dataset", "text", "--data_files", f"{data}/shakespeare/*.txt",
               "--text_unit", "paragraph", "--tokenizer", str(data / "gpt2.tiktoken"), "--num_proc", cores,
               "--output_dir", str(data_dir), *plan.recipe_prepare_flags]
    started = time.perf_counter()
    subprocess.run(prepare, cwd=REPO_ROOT, check=True)
    prepared = time.perf_counter()
    stage.keep({"prepare_seconds": prepared - started})
    steps, half = plan.recipe_steps, plan.recipe_steps // 2
    recipe = [sys.executable, "run_pretrain.py", "configs/gpt2_124m_fineweb_edu.yaml", "--data_dir", str(data_dir),
              "--report_to", "none", *plan.recipe_flags]
    # The recipe's own micro-batch, whose compiled graph the throughput stage left in inductor's cache.
    train = [*recipe, "--output_dir", str(run_dir), "--max_steps", str(steps), "--warmup_steps", str(half),
             "--log_every", str(max(1, steps // 4)), "--eval_every", str(half), "--sample_every", str(half),
             "--save_every", str(half), "--hellaswag_every", str(steps), "--hellaswag_file", str(cloze),
             *plan.recipe_evaluation_flags]
    exit_code = subprocess.run(train, cwd=REPO_ROOT).returncode
    finished = time.perf_counter()
    # What --micro_batch_size auto finds on this device: the search and one eager step, nothing saved.
    search = [*recipe, "--output_dir", str(work / "auto"), "--micro_batch_size", "auto", "--max_steps", "1",
              "--warmup_steps", "0", "--compile", "false", "--eval_every", "-1", "--sample_every", "-1",
              "--save_every", "-1", "--hellaswag_every", "-1", "--log_every", "-1"]
    auto_exit = subprocess.run(search, cwd=REPO_ROOT).returncode
    auto_log = read_log(work / "auto" / LOG_FILE) if (work / "auto" / LOG_FILE).exists() else {}
    log = read_log(run_dir / LOG_FILE) if (run_dir / LOG_FILE).exists() else {}
    windows = log.get("train", [])[1:]  # the first window holds the compilation
    expected = [checkpoint_dir(run_dir, half), checkpoint_dir(run_dir, steps)] + [
        final_model_dir(run_dir) / name for name in ("config.json", "model.safetensors")]
    missing = [str(path.relative_to(run_dir)) for path in expected if not path.exists()]
    record = {
        "exit_code": exit_code, "prepare_seconds": prepared - started, "train_seconds": finished - prepared,
        "steps": steps, "missing_outputs": missing,
        "logged": {kind: len(records) for kind, records in log.items()},
        "tokens_per_second": median_of(windows, "tokens_per_second"), "mfu_vs_datasheet": median_of(windows, "mfu"),
        "val_loss": [r["val_loss"] for r in log.get("eval", [])],
        "hellaswag": log.get("hellaswag", [{}])[-1].get("acc_norm"),
        "samples": (log.get("samples") or [{}])[-1].get("samples"),
        "setup": (log.get("setup") or [{}])[0],  # what --mixed_precision auto chose for the recipe
        "auto_exit_code": auto_exit, "auto_setup": (auto_log.get("setup") or [{}])[0],  # and the micro-batch search
    }
    peak = stage.measured_peak()
    if record["mfu_vs_datasheet"] and peak:
        from training.measurement import device_peak_flops

        record["mfu_vs_stage1_peak"] = record["mfu_vs_datasheet"] * device_peak_flops(the_device()) / peak
    record["ok"] = exit_code == 0 == auto_exit and not record["missing_outputs"] and all(
        record["logged"].get(kind) for kind in ("train", "eval", "hellaswag", "samples"))
    mfu = f", MFU {record['mfu_vs_stage1_peak']:.1%} of measured" if record.get("mfu_vs_stage1_peak") else ""
    tokens = f"{record['tokens_per_second']:,.0f} tokens/s" if record["tokens_per_second"] else "no throughput logged"
    record["figures"] = {
        f"recipe: loop tokens/s after the first log window ({steps} steps)": tokens + mfu,
        "recipe: whole path (prepare, train, eval, HellaSwag, samples, checkpoints, final GPT-2)":
            "works" if record["ok"] else f"FAILED (exit {exit_code}, missing {record['missing_outputs']})",
        "recipe: prepare / train wall time": f"{record['prepare_seconds']:.0f} s / {record['train_seconds']:.0f} s",
        "recipe: --mixed_precision auto chose": setup_line(record["setup"]),
        "recipe: --micro_batch_size auto chose": "{micro_batch_size} x accumulation {accumulation}".format(
            **record["auto_setup"]) if record["auto_setup"] else f"not logged (exit {auto_exit})",
    }
    return record


def setup_line(setup: dict) -> str:
    if not setup:
        return "not logged"
    return (f"{setup['precision']}, attention {setup['attention']}, estimated peak "
            f"{setup['estimated_peak_bytes'] / 2**30:.1f} GiB of {setup['device_bytes'] / 2**30:.1f} GiB")


def median_of(records: list[dict], key: str) -> float | None:
    values = [r[key] for r in records if r.get(key) is not None]
    return statistics.median(values) if values else None


STAGE_FUNCTIONS = {"environment": stage_environment, "correctness": stage_correctness, "throughput": stage_throughput,
                   "muon": stage_muon, "hellaswag": stage_hellaswag, "recipe": stage_recipe}
