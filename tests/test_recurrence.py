"""The input-feeding loop with deferred gradients computes what the model's stepwise
reference computes: the same outputs and the same gradient for every parameter,
dropout included (both draw the same masks in the same order)."""

from __future__ import annotations

import copy

import pytest
import torch

from nmt.config import ModelConfig
from nmt.corpus import collate
from nmt.model import Seq2Seq
from nmt.plan import DTYPES, REFERENCE, Kernels
from tests.conftest import assert_as_accurate, cpu_plan, gradients
from tests.test_model import random_batch

DEFERRED = Kernels(teacher_forcing="deferred")


def logits_and_gradients(model, batch, kernels: Kernels, precision="fp32"):
    torch.manual_seed(7)  # the same dropout masks for both paths
    if precision != "fp32":
        kernels = Kernels(teacher_forcing=kernels.teacher_forcing, dtype=DTYPES[precision])
    with cpu_plan(model.cfg, precision).autocast():
        logits = model(batch["src"], batch["src_len"], batch["tgt_in"], kernels)
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

    fused, fused_grads = logits_and_gradients(model, batch, DEFERRED)
    reference, reference_grads = logits_and_gradients(model, batch, REFERENCE)

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

    fused, fused_grads = logits_and_gradients(model, batch, DEFERRED, "bf16")
    stepwise, stepwise_grads = logits_and_gradients(model, batch, REFERENCE, "bf16")
    _, exact = logits_and_gradients(copy.deepcopy(model).double(), batch, REFERENCE)

    assert fused.dtype == stepwise.dtype == torch.bfloat16
    assert all(grad.dtype == torch.float32 for grad in fused_grads.values())
    # the loop's single large weight-gradient products must not lose to autograd's
    # per-step sums
    assert_as_accurate(fused_grads, stepwise_grads, exact)
