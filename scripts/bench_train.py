"""Training throughput (target tokens/s) and peak memory for a config.

    python scripts/bench_train.py configs/multi30k_de_en.yaml [KEY=VALUE ...]
        [--steps 100] [--warmup 10] [--precisions fp32 bf16]

Each precision runs in its own process (so peak RSS is its own) over the same
batches of the config's training data; the first precision is the baseline the
others are compared with. Steps are real optimizer steps (Adam, clipping,
label smoothing), the batches those of epoch 0 in training order.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import itertools
import json
import resource
import subprocess
import sys
import time

import torch

from nmt.config import Config
from nmt.corpus import collate, training_corpus
from nmt.data import tokenizer_text
from nmt.model import Seq2Seq
from nmt.plan import Kernels, keep_freed_memory_mapped, plan_for, resolve_device
from nmt.runtime.captured_loss import CapturedLoss
from nmt.tokenizer import PAD, build_tokenizers
from nmt.training.optimize import TrainingLoss, build_optimizer, train_step


def measure(cfg: Config, precision: str, steps: int, warmup: int) -> dict:
    torch.manual_seed(cfg.train.seed)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    # the plan `nmt train` makes, so that it refuses what training refuses (bf16 on AVX2)
    shapes = {"static_shapes": cfg.train.static_shapes, "graphs": cfg.train.cuda_graphs}
    shapes["streaming"] = cfg.data.streaming
    plan = plan_for(resolve_device("auto"), precision, training=True, model=cfg.model, **shapes)
    if plan.keep_freed_memory:
        keep_freed_memory_mapped()
    tokenizers = build_tokenizers(cfg.data, *tokenizer_text(cfg.data))
    corpus = training_corpus(cfg.data, tokenizers, seed=0)  # epoch 0 in training order
    batches = list(itertools.islice(corpus.batches(0), warmup + steps))
    model = Seq2Seq(cfg.model, len(tokenizers[0]), len(tokenizers[1]), pad=PAD)
    model = model.to(plan.device).train()
    objective = TrainingLoss(model, plan, cfg.train.label_smoothing)
    if plan.graphs:  # captured per batch shape in the warm-up steps, as in `nmt train`
        objective = CapturedLoss(objective)
    optimizer, scaler = build_optimizer(cfg.train, model), plan.scaler()

    def step(batch) -> dict:  # collated in the step, as `nmt train` does
        parts = [collate(*batch, static_shapes=plan.static_shapes)]
        return train_step(objective, parts, optimizer, scaler, cfg=cfg.train, plan=plan)

    cpu = plan_for(torch.device("cpu"), "fp32", training=True, model=cfg.model)
    # step by step: torch's counter sees no whole-sequence LSTM ("whole", "parallel")
    counted = dataclasses.replace(cpu.kernels, teacher_forcing="stepwise")
    flops_per_token = count_flops(model, collate(*batches[0]), counted)
    capture = {}
    if plan.graphs:  # capture every timed shape first: capturing is a one-off per shape
        start = time.perf_counter()
        shapes = {}
        for batch in batches[warmup:]:
            shape = collate(*batch, static_shapes=plan.static_shapes)
            shapes.setdefault((shape["src"].shape, shape["tgt_in"].shape), batch)
        for batch in shapes.values():
            step(batch)
        torch.cuda.synchronize()
        capture = {"graphs": len(shapes), "capture_s": round(time.perf_counter() - start, 1)}
    tokens = 0
    for i, batch in enumerate(batches):
        if i == warmup:
            if plan.device.type == "cuda":
                torch.cuda.synchronize()
            start, tokens = time.perf_counter(), 0
        stats = step(batch)
        tokens += stats["tokens"]
    float(stats["loss"])  # wait for the device
    seconds = time.perf_counter() - start
    cuda = plan.device.type == "cuda"
    busy = gpu_busy(step, batches[-5:]) if cuda else {}
    tgt_lengths = [len(t) - 1 for _, tgt in corpus.batches(0) for t in tgt]
    shapes = epoch_shapes(corpus)
    return {
        "precision": plan.precision,
        "device": str(plan.device),
        "threads": torch.get_num_threads(),
        "steps": len(batches) - warmup,
        "tok_per_s": round(tokens / seconds),
        "tokens_per_step": round(tokens / (len(batches) - warmup)),
        "tgt_tokens_per_sentence": round(sum(tgt_lengths) / len(tgt_lengths), 2),
        **shapes,
        "mflop_per_token": round(flops_per_token / 1e6, 1),
        "gflop_per_s": round(flops_per_token * tokens / seconds / 1e9, 1),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        **busy,
        **capture,
    }


def epoch_shapes(corpus) -> dict:
    """Epoch 0's batches: how many shapes (rows, source, target) they take padded to their
    longest and padded to static shapes, and the target positions each computes per
    real target token (what static shapes cost in padding)."""
    shapes, positions, real = {False: set(), True: set()}, {False: 0, True: 0}, 0
    for batch in corpus.batches(0):
        real += sum(len(t) - 1 for t in batch[1])
        for static in (False, True):
            b = collate(*batch, static_shapes=static)
            shapes[static].add((*b["src"].shape, b["tgt_in"].size(1)))
            positions[static] += b["tgt_out"].numel()
    return {
        "epoch_shapes": {"loose": len(shapes[False]), "static": len(shapes[True])},
        "positions_per_token": {
            k: round(positions[v] / real, 3) for k, v in (("loose", False), ("static", True))
        },
    }


def gpu_busy(step, batches: list) -> dict:
    """A profile of `step` over a few more batches on the GPU: kernels launched per
    step and the fraction of the wall time the GPU spends in them (low: the host is
    the bound)."""
    from torch.profiler import ProfilerActivity, profile

    try:
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            torch.cuda.synchronize()
            start = time.perf_counter()
            for batch in batches:
                stats = step(batch)
            float(stats["loss"])  # wait for the device
            seconds = time.perf_counter() - start
        kernels = [
            e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA
        ]
        busy = sum(e.self_device_time_total for e in kernels) / 1e6
        return {
            "profiled_ms_per_step": round(seconds / len(batches) * 1e3, 1),
            "kernels_per_step": round(sum(e.count for e in kernels) / len(batches)),
            "gpu_busy": round(busy / seconds, 3),
        }
    except Exception as err:  # a profile that fails must not lose the figures above
        return {"profile_error": f"{type(err).__name__}: {err}"}


def count_flops(model: Seq2Seq, batch: dict, kernels: Kernels) -> float:
    """Matmul FLOPs of one forward + backward pass per target token, counted by torch.

    Counted on a CPU copy of the model with the CPU's kernels: torch's counter does
    not see cuDNN's LSTM, which would leave out the encoder on a GPU.
    """
    from torch.utils.flop_counter import FlopCounterMode

    model = copy.deepcopy(model).cpu()  # a throwaway copy: its gradients are never read
    with FlopCounterMode(display=False) as counter:
        model.loss(*batch.values(), kernels=kernels).backward()
    return counter.get_total_flops() / int((batch["tgt_out"] != PAD).sum())


def run_worker(config, overrides: list[str], precision: str, steps: int, warmup: int) -> dict:
    """`measure` in a fresh process, so that its peak RSS is its own -> its figures."""
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            str(config),
            *overrides,
            "--steps",
            str(steps),
            "--warmup",
            str(warmup),
            "--worker",
            precision,
        ],
        capture_output=True,
        text=True,
    )
    if out.returncode:
        tail = out.stderr.strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"{precision}: failed (exit {out.returncode}): {tail[0]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    cfg = Config.from_yaml(args.config, args.overrides)
    if args.worker:
        print(json.dumps(measure(cfg, args.worker, args.steps, args.warmup)))
        return

    results, failed = [], False
    for precision in args.precisions:
        try:
            results.append(
                run_worker(args.config, args.overrides, precision, args.steps, args.warmup)
            )
        except RuntimeError as err:
            print(err, file=sys.stderr)
            failed = True
    if not results:
        sys.exit(1)
    base = results[0]["tok_per_s"]
    print(f"config: {args.config} {' '.join(args.overrides)}")
    columns = [
        "precision",
        "tok/s",
        "vs " + results[0]["precision"],
        "tok/step",
        "MFLOP/tok",
        "GFLOP/s",
        "peak RSS GiB",
        "peak GPU GiB",
        "kernels/step",
        "GPU busy",
    ]
    print(" | ".join(columns))
    for r in results:
        row = [
            r["precision"],
            r["tok_per_s"],
            f"{r['tok_per_s'] / base:.2f}",
            r["tokens_per_step"],
            r["mflop_per_token"],
            r["gflop_per_s"],
            r["peak_rss_gib"],
            r["peak_gpu_gib"],
            r.get("kernels_per_step", r.get("profile_error")),
            r.get("gpu_busy"),
        ]
        print(" | ".join(str(x) for x in row))
        if "graphs" in r:
            print(f"  {r['precision']}: {r['graphs']} graphs captured in {r['capture_s']} s")
    print(f"device={results[0]['device']} threads={results[0]['threads']} steps={args.steps}")
    shapes, positions = results[0]["epoch_shapes"], results[0]["positions_per_token"]
    print(
        f"epoch 0: {shapes['loose']} batch shapes padded to the longest, {shapes['static']} "
        f"padded to static shapes; target positions per real token {positions['loose']} "
        f"and {positions['static']}"
    )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
