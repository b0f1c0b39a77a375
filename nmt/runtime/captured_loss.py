"""The training loss's forward and backward replayed as CUDA graphs, one pair per shape.

A GPU training step is thousands of small kernels launched from Python, which left an H100
mostly idle (docs/benchmarks.md, GPU); replayed, a step costs two launches. That needs
recurring shapes (`Plan.static_shapes` for a stream), no host sync (the "masked"
encoder) and no cached casts (`Plan.autocast`). The optimizer stays outside; one loss call
a step (a graphed backward's gradient buffers become `.grad`: a second replay would
overwrite, not add); each shape keeps its own gradient buffers.
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
