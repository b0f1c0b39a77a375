"""SentencePiece subwords with fixed special ids: PAD=0, UNK=1, BOS=2, EOS=3.

A `Tokenizer` is built from the serialized model bytes, so a checkpoint can
carry its tokenizers and be used anywhere without extra files.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable

import sentencepiece as spm

from nmt.config import DataConfig
from nmt.errors import NmtError

PAD, UNK, BOS, EOS = 0, 1, 2, 3


class TokenizerError(NmtError):
    """Training text SentencePiece cannot learn the asked-for vocabulary from."""


class Tokenizer:
    def __init__(self, model_bytes: bytes):
        self.model_bytes = model_bytes
        self._sp = spm.SentencePieceProcessor(model_proto=model_bytes)
        specials = (self._sp.pad_id(), self._sp.unk_id(), self._sp.bos_id(), self._sp.eos_id())
        if specials != (PAD, UNK, BOS, EOS):
            raise ValueError(f"SentencePiece model has special ids {specials}, expected 0, 1, 2, 3")

    @classmethod
    def from_file(cls, path: str) -> Tokenizer:
        with open(path, "rb") as f:
            return cls(f.read())

    def __len__(self) -> int:
        return self._sp.get_piece_size()

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Piece ids without BOS/EOS, one list per text."""
        return self._sp.encode(texts)

    def pieces(self, text: str) -> list[str]:
        return self._sp.encode(text, out_type=str)

    def piece_starts(self, text: str) -> list[tuple[int, bool]]:
        """Where each of `text`'s pieces starts in `text` itself (a character offset:
        normalization may make a piece's surface differ from the text), and whether it
        starts a word."""
        found = self._sp.encode_as_offset_mapping(text)
        return [
            (begin, piece.startswith("\u2581"))
            for piece, (begin, _) in zip(found["pieces"], found["offsets"], strict=True)
        ]

    def decode(self, ids: list[list[int]]) -> list[str]:
        """Detokenized text; ids stop at the first EOS and specials are dropped."""
        rows = [list(row) for row in ids]
        rows = [row[: row.index(EOS)] if EOS in row else row for row in rows]
        return self._sp.decode([[i for i in row if i > EOS] for row in rows])

    def id_to_piece(self, ids: list[int]) -> list[str]:
        return [self._sp.id_to_piece(i) for i in ids]


def build_tokenizers(cfg: DataConfig, src: list[str], tgt: list[str]) -> tuple[Tokenizer, ...]:
    """SentencePiece as `cfg` says, on the training text: one joint model, or one per side."""
    options = {"vocab_size": cfg.vocab_size, "model_type": cfg.spm_model}
    options["character_coverage"] = cfg.character_coverage
    if cfg.joint_vocab:
        joint = Tokenizer(train_spm(src + tgt, **options))
        return joint, joint
    return Tokenizer(train_spm(src, **options)), Tokenizer(train_spm(tgt, **options))


def train_spm(
    sentences: Iterable[str],
    *,
    vocab_size: int,
    model_type: str = "unigram",
    character_coverage: float = 1.0,
    seed_sentences: int = 2_000_000,
) -> bytes:
    """Trains a SentencePiece model in memory and returns its serialized bytes.

    `vocab_size` is an upper bound: a corpus too small for it gets the largest
    vocabulary SentencePiece can build, rather than an error.
    """
    sentences = [s for s in sentences if s.strip()]
    model = io.BytesIO()
    options = dict(sentence_iterator=iter(sentences), model_writer=model, vocab_size=vocab_size)
    options.update(model_type=model_type, character_coverage=character_coverage)
    options.update(input_sentence_size=seed_sentences, shuffle_input_sentence=True, minloglevel=2)
    options.update(pad_id=PAD, unk_id=UNK, bos_id=BOS, eos_id=EOS)
    options.update(num_threads=1)  # deterministic: the same corpus gives the same model
    if not sentences:
        raise TokenizerError("no text to learn subwords from: the training split is empty")
    try:
        spm.SentencePieceTrainer.train(**options)
    except RuntimeError as err:  # "Vocabulary size too high (N). Please set it to a value <= M."
        too_small = re.search(r"smaller than required_chars\. (\d+) vs (\d+)", str(err))
        if too_small:
            raise TokenizerError(
                f"data.vocab_size={vocab_size} is below the {too_small[2]} characters SentencePiece"
                " must keep: raise it, or lower data.character_coverage"
            ) from None
        limit = str(err).rsplit("<=", 1)
        if len(limit) != 2:
            raise
        model, most = io.BytesIO(), int(limit[1].strip(" ."))
        options.update(sentence_iterator=iter(sentences), model_writer=model, vocab_size=most)
        spm.SentencePieceTrainer.train(**options)
    return model.getvalue()
