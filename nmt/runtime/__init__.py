"""How a loaded model runs here: wrappers with the model's interface that the plan
picks (decoder weights prepared for the CPU, the decoder step and the training loss
replayed as CUDA graphs). They import the model; the model never imports them."""
