"""Batches padded to bucket shapes (`collate(..., static_shapes=True)`, what a GPU plan
trains on) give the loss and gradients of the same batches padded only to their longest:
the added rows and columns are masked, never learned from."""

from __future__ import annotations

import copy

import pytest
import torch

from nmt.config import ModelConfig, TrainConfig
from nmt.corpus import collate
from nmt.model import Seq2Seq
from nmt.plan import LENGTH_STEP, REFERENCE, ROWS_STEP, DeviceError, bucket, plan_for
from nmt.tokenizer import PAD
from nmt.training.optimize import TrainingLoss, build_optimizer, train_step
from tests.conftest import cpu_plan, gradients
from tests.test_model import random_batch

MODELS = {
    "luong_input_feed": ModelConfig(emb_dim=8, enc_hidden=6, dec_hidden=10, dropout=0.0),
    "bahdanau_two_layers": ModelConfig(
        emb_dim=8, enc_hidden=6, dec_hidden=10, dec_layers=2, attention="bahdanau", dropout=0.0
    ),
    "luong_no_feed": ModelConfig(
        emb_dim=8, enc_hidden=6, dec_hidden=10, input_feed=False, dropout=0.0
    ),
}


@pytest.mark.parametrize("step", [LENGTH_STEP, ROWS_STEP])
def test_buckets_are_few_cover_every_size_and_waste_under_a_tenth(step):
    sizes = range(1, 2001)

    buckets = [bucket(n, step) for n in sizes]

    assert all(b >= n and b % step == 0 for b, n in zip(buckets, sizes, strict=True))
    assert all(b - n < step + n / 10 for b, n in zip(buckets, sizes, strict=True))
    assert buckets == sorted(buckets)  # a longer batch never gets a narrower shape
    assert len(set(buckets)) <= 16 + 8 * 7  # 16 steps, then 8 an octave up to 2000
    assert {bucket(b, step) for b in buckets} == set(buckets)  # a bucket is its own bucket


def test_a_static_batch_has_bucket_shapes_and_keeps_every_real_piece():
    src, tgt = random_batch(n=11, vocab=30, seed=3)
    src[0] = src[0] * 3  # a longer source, so S and T differ

    loose, static = collate(src, tgt), collate(src, tgt, static_shapes=True)

    rows, width = static["src"].shape
    assert (rows, width, static["tgt_in"].size(1)) == (
        bucket(11, ROWS_STEP),
        bucket(loose["src"].size(1), LENGTH_STEP),
        bucket(loose["tgt_in"].size(1), LENGTH_STEP),
    )
    assert torch.equal(static["src"][:11, : loose["src"].size(1)], loose["src"])
    assert torch.equal(static["src_len"][:11], loose["src_len"])
    for key in ("tgt_in", "tgt_out"):
        assert torch.equal(static[key][:11, : loose[key].size(1)], loose[key])
    # nothing to predict in the added columns and rows (tgt_in may hold the longest
    # target's EOS there: an input whose output is ignored)
    assert (static["tgt_out"][:, loose["tgt_out"].size(1) :] == PAD).all()
    assert (static["tgt_out"][11:] == PAD).all() and (static["tgt_in"][11:] == PAD).all()
    assert (static["src_len"][11:] == 1).all()  # and a one-piece source: nothing packs empty


def loss_and_gradients(model, batch, kernels) -> tuple[torch.Tensor, dict]:
    loss = model.loss(*batch.values(), label_smoothing=0.1, kernels=kernels)
    loss.backward()
    return loss.detach(), gradients(model)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("kernels", ["reference", "cpu_training", "gpu_graphs"])
def test_static_shapes_give_the_loss_and_gradients_of_loose_ones(name, kernels):
    torch.manual_seed(0)
    model = Seq2Seq(MODELS[name], 30, 30).double().train()
    # gpu_graphs: the kernels a captured GPU step runs (the masked encoder), run here
    gpu = plan_for(torch.device("cuda"), "fp32", training=True, model=model.cfg, graphs=True)
    choice = {"reference": REFERENCE, "cpu_training": cpu_plan(model.cfg).kernels}
    kernels = choice.get(kernels, gpu.kernels)
    src, tgt = random_batch(n=9, vocab=30, seed=1)

    loose, loose_grads = loss_and_gradients(model, collate(src, tgt), kernels)
    static_batch = collate(src, tgt, static_shapes=True)
    static, static_grads = loss_and_gradients(model, static_batch, kernels)

    assert static_batch["src"].shape != collate(src, tgt)["src"].shape  # something was added
    torch.testing.assert_close(static, loose, rtol=1e-12, atol=1e-12)
    for param, grad in loose_grads.items():
        assert grad.abs().max() > 0, param  # every parameter learns something here
        torch.testing.assert_close(static_grads[param], grad, rtol=1e-9, atol=1e-9, msg=param)


@pytest.mark.parametrize("normalization", ["tokens", "sentences"])
def test_a_training_step_on_static_shapes_makes_the_same_update(normalization):
    torch.manual_seed(0)
    cfg = TrainConfig(loss_normalization=normalization)
    model = Seq2Seq(MODELS["luong_input_feed"], 30, 30).double().train()
    twin = copy.deepcopy(model)
    plan = plan_for(torch.device("cpu"), "fp32", training=True, model=model.cfg)
    src, tgt = random_batch(n=13, vocab=30, seed=7)

    for net, static in ((model, False), (twin, True)):
        optimizer, scaler = build_optimizer(cfg, net), plan.scaler()
        batch = collate(src, tgt, static_shapes=static)
        stats = train_step(
            TrainingLoss(net, plan, 0.1), [batch], optimizer, scaler, cfg=cfg, plan=plan
        )
        net.stats = stats

    torch.testing.assert_close(twin.stats["loss"], model.stats["loss"], rtol=1e-12, atol=0)
    # the gradient's norm, which Adam's update hides, shows the divisor: the batch's
    # real sentences, not its rows
    grad_norms = twin.stats["grad_norm"], model.stats["grad_norm"]
    torch.testing.assert_close(*grad_norms, rtol=1e-10, atol=0)
    for (name, param), other in zip(model.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(other, param, rtol=1e-9, atol=1e-9, msg=name)


def test_the_plan_pads_a_captured_stream_by_default_and_anything_when_asked():
    cfg = ModelConfig()

    def static(device: str, setting: str, streaming=True, graphs=False) -> bool:
        options = {"static_shapes": setting, "streaming": streaming, "graphs": graphs}
        plan = plan_for(torch.device(device), "fp32", training=True, model=cfg, **options)
        return plan.static_shapes

    assert not static("cpu", "auto")
    assert static("cpu", "always", streaming=False)
    # a training plan asks the device nothing in fp32: a CUDA device needs no GPU here
    assert static("cuda", "auto", graphs=True)
    assert not static("cuda", "auto", graphs=True, streaming=False)  # epochs repeat shapes
    assert not static("cuda", "auto")  # without graphs: not shown to pay
    assert not static("cuda", "never", graphs=True)


def test_a_plan_with_cuda_graphs_encodes_without_packing():
    cfg = ModelConfig()
    cuda = torch.device("cuda")

    plan = plan_for(cuda, "bf16", training=True, model=cfg, graphs=True)

    assert plan.graphs and plan.kernels.encoder == "masked" and not plan.static_shapes
    with pytest.raises(DeviceError, match="CUDA"):
        plan_for(torch.device("cpu"), "fp32", training=True, model=cfg, graphs=True)
