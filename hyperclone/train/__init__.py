"""Training: the loop, its checkpoint state, the token cache, AdamW moments it is given.

Imports only hyperclone.common: growth (of weights or of optimizer moments) happens before training.
"""
