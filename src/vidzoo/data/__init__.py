"""Data: decoders (bytes to frames), samplers (which frames), transforms (pixels to tensors),
annotation sources, the clip description, and the dataset that wires them together."""
