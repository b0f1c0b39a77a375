"""Translating text with trained models: raw text in, detokenized text out.

A `Translator` wraps a model (or an `Ensemble` of them) and its two tokenizers.
Within each chunk it sorts sentences by length into token-budget batches and
restores the input order, and it always returns one result per input line:
empty input gives an empty output, over-long input is translated from its
truncated start.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from nmt import checkpoint
from nmt.config import Config
from nmt.cpu_decode import prepare_decoder
from nmt.data import pad_batch, sorted_batches
from nmt.ensemble import Ensemble
from nmt.model import DTYPES, PrecisionError, autocast, cpu_runs
from nmt.search import BeamOptions, Hypotheses, beam_search, output_limits, sample
from nmt.tokenizer import BOS, EOS, PAD, UNK, Tokenizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hypothesis:
    text: str
    score: float  # the search's ranking score (log-probability / length penalty)
    logprob: float  # total log-probability of the pieces and EOS under the model
    tokens: tuple[int, ...]  # target piece ids, without BOS and EOS
    alignment: tuple[int, ...] = ()  # per target piece, the source piece attended most

    def alignment_pairs(self) -> str:
        """'i-j' pairs: source piece i aligned to target piece j, as fast_align writes them."""
        return " ".join(f"{i}-{j}" for j, i in enumerate(self.alignment) if i >= 0)


EMPTY = Hypothesis("", 0.0, 0.0, ())


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0
    top_k: int = 0  # 0: the whole vocabulary


class Translator:
    def __init__(
        self,
        model,
        tokenizers: tuple[Tokenizer, Tokenizer],
        cfg: Config,
        *,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        frozen: bool = False,
    ):
        """`model`: a Seq2Seq or an Ensemble, in the mode it should decode in;
        `precision`: fp32, bf16 / fp16 autocast while decoding, or int8 (CPU only:
        the decoder step's products in 8-bit integers, `nmt.cpu_decode`);
        `frozen`: the model's weights will not change (`load`'s own models; not
        the model `nmt train` validates while it trains), so on a CPU its fp32
        decoder products may be prepared once (`nmt.cpu_decode`)."""
        self.model, self.cfg, self.device = model, cfg, torch.device(device)
        self.precision = precision
        if self.device.type == "cpu" and not cpu_runs(precision):
            raise PrecisionError(
                f"precision {precision} needs a CPU with AVX-512: this one has no {precision} "
                "kernels and translates several times slower than in fp32; use fp32 or int8"
            )
        prepared = precision == "int8" or (
            precision == "fp32" and frozen and self.device.type == "cpu"
        )
        if prepared:
            for member in model.models if isinstance(model, Ensemble) else [model]:
                prepare_decoder(member, precision)
        elif precision != "fp32":
            # Weights in the low precision once: under inference_mode autocast keeps no
            # cast cache, and would recast every weight at every decoding step.
            model.to(DTYPES[precision])
        # bf16 and fp16 on a CPU (oneDNN) build kernels for each new row count: finished
        # sentences leave the beam search in groups, so that row counts recur
        low_precision_cpu = self.device.type == "cpu" and precision in ("bf16", "fp16")
        self.shrink_step = 16 if low_precision_cpu else 1
        self.src_tok, self.tgt_tok = tokenizers

    @classmethod
    def load(
        cls, paths: str | Path | list, *, device: str = "cpu", precision: str = "fp32"
    ) -> Translator:
        """From checkpoint files or run directories (their best.pt, else last.pt).

        Several paths make an ensemble; they must share their tokenizers.
        """
        paths = [Path(p) for p in (paths if isinstance(paths, list) else [paths])]
        loaded = [checkpoint.load(_checkpoint_file(p), device) for p in paths]
        cfg, _, tokenizers, _ = loaded[0]
        for path, (_, _, other, _) in zip(paths[1:], loaded[1:], strict=True):
            if [t.model_bytes for t in other] != [t.model_bytes for t in tokenizers]:
                raise checkpoint.CheckpointError(
                    f"{path} uses other SentencePiece models than {paths[0]}: cannot ensemble"
                )
        models = [model for _, model, _, _ in loaded]
        model = models[0] if len(models) == 1 else Ensemble(models)
        return cls(model, tokenizers, cfg, device=device, precision=precision, frozen=True)

    def translate(self, lines: list[str], **options) -> list[list[Hypothesis]]:
        """The `nbest` best hypotheses of each line, best first, in input order.

        Options: beam (1: greedy search), nbest, alpha, max_tokens, and
        sampling (a `Sampling`: draw one output per line instead of searching).
        """
        results, truncated = self._translate(lines, **options)
        self._warn_truncated(truncated)
        return results

    def translate_stream(
        self, lines: Iterable[str], *, chunk_lines: int = 10_000, **options
    ) -> Iterator[list[Hypothesis]]:
        """`translate` over an iterable of any length, holding one chunk in memory."""
        lines, truncated = iter(lines), 0
        while chunk := list(itertools.islice(lines, chunk_lines)):
            results, count = self._translate(chunk, **options)
            truncated += count
            yield from results
        self._warn_truncated(truncated)

    def _translate(
        self,
        lines: list[str],
        *,
        beam: int | None = None,
        nbest: int = 1,
        alpha: float | None = None,
        max_tokens: int | None = None,
        sampling: Sampling | None = None,
    ) -> tuple[list[list[Hypothesis]], int]:
        """-> the n-best lists, and how many lines were truncated."""
        nbest = 1 if sampling else nbest  # one draw per line, empty lines included
        options = self._options(beam, nbest, alpha)
        max_tokens = max_tokens or self.cfg.decode.max_tokens
        src_ids, truncated = self._encode(lines)
        results: list[list[Hypothesis]] = [[EMPTY] * nbest for _ in lines]
        with torch.inference_mode(), autocast(self.device, self.precision):
            for batch in sorted_batches([len(ids) for ids in src_ids], max_tokens):
                batch = [i for i in batch if len(src_ids[i]) > 1]  # empty lines stay empty
                if batch:
                    found = self._decode([src_ids[i] for i in batch], options, nbest, sampling)
                    for i, hyps in zip(batch, found, strict=True):
                        results[i] = hyps
        if self.cfg.decode.replace_unk:
            results = [
                [self._replace_unk(line, h) for h in hyps]
                for line, hyps in zip(lines, results, strict=True)
            ]
        return results, truncated

    def _warn_truncated(self, count: int) -> None:
        if count:
            limit = self.cfg.data.max_len
            log.warning(
                "%d input lines exceed %d pieces: translated their first %d", count, limit, limit
            )

    @torch.inference_mode()
    def score(self, src_lines: list[str], tgt_lines: list[str]) -> list[float]:
        """Forced decoding: the model's total log-probability of each target (pieces + EOS)."""
        if len(src_lines) != len(tgt_lines):
            raise ValueError(f"{len(src_lines)} sources but {len(tgt_lines)} targets")
        src_ids, _ = self._encode(src_lines)
        tgt_ids = [[BOS] + ids + [EOS] for ids in self.tgt_tok.encode(tgt_lines)]
        scores = [0.0] * len(src_lines)
        for batch in sorted_batches([len(ids) for ids in src_ids], self.cfg.decode.max_tokens):
            src, src_len = (t.to(self.device) for t in pad_batch([src_ids[i] for i in batch]))
            tgt = pad_batch([tgt_ids[i] for i in batch])[0].to(self.device)
            with autocast(self.device, self.precision):
                totals = self._forced_logprob(src, src_len, tgt)
            for i, value in zip(batch, totals.tolist(), strict=True):
                scores[i] = value
        return scores

    def _forced_logprob(self, src, src_len, tgt) -> torch.Tensor:
        """tgt (B, T) BOS-first -> (B,) log-probabilities, through the steps search takes."""
        memory, state = self.model.encode(src, src_len)
        total = torch.zeros(tgt.size(0), device=self.device)
        for t in range(tgt.size(1) - 1):
            logp, state, _ = self.model.decode_step(tgt[:, t], state, memory)
            gold = tgt[:, t + 1]
            total += logp.gather(1, gold[:, None]).squeeze(1).masked_fill(gold == PAD, 0.0)
        return total

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
        decode = self.cfg.decode
        beam = max(decode.beam_size if beam is None else beam, nbest)
        return BeamOptions(
            beam_size=beam,
            alpha=decode.alpha if alpha is None else alpha,
            beta=decode.beta,
            min_len=decode.min_len,
            no_repeat_ngram=decode.no_repeat_ngram,
            nbest=nbest,
        )

    def _decode(
        self, src_ids: list[list[int]], options: BeamOptions, nbest: int, sampling: Sampling | None
    ) -> list[list[Hypothesis]]:
        # few distinct source widths: each new shape builds new bf16 kernels on CPU
        src, src_len = (t.to(self.device) for t in pad_batch(src_ids, multiple=16))
        decode = self.cfg.decode
        max_len = output_limits(src_len, decode.max_len_a, decode.max_len_b)
        specials = {"bos": BOS, "eos": EOS, "pad": PAD}
        if sampling or options.beam_size == 1:
            temperature = sampling.temperature if sampling else 0.0
            top_k = sampling.top_k if sampling else 0
            found = sample(
                self.model,
                src,
                src_len,
                max_len=max_len,
                temperature=temperature,
                top_k=top_k,
                **specials,
            )
        else:
            found = beam_search(
                self.model,
                src,
                src_len,
                max_len=max_len,
                options=options,
                shrink_step=self.shrink_step,
                **specials,
            )
        return self._hypotheses(found, nbest)

    def _hypotheses(self, found: Hypotheses, nbest: int) -> list[list[Hypothesis]]:
        """The first `nbest` of each sentence, read off the device once per batch."""
        tokens, scores, logprobs, aligns = (
            x[:, :nbest].tolist() for x in (found.tokens, found.scores, found.logprob, found.align)
        )
        found_rows = []  # (sentence, piece ids, score, logprob, alignment)
        for b, k in itertools.product(range(len(tokens)), range(nbest)):
            body = tokens[b][k][1:]  # without BOS
            length = body.index(EOS) if EOS in body else len(body)
            align = tuple(aligns[b][k][1 : length + 1])
            found_rows.append((b, body[:length], scores[b][k], logprobs[b][k], align))
        texts = self.tgt_tok.decode([ids for _, ids, *_ in found_rows])
        out: list[list[Hypothesis]] = [[] for _ in tokens]
        for (b, ids, score, logprob, align), text in zip(found_rows, texts, strict=True):
            out[b].append(Hypothesis(text, score, logprob, tuple(ids), align))
        return out

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
    if path.is_dir():
        return next(
            (p for p in (path / "best.pt", path / "last.pt") if p.exists()), path / "best.pt"
        )
    return path
