"""nmt: LSTM encoder-decoder translation with attention, on PyTorch."""

__version__ = "0.1.0"
