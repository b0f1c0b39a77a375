"""The input-feeding loop with deferred gradients computes what `Seq2Seq._step`
applied step by step computes: the same outputs and the same gradient for every
parameter, dropout included (both draw the same masks in the same order)."""

from __future__ import annotations

import copy

import pytest
import torch

from nmt.config import ModelConfig
from nmt.data import collate
from nmt.model import Seq2Seq, autocast
from tests.conftest import assert_as_accurate, gradients
from tests.test_model import random_batch


def step_by_step(model: Seq2Seq, batch: dict) -> torch.Tensor:
    """Teacher forcing through `_step`, the per-step path that decoding uses."""
    memory, state = model.encode(batch["src"], batch["src_len"])
    outputs = []
    for emb_t in model.dropout(model.tgt_embed(batch["tgt_in"])).unbind(1):
        out, state, _ = model._step(emb_t, state, memory)
        outputs.append(out)
    return model._logits(torch.stack(outputs, 1))


def teacher_forced(model: Seq2Seq, batch: dict) -> torch.Tensor:
    """`Seq2Seq.forward`, which runs the loop."""
    return model(batch["src"], batch["src_len"], batch["tgt_in"])


def logits_and_gradients(model, batch, run, precision="fp32"):
    torch.manual_seed(7)  # the same dropout masks for both paths
    with autocast(torch.device("cpu"), precision):
        logits = run(model, batch)
    # a loss that weighs every position and vocabulary entry differently
    weights = torch.linspace(-1, 1, logits.numel()).view_as(logits)
    (logits.float() * weights).sum().backward()
    return logits.detach(), gradients(model)


@pytest.mark.parametrize(
    "options",
    [
        dict(attention="general"),
        dict(attention="dot", enc_hidden=12, dec_hidden=24),
        dict(attention="general", dec_layers=3, dropout=0.3),
        dict(attention="general", enc_layers=2, bridge="zero", dropout=0.2, tie_embeddings=True),
    ],
)
def test_the_loop_equals_the_step_by_step_decoder_in_value_and_every_gradient(options):
    torch.manual_seed(0)
    cfg = ModelConfig(**{"emb_dim": 10, "enc_hidden": 14, "dec_hidden": 18, **options})
    model = Seq2Seq(cfg, 23, 23).double().train()
    batch = collate(*random_batch(n=6, vocab=23, seed=3))  # lengths 1 to 9, padded

    fused, fused_grads = logits_and_gradients(model, batch, teacher_forced)
    reference, reference_grads = logits_and_gradients(model, batch, step_by_step)

    torch.testing.assert_close(fused, reference, rtol=1e-12, atol=1e-12)
    assert fused_grads.keys() == reference_grads.keys()
    for name, grad in reference_grads.items():
        assert grad.abs().sum() > 0, name  # every parameter takes part
        torch.testing.assert_close(fused_grads[name], grad, rtol=1e-9, atol=1e-12, msg=name)


def test_under_bf16_autocast_the_loop_is_as_accurate_as_the_step_by_step_decoder():
    torch.manual_seed(0)
    cfg = ModelConfig(emb_dim=32, enc_hidden=32, dec_hidden=64, dropout=0.0)
    model = Seq2Seq(cfg, 40, 40).train()
    batch = collate(*random_batch(n=8, vocab=40, seed=5))

    fused, fused_grads = logits_and_gradients(model, batch, teacher_forced, "bf16")
    stepwise, stepwise_grads = logits_and_gradients(model, batch, step_by_step, "bf16")
    _, exact = logits_and_gradients(copy.deepcopy(model).double(), batch, step_by_step)

    assert fused.dtype == stepwise.dtype == torch.bfloat16
    assert all(grad.dtype == torch.float32 for grad in fused_grads.values())
    # the loop's single large weight-gradient products must not lose to autograd's
    # per-step sums
    assert_as_accurate(fused_grads, stepwise_grads, exact)
