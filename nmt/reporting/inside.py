"""`nmt inspect`: one sentence through a trained model, with its attention, gates and cells.

The encoder is re-run gate by gate with its own weights (`lstm_gates`); the decoder
re-decodes the translation through a `GateRecorder`. Pictures (matplotlib, Agg) and the
server's page (`as_json`) show single units, those whose values move most, rather than
means over units (those sit near 0.5 and show nothing).
"""

from __future__ import annotations

import html
import io
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from nmt import decoding
from nmt.kernels.cells import cell_step
from nmt.model import Seq2Seq
from nmt.reporting.figures import embedded, png, pyplot
from nmt.tokenizer import BOS, EOS
from nmt.translate import Translator

UNITS_SHOWN = 6  # units drawn one by one: those whose gates and cell move most


class GateTrace(NamedTuple):
    """One layer and direction over time; each (N, T, H)."""

    input: Tensor
    forget: Tensor
    output: Tensor
    cell: Tensor  # the memory cell c after each step
    hidden: Tensor


def lstm_gates(lstm: nn.LSTM, x: Tensor) -> tuple[Tensor, dict[tuple[int, int], GateTrace]]:
    """A batch-first nn.LSTM in eval mode over x (N, T, I), rows without padding,
    computed step by step with its own weights -> its output (N, T, D * H) and the gates
    of each (layer, direction), direction 1 the reverse one."""
    directions, steps = 2 if lstm.bidirectional else 1, range(x.size(1))
    traces, layer_input = {}, x
    for layer in range(lstm.num_layers):
        outputs = []
        for direction in range(directions):
            weights = lstm.all_weights[layer * directions + direction]
            h = c = x.new_zeros(x.size(0), lstm.hidden_size)
            records = {}
            for t in reversed(steps) if direction else steps:
                h, c, gates = cell_step(layer_input[:, t], h, c, weights)
                records[t] = (gates.input, gates.forget, gates.output, c, h)
            in_order = zip(*(records[t] for t in steps), strict=True)
            traces[(layer, direction)] = GateTrace(*(torch.stack(part, 1) for part in in_order))
            outputs.append(traces[(layer, direction)].hidden)
        layer_input = torch.cat(outputs, dim=-1)
    return layer_input, traces


def unit_values(trace: GateTrace) -> Tensor:
    """A (T, H) trace's input, forget and output gates and its squashed cell tanh(c), the
    four on comparable scales ([0, 1], [-1, 1]) -> (4, T, H)."""
    return torch.stack([trace.input, trace.forget, trace.output, trace.cell.tanh()])


def moving_units(trace: GateTrace, k: int) -> Tensor:
    """The k units of a (T, H) trace that change most over its steps, most first: the
    spread (standard deviation over steps) of `unit_values`, averaged over the four.
    Mean gates sit near 0.5 and say nothing; single units switch on and off."""
    values = unit_values(trace)
    spread = values.std(dim=1, correction=0).mean(0)  # (H,)
    # ties (one step: no spread at all) go to the fullest cells
    spread = spread + 1e-6 * values[3].abs().mean(0)
    return spread.topk(min(k, spread.numel())).indices


def distinctive_units(trace: GateTrace, k: int) -> Tensor:
    """(T, H) trace -> (T, k): at each step, the k units whose values there stand out most
    from their own mean over the steps (absolute deviation, averaged over `unit_values`),
    most first: the units that mark that position, as LSTMVis selects them."""
    values = unit_values(trace)
    deviation = (values - values.mean(dim=1, keepdim=True)).abs().mean(0)  # (T, H)
    return deviation.topk(min(k, deviation.size(-1)), dim=-1).indices


@dataclass
class Inspection:
    sentence: str
    translation: str
    src_pieces: list[str]  # with </s>
    out_pieces: list[str]  # with </s>
    attention: Tensor  # (T, S): row t is what output piece t attended to
    encoder: dict[str, GateTrace]  # "forward" / "backward" of the top layer, each (S, H)
    decoder: GateTrace  # top layer, (T, H)


class GateRecorder:
    """A Seq2Seq's stand-in for decoding that also keeps every gate its decoder computes,
    in `calls`: (layer, gates, c, h) per layer and step. The model is left as it is."""

    def __init__(self, model: Seq2Seq):
        self.model, self.calls = model, []
        self.layers = model.step_layers()._replace(cell=self._cell)

    def _cell(self, layer: int, x: Tensor, state: tuple[Tensor, Tensor]):
        weights = self.model.decoder_weights(layer)
        h, c, gates = cell_step(x, state[0], state[1], weights)
        self.calls.append((layer, gates, c, h))
        return h, c

    def encode(self, src: Tensor, src_len: Tensor):
        return self.model.encode(src, src_len)

    def decode_step(self, token: Tensor, state, memory):
        return self.model.decode_step(token, state, memory, self.layers)


@torch.no_grad()
def inspect_sentence(
    translator: Translator, sentence: str, *, beam: int | None = None
) -> Inspection:
    """The translator's translation of `sentence` (`beam` None: the run's), decoded again
    by the model's own weights with every gate recorded."""
    model = translator.model
    if not isinstance(model, Seq2Seq):
        raise TypeError("inspect needs one model, not an ensemble")
    hyp = translator.translate([sentence], beam=beam)[0][0]
    src_ids = translator.encode([sentence])[0]
    src, src_len = torch.tensor([src_ids], device=translator.device), torch.tensor([len(src_ids)])

    _, traces = lstm_gates(model.encoder, model.src_embed(src))
    top = model.encoder.num_layers - 1

    recorder = GateRecorder(model)
    tgt = torch.tensor([[BOS, *hyp.tokens, EOS]], device=src.device)
    attention = [step.attn[0] for step in decoding.steps(recorder, src, src_len, tgt)]
    calls = recorder.calls[model.cfg.dec_layers - 1 :: model.cfg.dec_layers]  # the top layer's
    steps = [(gates.input, gates.forget, gates.output, c, h) for _, gates, c, h in calls]
    decoder = GateTrace(*(torch.cat(parts) for parts in zip(*steps, strict=True)))

    return Inspection(
        sentence=sentence,
        translation=hyp.text,
        src_pieces=translator.src_tok.id_to_piece(src_ids),
        out_pieces=translator.tgt_tok.id_to_piece([*hyp.tokens, EOS]),
        attention=torch.stack(attention).float().cpu(),
        encoder={
            name: GateTrace(*(t[0].float().cpu() for t in traces[(top, d)]))
            for d, name in enumerate(("forward", "backward"))
        },
        decoder=GateTrace(*(t.float().cpu() for t in decoder)),
    )


def as_json(ins: Inspection, *, units: int = 12, decimals: int = 3) -> dict:
    """The inspection as plain lists for the server's page (nmt/serve/static): the pieces,
    attention (T, S), and per trace ("encoder_forward", "encoder_backward" over the
    source pieces, "decoder" over the target pieces; steps x units each) its gates and
    cells, its `units` most moving units and, per step, its `units` most distinctive."""

    def rounded(x: Tensor) -> list:
        return x.double().round(decimals=decimals).tolist()

    traces = {
        "encoder_forward": (ins.encoder["forward"], "source"),
        "encoder_backward": (ins.encoder["backward"], "source"),
        "decoder": (ins.decoder, "target"),
    }
    return {
        "sentence": ins.sentence,
        "translation": ins.translation,
        "source": ins.src_pieces,
        "target": ins.out_pieces,
        "attention": rounded(ins.attention),
        "traces": {
            name: {
                "pieces": side,
                "units": trace.cell.size(-1),
                **{key: rounded(getattr(trace, key)) for key in ("input", "forget", "output")},
                "cell": rounded(trace.cell),
                "moving": moving_units(trace, units).tolist(),
                "distinctive": distinctive_units(trace, units).tolist(),
            }
            for name, (trace, side) in traces.items()
        },
    }


def figures(ins: Inspection) -> dict[str, object]:
    """The pictures, by name: attention, gates (lines per unit), cells (a heat map)."""
    plt = pyplot()
    src, out = [_label(p) for p in ins.src_pieces], [_label(p) for p in ins.out_pieces]
    fig, ax = plt.subplots(figsize=(max(5, 0.45 * len(src) + 2), max(4, 0.4 * len(out) + 1.5)))
    image = ax.imshow(ins.attention.numpy(), cmap="Blues", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(src)), src, rotation=60, ha="right")
    ax.set_yticks(range(len(out)), out)
    ax.set(xlabel="source pieces", ylabel="output pieces")
    ax.set_title("Attention: which source pieces each output piece looked at")
    fig.colorbar(image, ax=ax, fraction=0.04, label="attention weight")
    panels = [
        ("encoder, forward", ins.encoder["forward"], src),
        ("encoder, backward", ins.encoder["backward"], src),
        ("decoder", ins.decoder, out),
    ]
    return {"attention": fig, "gates": _gates(plt, panels), "cells": _cells(plt, panels)}


QUANTITIES = (("input", "input gate"), ("forget", "forget gate"), ("output", "output gate"))


def _gates(plt, panels: list[tuple[str, GateTrace, list[str]]]):
    """A column per trace, a row per gate and one for the cell: each of the trace's
    UNITS_SHOWN most moving units as a line, its legend above the column."""
    rows = [*QUANTITIES, ("cell", "memory cell c")]
    width = sum(max(3.2, 0.26 * len(labels) + 1.2) for _, _, labels in panels)
    fig, axes = plt.subplots(len(rows), len(panels), figsize=(width, 8.5), squeeze=False)
    colors = plt.get_cmap("tab10").colors
    for col, (title, trace, labels) in enumerate(panels):
        units, steps = moving_units(trace, UNITS_SHOWN).tolist(), range(len(labels))
        for row, (key, name) in enumerate(rows):
            ax = axes[row, col]
            for rank, unit in enumerate(units):
                values = getattr(trace, key)[:, unit].numpy()
                ax.plot(steps, values, marker=".", lw=1.2, color=colors[rank], label=f"unit {unit}")
            if key != "cell":
                ax.set_ylim(-0.05, 1.05)
            ax.grid(alpha=0.3)
            ax.set_xticks(steps, labels if row == len(rows) - 1 else [], rotation=60, ha="right")
            ax.tick_params(labelsize=7)
            if col == 0:
                ax.set_ylabel(name)
        axes[0, col].legend(
            title=f"{title}: the units that move most",
            loc="lower center",
            bbox_to_anchor=(0.5, 1.04),
            ncol=3,
            fontsize=7,
            title_fontsize=8,
            frameon=False,
        )
    fig.suptitle("Gates and memory cells, unit by unit (means over units sit near 0.5)", y=1.0)
    fig.tight_layout()
    return fig


def _cells(plt, panels: list[tuple[str, GateTrace, list[str]]]):
    """Each trace's 2 * UNITS_SHOWN most moving memory cells as a heat map."""
    width = sum(max(3.5, 0.3 * len(labels) + 2.2) for _, _, labels in panels)
    fig, axes = plt.subplots(1, len(panels), figsize=(width, 4.2), squeeze=False)
    for ax, (title, trace, labels) in zip(axes[0], panels, strict=True):
        units = moving_units(trace, 2 * UNITS_SHOWN)
        cells = trace.cell[:, units].T
        limit = max(float(cells.abs().max()), 1e-6)
        image = ax.imshow(cells.numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
        ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(units)), [f"unit {u}" for u in units.tolist()], fontsize=7)
        ax.set_title(f"{title}: the {len(units)} cells that move most", fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.05, pad=0.03, label="c")
    fig.tight_layout()
    return fig


def render(ins: Inspection, kind: str) -> str | bytes:
    """kind "png": all pictures stacked in one PNG; "html": a self-contained page."""
    images = {name: png(fig, dpi=110) for name, fig in figures(ins).items()}
    if kind == "png":
        return _stack_pngs(list(images.values()))
    body = "".join(embedded(image, CAPTIONS[name], alt=name) for name, image in images.items())
    src, out = html.escape(ins.sentence), html.escape(ins.translation)
    return PAGE.format(src=src, out=out, body=body)


CAPTIONS = {
    "attention": "Attention weights: each row sums to one over the real source pieces.",
    "gates": "Input, forget and output gates and memory cells of single units, step by step: "
    "the units whose values change most over the sentence.",
    "cells": "The memory cells that change most over the sentence, step by step.",
}

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>nmt inspect</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}}
img{{max-width:100%;border:1px solid #ddd}}figure{{margin:2em 0}}dt{{font-weight:bold}}</style>
</head><body><h1>Inside the LSTM</h1><dl><dt>source</dt><dd>{src}</dd>
<dt>translation</dt><dd>{out}</dd></dl>{body}</body></html>
"""


def _label(piece: str) -> str:
    return piece.replace("\u2581", "_")


def _stack_pngs(pngs: list[bytes]) -> bytes:
    import matplotlib.image as mpimg

    plt = pyplot()
    images = [mpimg.imread(io.BytesIO(png)) for png in pngs]
    height = sum(img.shape[0] for img in images) / 110
    width = max(img.shape[1] for img in images) / 110
    ratios = {"height_ratios": [img.shape[0] for img in images]}
    fig, axes = plt.subplots(len(images), 1, figsize=(width, height), gridspec_kw=ratios)
    for ax, img in zip(axes, images, strict=True):
        ax.imshow(img)
        ax.axis("off")
    return png(fig, dpi=110)
