"""`nmt train`: the run directory, the loop, one optimizer step, validation, the
metrics log, resuming, and torchrun's processes."""
