"""CLI verbs for training and experiments (filled in by the train/experiment work)."""

import typer


def register(app: typer.Typer) -> None:
    """Add the `train` and `experiment` verbs to the hyperclone app."""
