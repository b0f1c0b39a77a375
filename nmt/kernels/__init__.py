"""Fast implementations of the model's stages, each tested against its reference in
`nmt.model` (float64, values and gradients); `nmt.plan` chooses among them.

packed_lstm: the bidirectional encoder for CPU training, one autograd node a layer.
recurrence: the input-feeding decoder loop, its shared gradients deferred to the end.
fused_loss: the output layer and the loss in one pass over row chunks.
dropout: CPU dropout masks at a third of torch's cost.
prepared: decoder-step products prepared once for CPU decoding (packed fp32, int8).
(The one LSTM cell definition they share is `nmt.gates.lstm_cell`.)
"""
