"""The layout of an experiment folder, named once. Every study (preset experiment, sweep, ladder, search, head to
head) reads and writes its folder through an ExperimentDir:

    DIR/experiment.json          the settings it was started with (a rerun with others is refused)
    DIR/corpus/corpus.jsonl      the experiment's corpus (corpus.json describes it); <name>.jsonl: public corpora
    DIR/tokenizer/               the byte-level BPE tokenizer trained on it
    DIR/cache/                   token caches (hyperclone.train.data)
    DIR/models/                  starting points: small-init, grown models, random inits
    DIR/runs/<run>/              one training run each (<arm>-s<seed>, small, small-<tokens>-s0, ...)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hyperclone.train.state import FINAL, STATE_FILE

SETTINGS_FILE = "experiment.json"
SMALL_INIT = "small-init"  # the small model's random initialisation, under models/


@dataclass(frozen=True)
class ExperimentDir:
    root: Path

    @property
    def settings(self) -> Path:
        return self.root / SETTINGS_FILE

    @property
    def corpus(self) -> Path:
        return self.root / "corpus" / "corpus.jsonl"

    @property
    def corpus_info(self) -> Path:
        return self.root / "corpus" / "corpus.json"

    def public_corpus(self, name: str) -> Path:
        return self.root / "corpus" / f"{name}.jsonl"

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def models(self) -> Path:
        return self.root / "models"

    def model(self, name: str) -> Path:
        return self.models / name

    @property
    def small_init(self) -> Path:
        return self.model(SMALL_INIT)

    def run(self, name: str) -> Path:
        return self.root / "runs" / name

    def arm_run(self, arm: str, seed: int) -> Path:
        """The run of one arm and seed: runs/<arm>-s<seed>."""
        return self.run(f"{arm}-s{seed}")

    @staticmethod
    def final(run: Path) -> Path:
        return run / FINAL

    @staticmethod
    def finished(run: Path) -> bool:
        """A run whose final model is complete (its state file is written last)."""
        return (run / FINAL / STATE_FILE).exists()
