"""Fast implementations of the model's stages, each tested against its reference in
`nmt.model` (float64, values and gradients), and the LSTM cell and attention weights
they all share (`cells`). Plain functions on tensors: nothing here imports the model."""
