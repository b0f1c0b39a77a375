"""The training loss's forward and backward replayed as CUDA graphs, one pair per shape.

A GPU training step of this model is thousands of small kernels (the decoder cell and
everything around it, once per target position, forward and backward); launching them
one by one from Python left an H100 idle 80% of the step (docs/benchmarks.md). Captured
once per batch shape (`torch.cuda.make_graphed_callables`) and replayed, a step costs
two launches. That needs steps whose shapes recur (an in-memory corpus's epochs cut the
same shapes; a streamed one is padded to the plan's `static_shapes`) and that never
wait for the host: the encoder must not pack (the plan's "masked" encoder), and
autocast must not cache casts (`Plan.autocast`).

The optimizer step stays outside the graphs: fused Adam is already a few kernels. One
loss call per optimizer step (no accumulation): the graphed backward hands autograd its
own gradient buffers, which become the parameters' `.grad` after `zero_grad(set_to_none
=True)`, so a second replay of that shape in the step would overwrite them, not add.
Each shape's graph keeps its own gradient buffers: a full set of parameter gradients
per captured shape (about 190 MB for the 47.5M-parameter GPU config).
Dropout draws fresh masks at every replay (CUDA graphs advance the generator's offset).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class CapturedLoss(nn.Module):
    """A training loss module (`nmt.optimize.TrainingLoss`) whose forward and backward
    replay graphs captured for each new (src, tgt_in) shape, up to `max_graphs` shapes;
    batches of other shapes run eagerly. The graphs share one memory pool: they replay
    one after another, never at once, and none reads another's memory."""

    def __init__(self, loss: nn.Module, max_graphs: int = 128):
        super().__init__()
        self.loss, self.max_graphs = loss, max_graphs
        self.graphed: dict[tuple, nn.Module] = {}
        self.pool = torch.cuda.graph_pool_handle()

    def forward(self, src: Tensor, src_len: Tensor, tgt_in: Tensor, tgt_out: Tensor) -> Tensor:
        """The loss's own arguments, all on the GPU -> its summed loss, a scalar."""
        args = (src, src_len, tgt_in, tgt_out)
        key = (tuple(src.shape), tuple(tgt_in.shape))  # a run keeps its precision
        graphed = self.graphed.get(key)
        if graphed is None and len(self.graphed) < self.max_graphs:
            # a shell module per shape: capturing replaces its forward, and the
            # parameters it reports (the loss's own) are what backward differentiates
            graphed = torch.cuda.make_graphed_callables(_Shell(self.loss), args, pool=self.pool)
            self.graphed[key] = graphed
        return (graphed or self.loss)(*args)


class _Shell(nn.Module):
    def __init__(self, loss: nn.Module):
        super().__init__()
        self.loss = loss

    def forward(self, *args: Tensor) -> Tensor:
        return self.loss(*args)
