"""The fused output layer + loss gives what logits followed by F.cross_entropy give:
the same summed loss and the same gradients, chunk boundaries, padding and label
smoothing included; under bf16 autocast at least as accurate."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from nmt.config import ModelConfig
from nmt.corpus import collate
from nmt.kernels.fused_loss import projected_cross_entropy
from nmt.model import Seq2Seq
from nmt.plan import DTYPES, Kernels
from nmt.tokenizer import PAD
from tests.conftest import assert_as_accurate, cpu_plan, gradients
from tests.test_model import random_batch


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
# chunks of 3 rows in groups of 7 (ragged chunks and groups), in one group, all in one
@pytest.mark.parametrize("chunk_rows, group_rows", [(3, 7), (3, None), (1000, None)])
def test_loss_and_gradients_equal_logits_then_cross_entropy(smoothing, chunk_rows, group_rows):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(17, 6, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(11, 6, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(11, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 11, (17,), generator=g)
    target[[2, 3, 16]] = PAD  # ignored rows

    fused = projected_cross_entropy(
        hidden,
        weight,
        bias,
        target,
        ignore_index=PAD,
        label_smoothing=smoothing,
        chunk_rows=chunk_rows,
        group_rows=group_rows,
    )
    fused_grads = torch.autograd.grad(2.5 * fused, (hidden, weight, bias))
    logits = F.linear(hidden, weight, bias)
    plain = F.cross_entropy(
        logits, target, ignore_index=PAD, label_smoothing=smoothing, reduction="sum"
    )
    plain_grads = torch.autograd.grad(2.5 * plain, (hidden, weight, bias))

    torch.testing.assert_close(fused, plain, rtol=1e-12, atol=1e-12)
    for fused_grad, plain_grad in zip(fused_grads, plain_grads, strict=True):
        torch.testing.assert_close(fused_grad, plain_grad, rtol=1e-10, atol=1e-12)
    assert fused_grads[0][[2, 3, 16]].abs().max() == 0  # ignored rows get no gradient


def model_loss_and_gradients(model, batch, fused: bool, precision="fp32"):
    """The model's loss through the fused kernel or its reference (full logits, then
    F.cross_entropy), and every parameter's gradient."""
    dtype = DTYPES[precision] if precision != "fp32" else None
    kernels = Kernels(loss="fused" if fused else "reference", dtype=dtype)
    with cpu_plan(model.cfg, precision).autocast():
        loss = model.loss(*batch.values(), label_smoothing=0.1, kernels=kernels)
    loss.backward()
    return loss.detach(), gradients(model)


@pytest.mark.parametrize("tied", [False, True])
def test_the_model_trains_on_the_same_loss_and_gradients_as_with_full_logits(tied):
    torch.manual_seed(0)
    cfg = ModelConfig(emb_dim=10, enc_hidden=12, dec_hidden=16, tie_embeddings=tied, dropout=0)
    model = Seq2Seq(cfg, 19, 19).double().train()
    batch = collate(*random_batch(n=6, vocab=19, seed=2))

    fused, fused_grads = model_loss_and_gradients(model, batch, fused=True)
    plain, plain_grads = model_loss_and_gradients(model, batch, fused=False)

    torch.testing.assert_close(fused, plain, rtol=1e-12, atol=1e-12)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(fused_grads[name], grad, rtol=1e-10, atol=1e-12, msg=name)


def test_under_bf16_autocast_the_fused_loss_is_as_accurate_as_full_logits():
    torch.manual_seed(0)
    cfg = ModelConfig(emb_dim=32, enc_hidden=32, dec_hidden=64, dropout=0.0)
    model = Seq2Seq(cfg, 300, 300).train()
    batch = collate(*random_batch(n=8, vocab=300, seed=4))

    _, fused = model_loss_and_gradients(model, batch, fused=True, precision="bf16")
    _, plain = model_loss_and_gradients(model, batch, fused=False, precision="bf16")
    _, exact = model_loss_and_gradients(copy.deepcopy(model).double(), batch, fused=False)

    assert_as_accurate(fused, plain, exact)


def test_without_gradients_only_the_loss_is_computed(monkeypatch):
    hidden, weight = torch.randn(9, 4, requires_grad=True), torch.randn(7, 4, requires_grad=True)
    bias, target = torch.zeros(7, requires_grad=True), torch.randint(0, 7, (9,))
    products = []
    monkeypatch.setattr(torch.Tensor, "__matmul__", lambda a, b: products.append(1) or a.mm(b))

    with torch.no_grad():
        loss = projected_cross_entropy(hidden, weight, bias, target, ignore_index=PAD)

    assert products == []  # no gradient products: only the output layer's addmm ran
    projected_cross_entropy(hidden, weight, bias, target, ignore_index=PAD)
    assert products  # with gradients they run in the same pass
    plain = F.cross_entropy(
        F.linear(hidden, weight, bias), target, ignore_index=PAD, reduction="sum"
    )
    torch.testing.assert_close(loss, plain.detach())


def test_a_second_backward_through_the_same_graph_is_refused():
    """Backward scales the gradients it saved in place, so a second pass would get
    them scaled twice: it must fail loudly instead."""
    hidden, weight = torch.randn(5, 4, requires_grad=True), torch.randn(7, 4, requires_grad=True)
    bias, target = torch.zeros(7, requires_grad=True), torch.randint(1, 7, (5,))
    loss = projected_cross_entropy(hidden, weight, bias, target, ignore_index=PAD)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backpropagated once only"):
        loss.backward()
