"""The data pipeline: decoders (bytes to frames), samplers (which frames), transforms
(pixels to tensors), and datasets that wire the three together."""
