"""The encoder's fast paths compute what nn.LSTM computes on packed sequences: outputs,
final states and every gradient, for any mix of lengths. "packed": one node a layer on
the packed layout; "masked": no packing, the lengths on the device (captured steps)."""

from __future__ import annotations

import functools

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from nmt.config import ModelConfig
from nmt.corpus import collate
from nmt.kernels.masked_lstm import masked_bidirectional_lstm
from nmt.kernels.packed_lstm import bidirectional_lstm
from nmt.model import Seq2Seq
from nmt.plan import Kernels, cpu_runs
from tests.conftest import assert_as_accurate
from tests.test_model import random_batch


def nn_lstm(lstm, x, lengths):
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, (h, c) = lstm(packed)
    return pad_packed_sequence(out, batch_first=True, total_length=x.size(1))[0], h, c


def ours(lstm, x, lengths, dtype=torch.float64, kernel="packed"):
    layer = bidirectional_lstm if kernel == "packed" else masked_bidirectional_lstm
    return layer(x, lengths, lstm, lambda t: t, dtype=dtype)


def results_and_gradients(run, lstm, x, lengths):
    """The outputs and the gradients of a loss that weighs every output and state
    element differently, for the input and every weight."""
    results = run(lstm, x, lengths)
    loss = sum(
        (t.double() * torch.linspace(-1, 1, t.numel(), dtype=torch.float64).view_as(t)).sum()
        for t in results
    )
    names = ["input"] + [name for name, _ in lstm.named_parameters()]
    grads = torch.autograd.grad(loss, [x, *lstm.parameters()])
    return [t.detach() for t in results], dict(zip(names, grads, strict=True))


@pytest.mark.parametrize(
    "lengths",
    [[3, 9, 1, 5, 9, 2], [4, 4, 4], [1], [2, 7, 7, 1, 6]],  # shuffled, equal, single, ties
)
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("kernel", ["packed", "masked"])
def test_outputs_final_states_and_gradients_equal_nn_lstm_on_packed_sequences(
    lengths, layers, kernel
):
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(5, 7, layers, batch_first=True, bidirectional=True).double()
    x = torch.randn(len(lengths), 9, 5, dtype=torch.float64, requires_grad=True)

    run = functools.partial(ours, kernel=kernel)
    got, got_grads = results_and_gradients(run, lstm, x, torch.tensor(lengths))
    want, want_grads = results_and_gradients(nn_lstm, lstm, x, torch.tensor(lengths))

    for name, a, b in zip(["outputs", "h", "c"], got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=name)
    pads = torch.arange(9)[None] >= torch.tensor(lengths)[:, None]
    assert got[0][pads].abs().max() == 0
    for name, grad in want_grads.items():
        if max(lengths) > 1 or "hh" not in name:  # one step has no previous state
            assert grad.abs().sum() > 0, name  # every weight takes part
        torch.testing.assert_close(got_grads[name], grad, rtol=1e-10, atol=1e-12, msg=name)


def test_weight_gradients_are_separate_tensors():
    """b_ih and b_hh have equal gradients; sharing one tensor would let an in-place
    update of one (clipping scales gradients in place) change the other twice."""
    lstm = torch.nn.LSTM(3, 4, batch_first=True, bidirectional=True)
    out, h, c = ours(lstm, torch.randn(2, 3, 3), torch.tensor([3, 2]), torch.float32)
    (out.sum() + h.sum() + c.sum()).backward()
    places = [p.grad.data_ptr() for p in lstm.parameters()]
    assert len(set(places)) == len(places)


@pytest.mark.skipif(
    not cpu_runs("bf16"), reason="no bf16 nn.LSTM kernel on this CPU (it needs AVX-512)"
)
def test_under_bf16_it_is_as_accurate_as_nn_lstm_on_each_sequence_alone():
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(32, 32, batch_first=True, bidirectional=True)
    lengths = torch.tensor([11, 4, 9, 1, 11, 6, 2, 8])
    x = torch.randn(len(lengths), 11, 32, requires_grad=True)

    def bf16_alone(lstm, x, lengths):
        """nn.LSTM's own bf16 kernel, one unpadded sequence at a time."""
        outs, hs, cs = [], [], []
        with torch.autocast("cpu", dtype=torch.bfloat16):
            for row, length in enumerate(lengths.tolist()):
                out, (h, c) = lstm(x[row : row + 1, :length])
                outs.append(torch.nn.functional.pad(out.float(), (0, 0, 0, x.size(1) - length)))
                hs.append(h.float())
                cs.append(c.float())
        return torch.cat(outs), torch.cat(hs, 1), torch.cat(cs, 1)

    _, got = results_and_gradients(lambda *a: ours(*a, dtype=torch.bfloat16), lstm, x, lengths)
    _, reference = results_and_gradients(bf16_alone, lstm, x, lengths)
    exact_lstm = torch.nn.LSTM(32, 32, batch_first=True, bidirectional=True).double()
    exact_lstm.load_state_dict(lstm.state_dict())
    x64 = x.detach().double().requires_grad_()
    _, exact = results_and_gradients(ours, exact_lstm, x64, lengths)
    assert_as_accurate(got, reference, exact)


@pytest.mark.parametrize("kernel", ["packed", "masked"])
def test_the_model_encodes_alike_with_this_layer_and_with_nn_lstm(kernel):
    """Training encodes with a fast path, decoding with nn.LSTM: the two must give the
    same memory and initial decoder state, and the same gradients."""
    torch.manual_seed(0)
    cfg = ModelConfig(emb_dim=8, enc_hidden=6, enc_layers=2, dec_hidden=10, dropout=0.0)
    model = Seq2Seq(cfg, 15, 15).double()
    batch = collate(*random_batch(n=5, vocab=15, seed=1))
    encoded = {}
    for kernels in (Kernels(encoder=kernel), Kernels(encoder="torch")):
        memory, state = model.encode(batch["src"], batch["src_len"], kernels)
        results = [memory.values, memory.keys, *state]
        weights = [torch.linspace(-1, 1, t.numel(), dtype=torch.float64) for t in results]
        sum((t.flatten() * w).sum() for t, w in zip(results, weights, strict=True)).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        model.zero_grad(set_to_none=True)
        encoded[kernels.encoder] = results, grads
    (packed, packed_grads), (reference, reference_grads) = encoded.values()
    for a, b in zip(packed, reference, strict=True):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-12, atol=1e-12)
    assert packed_grads.keys() == reference_grads.keys() and "encoder.weight_hh_l1" in packed_grads
    for name, grad in reference_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, rtol=1e-10, atol=1e-12, msg=name)
