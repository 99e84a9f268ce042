"""The choices of `hyperclone grow`, as plain data (no torch import: the command line reads them for --help)."""

MODES = ("symmetric", "noisy", "diagonal", "uneven")
NOISE_MODES = ("noisy", "uneven")  # the modes --noise-db sets the level of
TIE_CHOICES = ("keep", "untie")
DEPTH_MODES = ("identity", "stack")
# Output dtype: auto keeps the source's dtype where it can hold the growth exactly and writes float32 where it
# cannot (see plan.storage_inexact_reason); source always keeps it (an inexact output is recorded as such).
DTYPE_CHOICES = ("auto", "source", "float32")
# The default recipe is the winner of the post-growth recipe search (results/sweep-cpu-tiny): exact zero-sum
# noise at 0 dB breaks the symmetry of the copies, which plain HyperCloning (--mode symmetric) leaves intact.
DEFAULT_MODE = "noisy"
DEFAULT_NOISE_DB = 0.0
DEFAULT_TOP_K = 2  # --experts: experts each token is routed to (Mixtral's choice)
DEFAULT_SHARD_SIZE = "50GB"  # --shard-size: transformers 5's save_pretrained default
