"""Pieces every wing uses: the error type, atomic output folders, sizes with suffixes, quiet transformers."""
