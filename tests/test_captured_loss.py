"""Training steps whose loss replays CUDA graphs make the updates of eager steps. GPU only:
skipped without CUDA (what the captured step computes is checked on the CPU in
tests/test_static_shapes.py, with the kernels the graphs capture)."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from nmt.config import ModelConfig, TrainConfig
from nmt.corpus import collate
from nmt.model import Seq2Seq
from nmt.plan import plan_for
from nmt.training.optimize import TrainingLoss, build_optimizer, train_step
from tests.test_model import random_batch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("input_feed", [True, False])
def test_captured_steps_make_the_updates_of_eager_steps(precision, input_feed):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    from nmt.runtime.captured_loss import CapturedLoss

    torch.manual_seed(0)
    cuda = torch.device("cuda")
    cfg = ModelConfig(emb_dim=16, enc_hidden=16, dec_hidden=32, input_feed=input_feed, dropout=0)
    model = Seq2Seq(cfg, 50, 50).to(cuda).train()
    twin = copy.deepcopy(model)
    plan = plan_for(cuda, precision, training=True, model=cfg, graphs=True)
    eager_plan = dataclasses.replace(plan, graphs=False)  # the same kernels, not captured
    # three shapes (rows, source, target) padded to static shapes: (8, 10, 10) twice,
    # (24, 10, 10) three times and (8, 6, 8) once; the repeats replay what the first of
    # their shape captured
    batches = [random_batch(n=n, vocab=50, seed=s) for s, n in enumerate([5, 5, 20, 5, 20, 20])]
    train = TrainConfig()
    runs = {}
    for net, objective, run_plan in (
        (model, CapturedLoss(TrainingLoss(model, plan, 0.1)), plan),
        (twin, TrainingLoss(twin, eager_plan, 0.1), eager_plan),
    ):
        optimizer, scaler = build_optimizer(train, net), run_plan.scaler()
        losses = []
        for src, tgt in batches:
            batch = collate(src, tgt, static_shapes=True)
            stats = train_step(objective, [batch], optimizer, scaler, cfg=train, plan=run_plan)
            losses.append(float(stats["loss"]))
        runs[id(net)] = losses, objective

    (captured, objective), (eager, _) = runs[id(model)], runs[id(twin)]
    assert len(objective.graphed) == 3  # one per shape
    tolerance = 1e-5 if precision == "fp32" else 2e-2
    assert captured == pytest.approx(eager, rel=tolerance)
    for (name, param), other in zip(model.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(param, other, rtol=tolerance, atol=tolerance, msg=name)
