"""`nmt inspect`: one sentence through a trained model, with its attention, gates and cells.

The encoder is re-run gate by gate (`nmt.gates.lstm_gates`, the same weights); the decoder
re-decodes the translation through a `GateRecorder`. Pictures: matplotlib (Agg).
"""

from __future__ import annotations

import html
import io
from dataclasses import dataclass

import torch
from torch import Tensor

from nmt.figures import embedded, png, pyplot
from nmt.gates import GateTrace, cell_step, lstm_gates
from nmt.model import Seq2Seq
from nmt.tokenizer import BOS, EOS
from nmt.translate import Translator

UNITS_SHOWN = 8  # the most active memory-cell units drawn one by one


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
def inspect_sentence(translator: Translator, sentence: str, *, beam: int = 5) -> Inspection:
    """The translator's translation of `sentence`, decoded again by the model's own
    weights with every gate recorded."""
    model = translator.model
    if not isinstance(model, Seq2Seq):
        raise TypeError("inspect needs one model, not an ensemble")
    hyp = translator.translate([sentence], beam=beam)[0][0]
    src_ids = translator.encode([sentence])[0]
    src, src_len = torch.tensor([src_ids], device=translator.device), torch.tensor([len(src_ids)])

    _, traces = lstm_gates(model.encoder, model.src_embed(src))
    top = model.encoder.num_layers - 1

    recorder, attention = GateRecorder(model), []
    memory, state = recorder.encode(src, src_len)
    for token in torch.tensor([BOS, *hyp.tokens], device=src.device)[:, None]:
        _, state, attn = recorder.decode_step(token, state, memory)
        attention.append(attn[0])
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


def figures(ins: Inspection) -> dict[str, object]:
    """The pictures, by name: attention, encoder gates, decoder gates, cell units."""
    plt = pyplot()
    src, out = [_label(p) for p in ins.src_pieces], [_label(p) for p in ins.out_pieces]
    figs = {}

    fig, ax = plt.subplots(figsize=(max(5, 0.45 * len(src) + 2), max(4, 0.4 * len(out) + 1.5)))
    image = ax.imshow(ins.attention.numpy(), cmap="Blues", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(src)), src, rotation=60, ha="right")
    ax.set_yticks(range(len(out)), out)
    ax.set(xlabel="source pieces", ylabel="output pieces")
    ax.set_title("Attention: which source pieces each output piece looked at")
    fig.colorbar(image, ax=ax, fraction=0.04)
    figs["attention"] = fig

    panels = [
        ("encoder, forward", ins.encoder["forward"], src),
        ("encoder, backward", ins.encoder["backward"], src),
        ("decoder", ins.decoder, out),
    ]
    width = max(7, 0.45 * max(len(src), len(out)) + 2)
    fig, axes = plt.subplots(len(panels), 1, figsize=(width, 9))
    for ax, (title, trace, labels) in zip(axes, panels, strict=True):
        steps = range(len(labels))
        for gate, color in (("input", "tab:green"), ("forget", "tab:red"), ("output", "tab:blue")):
            mean = getattr(trace, gate).mean(-1).numpy()
            ax.plot(steps, mean, marker="o", color=color, label=f"{gate} gate (mean over units)")
        ax.set(ylim=(0, 1.2), ylabel="gate value")  # headroom for the legend
        norm = ax.twinx()
        cell = trace.cell.norm(dim=-1).numpy()
        norm.plot(steps, cell, color="black", linestyle="--", label="memory cell norm |c|")
        norm.set_ylabel("|c|")
        ax.set_xticks(steps, labels, rotation=45, ha="right")
        ax.set_title(title)
        lines = ax.get_legend_handles_labels()
        extra = norm.get_legend_handles_labels()
        ax.legend(lines[0] + extra[0], lines[1] + extra[1], fontsize=7, loc="upper center", ncol=4)
    fig.suptitle("LSTM gates and memory cells at each step")
    fig.tight_layout()
    figs["gates"] = fig

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, (title, trace, labels) in zip(axes, [panels[0], panels[2]], strict=True):
        units = trace.cell.abs().mean(0).topk(min(UNITS_SHOWN, trace.cell.size(-1))).indices
        cells = trace.cell[:, units].T
        limit = float(cells.abs().max())
        image = ax.imshow(cells.numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
        ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right")
        ax.set_yticks(range(len(units)), [f"unit {u}" for u in units.tolist()])
        ax.set_title(f"{title}: the {len(units)} most active memory cells")
        fig.colorbar(image, ax=ax, fraction=0.04)
    fig.tight_layout()
    figs["cells"] = fig
    return figs


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
    "gates": "Mean input, forget and output gate per step, and the norm of the memory cell.",
    "cells": "The memory cells with the largest mean magnitude, step by step.",
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
