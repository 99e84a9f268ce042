"""hyperclone: function-preserving growth of pretrained causal LMs (HyperCloning) and continued pre-training."""

__version__ = "0.1.0"
