"""Reading a config value by its key, from a transformers config object or a config.json dict alike: the one
lookup the family tables (hyperclone.grow.families) and the layer-kind encodings (hyperclone.grow.layer_kinds) share."""

from __future__ import annotations

from typing import Any


def config_value(config: Any, key: str, default: Any = None) -> Any:
    """A config value by its key: an attribute of a transformers config object or an item of a config.json dict; a
    key with dots reaches into nested configs (DBRX's attn_config.kv_n_heads). `default` where any part is missing;
    a config.json read without transformers (hyperclone.grow.source.StatedConfig) answers for itself."""
    stated = getattr(type(config), "stated_value", None)
    if stated is not None:
        return stated(config, key, default)
    value = config
    for part in key.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif hasattr(type(value), "_getattr_without_heterogeneous_validation"):  # transformers 5: a config with
            value = value._getattr_without_heterogeneous_validation(part, None)  # per-layer overrides (Gemma 4)
        else:  # answers its global value; PerLayerAttention reads the layers' own
            value = getattr(value, part, None)
        if value is None:
            return default
    return value
