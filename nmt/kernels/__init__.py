"""Fast implementations of the model's stages, each tested against its reference in
`nmt.model` (float64, values and gradients); `nmt.plan` chooses among them."""
