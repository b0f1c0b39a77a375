"""How a model runs here: device, precision and kernels, decided once and passed down.

`plan_for` reads the facts (the device, the precision asked for, training or
inference, the model's shape, this CPU's flags and this torch build's operators)
and returns a frozen `Plan`. The model gets the plan's `Kernels`; training,
search and translation read the rest. Nothing else asks which device it is on
(autocast, the gradient scaler and the distributed backend aside).
"""

from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from nmt.config import ModelConfig
from nmt.errors import NmtError
from nmt.options import PRECISIONS

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class PrecisionError(NmtError):
    """A precision asked for where it cannot run well: this device, CPU or torch build."""


class DeviceError(NmtError):
    """A device name that is not one, or a device this machine does not have."""


@dataclass(frozen=True)
class Kernels:
    """Which implementation runs each model stage; the defaults are the references
    that `nmt.model` holds, the others live in `nmt.kernels`."""

    # "torch": nn.LSTM on packed sequences | "packed": one node a layer | "masked": no
    # packing, the lengths on the device (what a captured step needs)
    encoder: str = "torch"
    # "stepwise" | "whole": one LSTM call | "deferred" | "parallel": one call a layer (GNMT's)
    teacher_forcing: str = "stepwise"
    loss: str = "reference"  # "reference": full logits | "fused": output layer and loss in chunks
    loss_chunk: int = 2**21  # fp32 logits per chunk of the fused loss
    dropout: str = "torch"  # "torch" | "uniform16": CPU masks from 16-bit uniforms
    # what kernels that run with autocast off multiply in; None: their inputs' dtype
    dtype: torch.dtype | None = None


REFERENCE = Kernels()


@dataclass(frozen=True)
class Plan:
    """How to run one model here: made by `plan_for`, never edited."""

    device: torch.device
    precision: str  # "fp32" | "bf16" | "fp16" | "int8"
    kernels: Kernels = field(default_factory=Kernels)
    # inference: the decoder step multiplies with the "module"'s weights, or with weights
    # "packed" (fp32) or "int8", prepared once by nmt.runtime.prepared
    decoder_weights: str = "module"
    weight_dtype: torch.dtype | None = None  # inference: weights cast once to this
    src_multiple: int = 1  # decoding batches' source width rounded up to a multiple of this
    shrink_step: int = 1  # finished sentences leave a search in groups of this many
    pinned_copies: bool = False  # batches go to the device from pinned memory, without a wait
    # training batches padded to a few bucket shapes (`nmt.plan.bucket`), so that one
    # step's kernels recur from batch to batch: what CUDA graphs and cuDNN's plans need
    static_shapes: bool = False
    # CUDA graphs: training replays its loss's forward and backward captured per batch
    # shape (`nmt.runtime.captured_loss`); translation its decode step
    graphs: bool = False
    keep_freed_memory: bool = False  # glibc keeps large freed buffers (keep_freed_memory_mapped)

    def autocast(self) -> torch.autocast:
        """The one mixed-precision context: on for bf16 and fp16, a no-op for fp32 and for
        int8 (whose products are its prepared layers' own)."""
        low, dtype = self.precision in ("bf16", "fp16"), DTYPES.get(self.precision)
        # a graph must not capture casts cached by the call that captured it
        cache = not self.graphs
        return torch.autocast(self.device.type, dtype=dtype, enabled=low, cache_enabled=cache)

    def scaler(self) -> torch.amp.GradScaler:
        """fp16's loss scaler; in the other precisions one whose scale stays 1, which only
        skips the updates whose gradients are not finite, on the device (it hands the
        fused optimizer the flag; the step never waits for the device to read it)."""
        if self.precision == "fp16":
            return torch.amp.GradScaler(self.device.type)
        scaler = torch.amp.GradScaler(self.device.type, init_scale=1.0)
        scaler.set_growth_factor(1.0)  # the constructor refuses factors of 1: its setters do not
        scaler.set_backoff_factor(1.0)
        return scaler

    def to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A collated batch on the device, its source lengths on the CPU where packing needs
        them; through pinned memory, since from pageable memory a copy waits for the GPU."""
        if not self.pinned_copies:  # the CPU
            return batch
        host = {"src_len"} if self.kernels.encoder != "masked" else set()
        return {
            k: v if k in host else v.pin_memory().to(self.device, non_blocking=True)
            for k, v in batch.items()
        }

    def device_rng_state(self) -> torch.Tensor | None:
        """The GPU's random generator state (dropout masks there), None on a CPU."""
        return torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None

    def set_device_rng_state(self, state: torch.Tensor | None) -> None:
        if state is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state, self.device)


# bucket steps for rows (matrix kernels' tiles) and for lengths, in static shapes and
# captured search
ROWS_STEP, LENGTH_STEP = 8, 2


def bucket(size: int, step: int) -> int:
    """`size` rounded up to a bucket size: a multiple of `step` up to 16 steps, then
    16 * step * 2^(k/8) rounded up to a multiple of `step` (with step 2: 2, 4, ... 32,
    36, 40, 42, 46, 50, 54, 60, 64, 70, 78, ...): under 10% and one step more. Few
    enough shapes that kernels chosen (or graphs captured) for one batch serve the
    batches after it; fine enough to waste little (docs/benchmarks.md, static shapes)."""
    below = 16 * step
    if size <= below:
        return -(-size // step) * step
    k = 1
    while (size_k := -(-math.ceil(below * 2 ** (k / 8)) // step) * step) < size:
        k += 1
    return size_k


def resolve_device(name: str | torch.device) -> torch.device:
    """auto: the GPU if there is one, else the CPU; cpu, cuda and cuda:N checked here."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise DeviceError(f"unknown device {str(name)!r}: use cpu, cuda or cuda:N")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device.type == "cuda" and (device.index or 0) >= gpus:
        have = f"has {gpus} CUDA GPUs" if gpus else "has no CUDA GPU"
        raise DeviceError(f"device {str(name)!r}: this machine {have}; use cpu")
    return device


def plan_for(
    device: torch.device,
    precision: str,
    *,
    training: bool,
    model: ModelConfig,
    prepared: bool = False,
    static_shapes: str = "auto",
    streaming: bool = False,
    graphs: bool = False,
) -> Plan:
    """The plan for training or for inference; `precision`: one of `PRECISIONS` ("auto":
    `resolve_precision`; int8 decodes only). `prepared`: inference may prepare the
    decoder's weights once, which only a model whose weights no longer change allows
    (int8 always prepares them). `static_shapes`: a `train.static_shapes`; auto: with CUDA
    graphs over streamed training data (`streaming`), where each pool is cut afresh and
    would capture new shapes without end. An in-memory corpus cuts the same batch shapes
    every epoch (its pairs are sorted by length before they are cut), so padding them
    would only add work; without graphs nothing has shown that padding pays on a GPU
    (docs/benchmarks.md, static shapes). `graphs`: capture steps
    as CUDA graphs (`train.cuda_graphs`), one per batch shape; training then encodes
    without packing, which needs no host sync."""
    cpu = device.type == "cpu"
    if graphs and cpu:
        raise DeviceError("CUDA graphs need a CUDA GPU; this plan is for the CPU")
    precision = resolve_precision(precision, device, training=training)
    if cpu and not cpu_runs(precision):
        what, slower, instead = (
            (f"train.precision={precision}", f"trains about 40x slower in {precision}", "auto")
            if training
            else (f"precision {precision}", "translates several times slower", "int8")
        )
        raise PrecisionError(
            f"{what} needs a CPU with AVX-512: this one has no {precision} kernels and "
            f"{slower} than in fp32; use fp32 or {instead}"
        )
    low = precision in ("bf16", "fp16")
    # The deferred input-feeding loop was measured faster on a CPU and on a GPU under
    # AMP; a GPU in fp32 keeps the step-by-step loop, which was faster there (CUDA's
    # lstm_cell fuses the gate arithmetic into one kernel; docs/benchmarks.md).
    luong = model.attention != "bahdanau"
    teacher_forcing = "stepwise"
    if model.decoder == "parallel":  # GNMT's: each layer one call over the whole target
        teacher_forcing = "parallel"
    elif luong and not model.input_feed:  # no feedback: one LSTM call over the target
        teacher_forcing = "whole"
    elif luong and (cpu or low):
        teacher_forcing = "deferred"
    kernels = Kernels(
        # nn.LSTM's backward on packed sequences runs per-step autograd ops on a CPU;
        # without gradients, and with cuDNN, nn.LSTM is as fast or faster
        encoder="masked" if graphs and training else "packed" if cpu and training else "torch",
        teacher_forcing=teacher_forcing,
        loss="fused",
        # cache-sized chunks of fp32 logits on a CPU (8 MB); larger on a GPU: fewer launches
        loss_chunk=2**21 if cpu else 2**26,
        dropout="uniform16" if cpu else "torch",  # a GPU keeps torch's fused kernel
        dtype=DTYPES[precision] if low else None,
    )
    if training:
        static = static_shapes == "always" or (static_shapes == "auto" and streaming and graphs)
        options = {"pinned_copies": not cpu, "keep_freed_memory": cpu, "static_shapes": static}
        return Plan(device, precision, kernels, **options, graphs=graphs)
    if precision == "int8" and not cpu:
        raise PrecisionError("int8 decoding runs on the CPU only")
    if precision == "int8" and not int8_available():
        raise PrecisionError("int8 needs torch's quantized CPU operators, which this build lacks")
    packed = precision == "fp32" and cpu and prepared and packed_fp32_available()
    weights = "int8" if precision == "int8" else "packed" if packed else "module"
    # under inference_mode autocast keeps no cast cache: weights in low precision once;
    # few distinct source widths and row counts: on a CPU oneDNN builds bf16 and fp16
    # kernels for each new shape, so shapes that recur across batches save that
    shapes = {"src_multiple": 16, "shrink_step": 16 if cpu and low else 1}
    weight_dtype = DTYPES[precision] if low else None
    shapes.update(pinned_copies=not cpu, graphs=graphs)
    return Plan(device, precision, kernels, weights, weight_dtype, **shapes)


def resolve_precision(precision: str, device: torch.device, *, training: bool) -> str:
    """A precision for this device (`nmt.options.PRECISIONS`). auto: bf16 on a GPU that has
    it, else fp16 on CUDA; on a CPU bf16 where it has bf16 matrix units (AMX, AVX-512
    BF16), else fp32: for training and translation alike."""
    cpu = device.type == "cpu"
    if precision not in PRECISIONS or (training and precision == "int8"):
        allowed = [p for p in PRECISIONS if not training or p != "int8"]
        raise PrecisionError(f"unknown precision {precision!r}: use one of {', '.join(allowed)}")
    if precision == "fp16" and cpu and training:  # oneDNN has no fp16 LSTM
        raise PrecisionError("train.precision=fp16 needs a GPU; on a CPU use fp32 or auto")
    if precision != "auto":
        return precision
    if not cpu:
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_bf16_units() else "fp32"


def cpu_runs(precision: str) -> bool:
    """Whether oneDNN has kernels for `precision`'s products on this CPU; bf16 and fp16
    need AVX-512 or newer. Without them autocast's products fall back to scalar loops,
    many times slower than fp32 (docs/benchmarks.md, precision)."""
    if precision == "bf16":
        return torch.ops.mkldnn._is_mkldnn_bf16_supported()
    if precision == "fp16":
        return torch.ops.mkldnn._is_mkldnn_fp16_supported()
    return True


def cpu_has_bf16_units(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU multiplies bf16 in hardware (AMX or AVX-512 BF16), from Linux's
    CPU flags; elsewhere False. Where it does, bf16 trains and decodes faster than fp32
    (docs/benchmarks.md, precision)."""
    try:
        lines = cpuinfo.read_text(errors="replace").splitlines()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), [])
    return "amx_bf16" in flags or "avx512_bf16" in flags


def int8_available() -> bool:
    """Whether this torch build can run int8 products on this CPU."""
    engines = set(torch.backends.quantized.supported_engines)
    return hasattr(torch.ops.quantized, "linear_dynamic") and bool(
        engines & {"x86", "fbgemm", "qnnpack"}
    )


def packed_fp32_available() -> bool:
    """Whether this torch build has oneDNN's prepacked fp32 linear."""
    ops = ("_reorder_linear_weight", "_linear_pointwise")
    return torch.backends.mkldnn.is_available() and all(hasattr(torch.ops.mkldnn, o) for o in ops)


def keep_freed_memory_mapped() -> None:
    """Lets glibc keep large freed buffers for reuse instead of returning them to the OS.

    glibc serves large allocations with mmap and unmaps them on free, so a CPU
    training step faulted its large temporaries (logits, gate records) back in page
    by page, thousands of faults a step (docs/benchmarks.md, CPU training). Does
    nothing where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h>
    if hasattr(libc, "mallopt"):
        libc.mallopt(m_mmap_threshold, 1 << 30)  # up to 1 GiB from the heap
        libc.mallopt(m_trim_threshold, 2**31 - 1)  # and keep its top (a C int: the most)
