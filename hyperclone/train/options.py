"""The choices of `hyperclone train`, as plain data (no torch import: the command line reads them for --help)."""

SCHEDULES = ("cosine", "wsd")
DTYPES = ("auto", "fp32", "bf16")
RESETS = ("none", "first", "copies")  # carried AdamW moments: which to zero (copies: outside copy block 0)
STRATEGIES = ("ddp", "fsdp")
ATTENTION = ("sdpa", "eager", "flash_attention_2")
SAVE_DTYPES = ("fp32", "bf16")
LOG_SINKS = ("tensorboard",)  # --log: where metrics go besides metrics.jsonl
