from __future__ import annotations

import gzip
import json
import random

import datasets
import pytest

from nmt.config import DataConfig
from nmt.corpus import (
    StreamingCorpus,
    clean,
    epoch_batches,
    inference_batches,
    shuffled,
    token_batches,
    tokenize,
)
from nmt.data import DataError, load_split, read_lines, stream_pairs
from nmt.tokenizer import BOS, EOS, Tokenizer, train_spm

PAIRS = [
    ("Ein Hund läuft.", "A dog runs."),
    ("Zwei Katzen\tspielen?", "Two cats play?"),
    ("Ünïcödé – ok", "Unicode — ok"),
    ("", ""),
]


def test_every_source_kind_loads_the_same_pairs(tmp_path):
    src, tgt = [s for s, _ in PAIRS], [t for _, t in PAIRS]
    (tmp_path / "plain.de").write_text("".join(s + "\n" for s in src))
    (tmp_path / "plain.en").write_text("".join(t + "\n" for t in tgt))
    with gzip.open(tmp_path / "gz.de.gz", "wt") as f:
        f.write("".join(s + "\n" for s in src))
    with gzip.open(tmp_path / "gz.en.gz", "wt") as f:
        f.write("".join(t + "\n" for t in tgt))
    (tmp_path / "pairs.jsonl").write_text(
        "".join(json.dumps({"translation": {"de": s, "en": t}}) + "\n" for s, t in PAIRS)
    )
    (tmp_path / "columns.jsonl").write_text(
        "".join(json.dumps({"de": s, "en": t}) + "\n" for s, t in PAIRS)
    )
    tsv_pairs = [(s.replace("\t", " "), t) for s, t in PAIRS]  # a tab cannot live inside TSV
    (tmp_path / "pairs.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in tsv_pairs))
    cfg = DataConfig()

    for split in ("plain", "gz", "pairs.jsonl", "columns.jsonl"):
        ds = load_split(cfg, str(tmp_path / split))
        assert list(zip(ds["src"][:], ds["tgt"][:], strict=True)) == PAIRS, split
    ds = load_split(cfg, str(tmp_path / "pairs.tsv"))
    assert list(zip(ds["src"][:], ds["tgt"][:], strict=True)) == tsv_pairs


def test_hub_datasets_load_in_either_layout_whole_and_streamed(tmp_path, monkeypatch):
    """`data.hub` takes what `datasets.load_dataset` takes, so a local folder of split
    files runs the Hub code path offline: the `translation: {de, en}` layout and the
    one-column-per-language layout, as a Dataset and as a stream."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    layouts = {
        "nested": lambda s, t: {"translation": {"de": s, "en": t}},
        "columns": lambda s, t: {"id": 7, "de": s, "en": t},
    }
    for name, row in layouts.items():
        (tmp_path / name).mkdir()
        for split, pairs in (("train", PAIRS), ("validation", PAIRS[:2])):
            rows = "".join(json.dumps(row(s, t)) + "\n" for s, t in pairs)
            (tmp_path / name / f"{split}.jsonl").write_text(rows)
        cfg = DataConfig(hub=str(tmp_path / name))

        ds = load_split(cfg, "train")
        assert list(zip(ds["src"][:], ds["tgt"][:], strict=True)) == PAIRS, name
        assert ds.column_names == ["src", "tgt"]
        assert list(stream_pairs(cfg, "validation")) == PAIRS[:2], name

    columns = DataConfig(hub=str(tmp_path / "columns"))
    with pytest.raises(DataError, match="split 'train' has no column 'fr'"):
        load_split(DataConfig(hub=columns.hub, src_lang="fr"), "train")
    # datasets' own errors come out as one line naming data.hub and the split
    with pytest.raises(DataError, match=r"data.hub=.*columns split 'val': Unknown split"):
        load_split(columns, "val")  # the Hub's name is "validation"
    with pytest.raises(DataError, match=r"data.hub=.*columns split 'val': .*'validation'"):
        next(stream_pairs(columns, "val"))
    with pytest.raises(DataError, match=r"data.hub=.*missing split 'train'"):
        load_split(DataConfig(hub=str(tmp_path / "missing")), "train")


def test_line_count_mismatch_names_both_files_and_counts(tmp_path):
    (tmp_path / "train.de").write_text("a\nb\nc\n")
    (tmp_path / "train.en").write_text("a\nb\n")

    with pytest.raises(DataError) as err:
        load_split(DataConfig(), str(tmp_path / "train"))

    assert str(err.value).startswith(
        f"{tmp_path}/train.de has 3 lines but {tmp_path}/train.en has 2"
    )


def test_missing_file_and_bad_utf8_are_named(tmp_path):
    (tmp_path / "x.de").write_bytes(b"fine\nbad \xff byte\n")

    with pytest.raises(DataError, match="x.en .* does not exist"):
        load_split(DataConfig(), str(tmp_path / "x"))
    with pytest.raises(DataError, match="x.de line 2: not valid UTF-8"):
        read_lines(tmp_path / "x.de")
    assert read_lines(tmp_path / "x.de", errors="replace")[1] == "bad \ufffd byte"


def test_cleaning_counts_each_reason(toy_corpus):
    cfg = DataConfig(max_len=10, max_ratio=2.0, vocab_size=60)
    tok = Tokenizer(train_spm(["a b c d e f g h"] * 50 + ["x y z"] * 50, vocab_size=30))
    pairs = [
        ("a b", "c d"),
        ("", "x"),
        ("a b c d e f g h a b c d e f g h", "a"),
        ("a", "a b c d e"),
        ("x", "y"),
    ]
    import datasets

    ds = tokenize(
        datasets.Dataset.from_dict({"src": [s for s, _ in pairs], "tgt": [t for _, t in pairs]}),
        tok,
        tok,
        cfg,
    )
    kept, counts = clean(ds, cfg)

    assert counts == {"empty": 1, "too_long": 1, "bad_ratio": 1, "kept": 2}
    assert kept["src"][:] == ["a b", "x"]
    assert kept["tgt_ids"][0][0] == BOS and kept["tgt_ids"][0][-1] == EOS
    assert kept["src_ids"][0][-1] == EOS


def test_batches_keep_the_budget_cover_every_example_and_depend_only_on_seed_and_epoch():
    src = [(i * 7) % 23 + 1 for i in range(500)]
    tgt = [(i * 5) % 19 + 2 for i in range(500)]
    epoch0 = epoch_batches(src, tgt, 100, seed=3, epoch=0)

    assert sorted(i for b in epoch0 for i in b) == list(range(500))
    assert all(len(b) * max(max(src[i], tgt[i]) for i in b) <= 100 for b in epoch0)
    assert epoch0 == epoch_batches(src, tgt, 100, seed=3, epoch=0)
    assert epoch0 != epoch_batches(src, tgt, 100, seed=3, epoch=1)
    assert epoch0 != epoch_batches(src, tgt, 100, seed=4, epoch=0)


def test_inference_batches_cover_every_sentence_once_longest_first():
    lengths = [5, 1, 9, 3, 3, 30, 2]

    batches = inference_batches(lengths, max_tokens=12)

    assert sorted(i for b in batches for i in b) == list(range(7))
    assert [lengths[i] for b in batches for i in b] == sorted(lengths, reverse=True)
    assert all(len(b) * max(lengths[i] for i in b) <= 12 or len(b) == 1 for b in batches)


@pytest.mark.parametrize("seed", range(5))
def test_token_batches_are_the_fewest_consecutive_batches_within_the_budget(seed):
    rng = random.Random(seed)
    sizes = [rng.randint(1, 40) for _ in range(200)]
    order = rng.sample(range(200), 200)

    batches = token_batches(order, sizes, max_tokens=64)

    assert [i for b in batches for i in b] == order  # consecutive, nothing lost or moved
    for b, following in zip(batches, [*batches[1:], None], strict=True):
        assert len(b) == 1 or len(b) * max(sizes[i] for i in b) <= 64
        if following:  # greedy: the next example would have broken the budget
            grown = [*b, following[0]]
            assert len(grown) * max(sizes[i] for i in grown) > 64


def streaming_corpus(corpus_dir, **options) -> tuple[StreamingCorpus, list[tuple]]:
    """A StreamingCorpus over the toy training split, and its kept tokenized pairs."""
    cfg = DataConfig(train=str(corpus_dir / "train"), max_tokens=120, **options)
    pairs = list(stream_pairs(cfg, cfg.train))
    tok = Tokenizer(train_spm([s for p in pairs for s in p], vocab_size=80))
    corpus = StreamingCorpus(lambda: stream_pairs(cfg, cfg.train), (tok, tok), cfg, seed=5)
    src, tgt = tok.encode([s for s, _ in pairs]), tok.encode([t for _, t in pairs])
    kept = [(tuple(s + [EOS]), tuple([BOS] + t + [EOS])) for s, t in zip(src, tgt, strict=True)]
    return corpus, kept


def flatten(batches) -> list[tuple]:
    return [(tuple(s), tuple(t)) for src, tgt in batches for s, t in zip(src, tgt, strict=True)]


def test_a_streamed_epoch_holds_every_pair_once_within_budget_and_resumes_mid_epoch(toy_corpus):
    corpus, kept = streaming_corpus(toy_corpus, shuffle_buffer=50, sort_pool=64)

    epoch0 = list(corpus.batches(0))

    assert sorted(flatten(epoch0)) == sorted(kept)  # the toy pairs all pass cleaning
    assert corpus.counts["kept"] == len(kept)
    assert all(
        len(s) * max(max(len(x), len(y)) for x, y in zip(s, t, strict=True)) <= 120
        for s, t in epoch0
    )
    assert list(corpus.batches(0)) == epoch0  # a pure function of (seed, epoch)
    assert list(corpus.batches(0, start=7)) == epoch0[7:]  # where a resumed run goes on
    assert flatten(corpus.batches(1)) != flatten(epoch0)
    # a shuffle, not the file order: pairs move further than the buffer would allow if not
    assert flatten(epoch0)[:50] != kept[:50]


def test_the_shuffle_buffer_holds_at_most_its_size():
    taken = []

    def source():
        for i in range(1000):
            taken.append(i)
            yield i

    out = shuffled(source(), 10, random.Random(0))
    first = next(out)
    assert len(taken) == 11  # 10 buffered + the one that pushed `first` out
    assert sorted([first, *out]) == list(range(1000))
