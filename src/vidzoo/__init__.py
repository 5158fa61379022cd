"""vidzoo: a zoo of video classifiers, and the tools to train, evaluate and run them."""

__version__ = "0.1.0"
