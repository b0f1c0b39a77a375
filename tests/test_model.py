from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nmt.config import ConfigError, ModelConfig, TrainConfig
from nmt.corpus import collate
from nmt.kernels.dropout import uniform16_dropout
from nmt.model import Seq2Seq
from nmt.plan import REFERENCE, Kernels
from nmt.search import greedy
from nmt.tokenizer import BOS, EOS, PAD
from nmt.training.optimize import build_optimizer
from tests.conftest import cpu_plan, gradients, train_one_step

# GNMT's decoder (model.decoder=parallel): each score kind, 2 and 3 layers
PARALLEL = [
    dict(decoder="parallel", input_feed=False, dec_layers=2),
    dict(decoder="parallel", input_feed=False, dec_layers=3, attention="bahdanau", bridge="zero"),
    dict(decoder="parallel", input_feed=False, dec_layers=2, attention="dot", enc_hidden=12),
]
VARIANTS = [
    dict(attention="general", input_feed=True),
    dict(attention="general", input_feed=False),
    dict(attention="dot", input_feed=False, enc_hidden=16, dec_hidden=32),
    dict(attention="bahdanau", input_feed=False),
    dict(attention="bahdanau", input_feed=True, dec_layers=2, enc_layers=2, bridge="zero"),
    dict(attention="general", bridge="copy", enc_hidden=16, dec_hidden=32, share_embeddings=True),
    *PARALLEL,
]


def small_model(vocab: int = 20, **options) -> Seq2Seq:
    torch.manual_seed(0)
    cfg = {"emb_dim": 16, "enc_hidden": 16, "dec_hidden": 24, "dropout": 0.0, **options}
    return Seq2Seq(ModelConfig(**cfg), vocab, vocab, pad=PAD).eval()


def random_batch(n: int = 5, vocab: int = 20, seed: int = 0) -> tuple[list, list]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 9, (2, n), generator=g).tolist()
    src = [torch.randint(4, vocab, (s,), generator=g).tolist() + [EOS] for s in lengths[0]]
    tgt = [[BOS] + torch.randint(4, vocab, (t,), generator=g).tolist() + [EOS] for t in lengths[1]]
    return src, tgt


def sentence_losses(model, src_ids, tgt_ids) -> torch.Tensor:
    batch = collate(src_ids, tgt_ids)
    logits = model(batch["src"], batch["src_len"], batch["tgt_in"])
    losses = F.cross_entropy(
        logits.transpose(1, 2), batch["tgt_out"], ignore_index=PAD, reduction="none"
    )
    return losses.sum(1)


@pytest.mark.parametrize("options", VARIANTS)
def test_padding_never_changes_a_sentence_loss(options):
    model = small_model(**options)
    src, tgt = random_batch()

    batched = sentence_losses(model, src, tgt)
    alone = torch.cat([sentence_losses(model, [s], [t]) for s, t in zip(src, tgt, strict=True)])

    torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("options", VARIANTS)
def test_teacher_forcing_equals_step_by_step_decoding(options):
    model = small_model(**options)
    src, tgt = random_batch()
    batch = collate(src, tgt)
    # the stepwise reference, and the loop the training plan chooses (whole, deferred, parallel)
    chosen = Kernels(teacher_forcing=cpu_plan(model.cfg).kernels.teacher_forcing)

    memory, state = model.encode(batch["src"], batch["src_len"])
    steps = []
    for t in range(batch["tgt_in"].size(1)):
        logp, state, _ = model.decode_step(batch["tgt_in"][:, t], state, memory)
        steps.append(logp)

    for kernels in (REFERENCE, chosen):
        logits = model(batch["src"], batch["src_len"], batch["tgt_in"], kernels)
        logp_forward = logits.log_softmax(-1)
        torch.testing.assert_close(torch.stack(steps, 1), logp_forward, rtol=1e-4, atol=1e-5)


def parallel_loss_and_gradients(model, batch, kernels: Kernels):
    logits = model(batch["src"], batch["src_len"], batch["tgt_in"], kernels)
    loss = model.loss(*(batch[k] for k in ("src", "src_len", "tgt_in", "tgt_out")), kernels=kernels)
    # a loss that weighs every position and vocabulary entry differently, and the real one
    weights = torch.linspace(-1, 1, logits.numel(), dtype=logits.dtype).view_as(logits)
    ((logits * weights).sum() + loss).backward()
    return logits.detach(), loss.detach(), gradients(model)


@pytest.mark.parametrize("options", PARALLEL)
def test_the_parallel_decoder_over_the_whole_target_equals_its_steps_and_every_gradient(options):
    torch.manual_seed(0)
    cfg = ModelConfig(
        **{"emb_dim": 10, "enc_hidden": 12, "dec_hidden": 24, "dropout": 0.0, **options}
    )
    model = Seq2Seq(cfg, 23, 23, pad=PAD).double().train()
    batch = collate(*random_batch(n=6, vocab=23, seed=3))  # lengths 1 to 9, padded
    assert cpu_plan(cfg).kernels.teacher_forcing == "parallel"  # what training runs

    fast = parallel_loss_and_gradients(model, batch, Kernels(teacher_forcing="parallel"))
    reference = parallel_loss_and_gradients(model, batch, REFERENCE)

    torch.testing.assert_close(fast[0], reference[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fast[1], reference[1], rtol=1e-12, atol=1e-12)
    assert fast[2].keys() == reference[2].keys()
    assert any(name.startswith("decoder_upper.") for name in reference[2])
    for name, grad in reference[2].items():
        assert grad.abs().sum() > 0, name  # every parameter takes part
        torch.testing.assert_close(fast[2][name], grad, rtol=1e-9, atol=1e-12, msg=name)


@pytest.mark.parametrize(
    "options, named",
    [
        (dict(decoder="parallel", dec_layers=2), "model.input_feed"),  # input_feed: the default
        (dict(decoder="parallel", input_feed=False), "model.dec_layers"),  # dec_layers: 1
        (dict(decoder="gnmt"), "model.decoder"),
    ],
)
def test_the_parallel_decoder_needs_no_input_feeding_and_two_layers(options, named):
    with pytest.raises(ConfigError, match=named):
        ModelConfig(**options)


@pytest.mark.parametrize("options", VARIANTS)
def test_greedy_output_is_the_same_alone_or_in_a_batch(options):
    model = small_model(**options)
    src, _ = random_batch(n=6, seed=3)
    batch = collate(src, [[BOS, EOS]] * len(src))
    max_len = torch.full((len(src),), 10)

    together = greedy(
        model, batch["src"], batch["src_len"], max_len=max_len, bos=BOS, eos=EOS, pad=PAD
    ).tokens[:, 0]
    for row, ids in enumerate(src):
        one = collate([ids], [[BOS, EOS]])
        alone = greedy(
            model, one["src"], one["src_len"], max_len=max_len[:1], bos=BOS, eos=EOS, pad=PAD
        ).tokens[:, 0]
        assert together[row, : alone.size(1)].tolist() == alone[0].tolist()


def reversal_data(n: int, seed: int, vocab: int = 14) -> tuple[list, list]:
    g = torch.Generator().manual_seed(seed)
    src, tgt = [], []
    for _ in range(n):
        seq = torch.randint(
            4, vocab, (int(torch.randint(3, 8, (1,), generator=g)),), generator=g
        ).tolist()
        src.append(seq + [EOS])
        tgt.append([BOS] + seq[::-1] + [EOS])
    return src, tgt


@pytest.mark.parametrize(
    "options",
    [
        dict(attention="general"),
        dict(attention="bahdanau", input_feed=False),
        dict(decoder="parallel", input_feed=False, dec_layers=2),
    ],
)
def test_tiny_model_learns_to_reverse_sequences(options):
    torch.manual_seed(0)
    cfg = ModelConfig(emb_dim=32, enc_hidden=48, dec_hidden=96, dropout=0.0, **options)
    model = Seq2Seq(cfg, 14, 14, pad=PAD)
    train_cfg = TrainConfig(label_smoothing=0.0, clip_norm=1.0)
    optimizer = build_optimizer(TrainConfig(lr=5e-3), model)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    src, tgt = reversal_data(3000, seed=0)

    for step in range(400):
        rows = range((step * 64) % 2944, (step * 64) % 2944 + 64)
        batch = collate([src[i] for i in rows], [tgt[i] for i in rows])
        train_one_step(model, [batch], optimizer, scaler, train_cfg)
    test_src, test_tgt = reversal_data(200, seed=1)
    batch = collate(test_src, test_tgt)
    out = greedy(
        model.eval(),
        batch["src"],
        batch["src_len"],
        max_len=batch["src_len"] + 2,
        bos=BOS,
        eos=EOS,
        pad=PAD,
    ).tokens[:, 0]

    exact = sum(out[i, : len(t)].tolist() == t for i, t in enumerate(test_tgt)) / len(test_tgt)
    assert exact >= 0.95


@pytest.mark.parametrize("attention", ["general", "bahdanau"])
def test_attention_covers_only_real_source_positions_and_sums_to_one(attention):
    model = small_model(attention=attention)
    src, _ = random_batch(n=6, seed=4)
    batch = collate(src, [[BOS, EOS]] * len(src))

    memory, state = model.encode(batch["src"], batch["src_len"])
    _, _, attn = model.decode_step(torch.full((len(src),), BOS), state, memory)

    torch.testing.assert_close(attn.sum(-1), torch.ones(len(src)))
    padded = torch.arange(batch["src"].size(1))[None] >= batch["src_len"][:, None]
    assert padded.any() and (attn[padded] == 0).all()  # sentences of unequal lengths


def test_an_overflowing_fp16_step_is_skipped_and_counted_not_applied():
    model = small_model().train()
    optimizer = build_optimizer(TrainConfig(lr=1e-2), model)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**60)  # fp16 gradients overflow at once
    src, tgt = random_batch()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    stats = train_one_step(
        model, [collate(src, tgt)], optimizer, scaler, TrainConfig(), precision="fp16"
    )

    assert stats["skipped"] == 1
    assert scaler.get_scale() < 2.0**60
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_per_sentence_normalization_scales_the_gradient_not_the_reported_loss():
    """OpenNMT-py's normalization: the summed loss over sentences, not tokens. The
    gradient (before clipping) grows by tokens / sentences; the loss is still
    reported per target token."""
    src, tgt = random_batch(n=6, seed=3)
    batch = collate(src, tgt)
    tokens = int((batch["tgt_out"] != PAD).sum())
    stats = {}
    for normalization in ("tokens", "sentences"):
        model = small_model()  # the same weights each time, no dropout
        cfg = TrainConfig(loss_normalization=normalization, clip_norm=1e9)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        stats[normalization] = train_one_step(
            model, [batch], build_optimizer(cfg, model), scaler, cfg
        )

    ratio = stats["sentences"]["grad_norm"] / stats["tokens"]["grad_norm"]
    assert ratio.item() == pytest.approx(tokens / len(tgt), rel=1e-5)
    assert stats["sentences"]["loss"].item() == pytest.approx(stats["tokens"]["loss"].item())


@pytest.mark.parametrize("p", [0.3, 0.1])
def test_dropout_keeps_each_element_with_probability_1_minus_p_and_keeps_the_mean(p):
    x = torch.full((1001, 999), 2.0, requires_grad=True)  # an odd number of elements
    torch.manual_seed(0)
    out = uniform16_dropout(x, p)
    kept = out != 0
    # 5 standard deviations of the kept fraction over 1e6 Bernoulli draws
    assert abs(kept.double().mean() - (1 - p)) < 5 * ((p * (1 - p)) / x.numel()) ** 0.5
    scale = out[kept].unique()
    assert scale.numel() == 1 and abs(scale.item() / 2 - 1 / (1 - p)) < 1e-4
    assert abs(out.double().mean() - 2) < 0.01  # the expectation is the input
    out.sum().backward()
    torch.testing.assert_close(x.grad, out.detach() / 2)  # the same mask and scale
    torch.manual_seed(0)
    torch.testing.assert_close(uniform16_dropout(x, p), out)  # seeded: the same mask again
    assert not torch.equal(uniform16_dropout(x, p), out)  # and a new one on the next call
    assert uniform16_dropout(x.detach().bfloat16(), p).dtype == torch.bfloat16


def test_a_model_in_eval_mode_drops_nothing_whatever_its_kernels():
    model = small_model(dropout=0.5)
    src, tgt = random_batch()
    batch = collate(src, tgt)
    inputs = (batch["src"], batch["src_len"], batch["tgt_in"])

    reference = model(*inputs)
    fast = model(*inputs, Kernels(dropout="uniform16", teacher_forcing="deferred"))

    torch.testing.assert_close(fast, reference)
    torch.testing.assert_close(model(*inputs), reference)  # no mask drawn
