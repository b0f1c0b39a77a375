"""Translating text with trained models: raw text in, detokenized text out.

A `Translator` holds a model (or an `Ensemble`), its two tokenizers and a plan, and
always returns one result per input line, in input order (`nmt.decoding`): empty
input gives an empty output, over-long input is translated from its truncated start.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from nmt import checkpoint
from nmt.config import Config
from nmt.corpus import inference_batches, pad_batch
from nmt.decoding import Hypothesis, Sampling, check_options, decode
from nmt.ensemble import Ensemble
from nmt.kernels.graphs import CapturedDecoder, CudaGraphs
from nmt.kernels.prepared import PreparedModel
from nmt.plan import Plan, plan_for, resolve_device
from nmt.scoring import BeamOptions
from nmt.tokenizer import BOS, EOS, PAD, UNK, Tokenizer

__all__ = ["Hypothesis", "Sampling", "Translator"]

log = logging.getLogger(__name__)


class Translator:
    def __init__(
        self, model, tokenizers: tuple[Tokenizer, Tokenizer], cfg: Config, plan: Plan | None = None
    ):
        """`model`: a Seq2Seq or an Ensemble of them, in eval mode, on the plan's device.
        `plan`: an inference plan (`nmt.plan.plan_for(..., training=False)`); by default
        fp32 on the model's device, with the model's own weights: it may still change.
        Where the plan prepares the decoder's weights (`nmt.kernels.prepared`) or replays
        the decoder step as CUDA graphs (`nmt.kernels.graphs`), search runs wrappers of
        the model; the model itself is left as it is."""
        members = model.models if isinstance(model, Ensemble) else [model]
        device = next(members[0].parameters()).device
        self.model, self.cfg, self.src_tok, self.tgt_tok = model, cfg, *tokenizers
        self.plan = plan or plan_for(device, "fp32", training=False, model=cfg.model)
        self.device = self.plan.device
        self.decoder = model  # what search runs
        decoders = members
        if self.plan.decoder_weights != "module":
            decoders = [PreparedModel(m, self.plan.decoder_weights) for m in decoders]
        if self.plan.graphs:  # each member's step its own graphs, in one memory pool
            capture = CudaGraphs()
            decoders = [CapturedDecoder(d, capture) for d in decoders]
        if decoders is not members:
            self.decoder = Ensemble(decoders) if isinstance(model, Ensemble) else decoders[0]

    @classmethod
    def load(
        cls,
        paths: str | Path | list,
        *,
        device: str = "cpu",
        precision: str = "fp32",
        graphs: bool = False,
    ) -> Translator:
        """From checkpoint files or run directories (their best.pt, else last.pt).

        Several paths make an ensemble; they must share their tokenizers. `graphs`: replay
        the decoder step as CUDA graphs (a CUDA device only; `nmt.kernels.graphs`).
        """
        paths = [Path(p) for p in (paths if isinstance(paths, list) else [paths])]
        device = resolve_device(device)  # the models are ours: their weights may be prepared
        loaded = [checkpoint.load(_checkpoint_file(p), device) for p in paths]
        cfg, _, tokenizers, _ = loaded[0]
        for path, (_, _, other, _) in zip(paths[1:], loaded[1:], strict=True):
            if [t.model_bytes for t in other] != [t.model_bytes for t in tokenizers]:
                raise checkpoint.CheckpointError(
                    f"{path} uses other SentencePiece models than {paths[0]}: cannot ensemble"
                )
        options = {"prepared": True, "graphs": graphs}
        plan = plan_for(device, precision, training=False, model=cfg.model, **options)
        models = [model for _, model, _, _ in loaded]
        if plan.weight_dtype:  # the models are ours to cast
            models = [model.to(plan.weight_dtype) for model in models]
        model = models[0] if len(models) == 1 else Ensemble(models)
        return cls(model, tokenizers, cfg, plan)

    def translate(self, lines: list[str], **options) -> list[list[Hypothesis]]:
        """The `nbest` best hypotheses of each line, best first, in input order.

        Options: beam (1: greedy search), nbest, alpha, max_tokens, and
        sampling (a `Sampling`: draw one output per line instead of searching).
        """
        return list(self.translate_stream(lines, chunk_lines=max(len(lines), 1), **options))

    def translate_stream(
        self, lines: Iterable[str], *, chunk_lines: int = 10_000, **options
    ) -> Iterator[list[Hypothesis]]:
        """`translate` over an iterable of any length, holding one chunk in memory."""
        if isinstance(lines, str):  # would translate it character by character
            raise TypeError("translate takes a list of lines, not a str: translate([text])")
        lines, truncated = iter(lines), 0
        while chunk := list(itertools.islice(lines, chunk_lines)):
            results, count = self._translate(chunk, **options)
            truncated += count
            yield from results
        self._warn_truncated(truncated)

    def _translate(self, lines, *, beam=None, nbest=1, alpha=None, max_tokens=None, sampling=None):
        """-> the n-best lists (`translate`'s options), and how many lines were truncated."""
        check_options(beam=beam, nbest=nbest, alpha=alpha, max_tokens=max_tokens)
        nbest = 1 if sampling else nbest  # one draw per line, empty lines included
        options = self._options(beam, nbest, alpha)
        cfg = self.cfg.decode
        cfg = dataclasses.replace(cfg, max_tokens=max_tokens or cfg.max_tokens)
        src_ids, truncated = self._encode(lines)
        found = decode(self.decoder, src_ids, options, plan=self.plan, cfg=cfg, sampling=sampling)
        texts = iter(self.tgt_tok.decode([h.tokens for hyps in found for h in hyps]))
        results = [[dataclasses.replace(h, text=next(texts)) for h in hyps] for hyps in found]
        if self.cfg.decode.replace_unk:
            pairs = zip(lines, results, strict=True)
            results = [[self._replace_unk(line, h) for h in hyps] for line, hyps in pairs]
        return results, truncated

    def _warn_truncated(self, count: int) -> None:
        if count:
            n = self.cfg.data.max_len
            log.warning("%d input lines exceed %d pieces: translated their first %d", count, n, n)

    @torch.inference_mode()
    def score(self, src_lines: list[str], tgt_lines: list[str]) -> list[float]:
        """Forced decoding: the model's total log-probability of each target (pieces + EOS)."""
        if len(src_lines) != len(tgt_lines):
            raise ValueError(f"{len(src_lines)} sources but {len(tgt_lines)} targets")
        src_ids, _ = self._encode(src_lines)
        tgt_ids = [[BOS] + ids + [EOS] for ids in self.tgt_tok.encode(tgt_lines)]
        scores = [0.0] * len(src_lines)
        for batch, src, src_len, tgt in self._forced_batches(src_ids, tgt_ids):
            with self.plan.autocast():
                totals = self._forced_logprob(src, src_len, tgt)
            for i, value in zip(batch, totals.tolist(), strict=True):
                scores[i] = value
        return scores

    def _forced_batches(self, src_ids: list[list[int]], tgt_ids: list[list[int]]) -> Iterator:
        """-> (indices, src (B, S), src_len (B,), tgt (B, T)) per batch on the device, the
        source padded as search pads it (`Plan.src_multiple`: shapes that recur)."""
        for batch in inference_batches([len(ids) for ids in src_ids], self.cfg.decode.max_tokens):
            sources = pad_batch([src_ids[i] for i in batch], multiple=self.plan.src_multiple)
            src, src_len = (t.to(self.device) for t in sources)
            yield batch, src, src_len, pad_batch([tgt_ids[i] for i in batch])[0].to(self.device)

    def _forced_logprob(self, src, src_len, tgt) -> torch.Tensor:
        """tgt (B, T) BOS-first -> (B,) log-probabilities, through the steps search takes."""
        total = torch.zeros(tgt.size(0), device=self.device)
        for t, logp, _ in self._forced_steps(src, src_len, tgt):
            gold = tgt[:, t + 1]
            total += logp.gather(1, gold[:, None]).squeeze(1).masked_fill(gold == PAD, 0.0)
        return total

    def _forced_steps(self, src, src_len, tgt) -> Iterator[tuple]:
        """tgt (B, T) BOS-first -> (t, logp (B, V), attention (B, S) or None) for each
        t < T - 1, each step fed tgt[:, t], as search feeds its choices."""
        memory, state = self.decoder.encode(src, src_len)
        for t in range(tgt.size(1) - 1):
            logp, state, attn = self.decoder.decode_step(tgt[:, t], state, memory)
            yield t, logp, attn

    @torch.inference_mode()
    def attention(self, src_lines: list[str], outputs: list[tuple[int, ...]]) -> list[torch.Tensor]:
        """The attention the model pays while it writes each output (piece ids without BOS
        and EOS, as `Hypothesis.tokens`) for its source line: (T + 1, S + 1) per line, row
        t what output piece t (the last row: EOS) attended to over the source pieces and
        EOS; rows sum to one. Decoded as search decoded it, so the argmax of each row is
        the hypothesis' alignment. Empty for a model without attention weights."""
        if len(src_lines) != len(outputs):
            raise ValueError(f"{len(src_lines)} sources but {len(outputs)} outputs")
        src_ids, _ = self._encode(src_lines)
        tgt_ids = [[BOS, *ids, EOS] for ids in outputs]
        found = [torch.empty(0, 0)] * len(src_lines)
        for batch, src, src_len, tgt in self._forced_batches(src_ids, tgt_ids):
            with self.plan.autocast():  # each step's attention is its own (graphs: a copy)
                steps = self._forced_steps(src, src_len, tgt)
                rows = [None if a is None else a.float() for _, _, a in steps]
            if any(attn is None for attn in rows):
                continue
            weights = torch.stack(rows, 1).cpu()  # (B, T, S)
            for row, i in enumerate(batch):
                found[i] = weights[row, : len(tgt_ids[i]) - 1, : len(src_ids[i])]
        return found

    def encode(self, lines: list[str]) -> list[list[int]]:
        """Source piece ids + EOS, truncated to the model's length limit."""
        ids, truncated = self._encode(lines)
        self._warn_truncated(truncated)
        return ids

    def _encode(self, lines: list[str]) -> tuple[list[list[int]], int]:
        limit = self.cfg.data.max_len
        ids = self.src_tok.encode([line.strip() for line in lines])
        return [x[:limit] + [EOS] for x in ids], sum(len(x) > limit for x in ids)

    def _options(self, beam: int | None, nbest: int, alpha: float | None) -> BeamOptions:
        d = self.cfg.decode
        beam = max(d.beam_size if beam is None else beam, nbest)
        alpha = d.alpha if alpha is None else alpha
        return BeamOptions(beam, alpha, d.beta, d.min_len, d.no_repeat_ngram, nbest)

    def _replace_unk(self, line: str, hyp: Hypothesis) -> Hypothesis:
        """Each <unk> output piece becomes the source piece it attended to most."""
        if UNK not in hyp.tokens or not hyp.alignment:
            return hyp
        source = self.src_tok.pieces(line.strip())
        pieces = self.tgt_tok.id_to_piece(list(hyp.tokens))
        for j, (token, i) in enumerate(zip(hyp.tokens, hyp.alignment, strict=True)):
            if token == UNK and 0 <= i < len(source):
                pieces[j] = source[i]
        text = "".join(pieces).replace("\u2581", " ").strip()
        return Hypothesis(text, hyp.score, hyp.logprob, hyp.tokens, hyp.alignment)


def _checkpoint_file(path: Path) -> Path:
    """A run directory's best.pt, else its last.pt; a file is itself."""
    if not path.is_dir():
        return path
    return next((p for p in (path / "best.pt", path / "last.pt") if p.exists()), path / "best.pt")
