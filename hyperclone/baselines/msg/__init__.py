"""Masked Structural Growth (MSG, Yao et al., arXiv 2305.02869): masks, their layout, and training with the ramp."""
