"""Layers of more than one kind: which kind each block is, read from the config, and written back after depth growth.

Hybrid and mixture-of-experts checkpoints do not repeat one block: DeepSeek's first k layers have a dense MLP and
the rest experts, Qwen-MoE lists its dense layers, Bamba names its attention layers among Mamba2 layers,
Granite-4 hybrids and Qwen3-Next list a type per layer, Nemotron-H spells the stack as a string ("M-M*-").
Each config says it its own way; a family table's ``layer_kinds`` names the way and the key:

  {"list": "layer_types"}                              one entry per layer, the entry is the kind
  {"list": "layer_types", "values": {"mamba": "ssm"}}  ... translated (an entry missing from values is refused;
                                                       an integer entry by its JSON spelling: Mistral Large 4's
                                                       no_rope_layers, {"1": "rope", "0": "nope"})
  {"cycle": "block_types", "values": {...}}           a list repeated over the layers, translated: layer i has
                                                       entry i mod its length (RecurrentGemma's block_types); new
                                                       layers go where the cycle still says the grown layers
                                                       (cycle_insert_after) and written back as the source's list,
                                                       else (--insert-after elsewhere) one entry per grown layer
  {"pattern": "hybrid_override_pattern",
   "values": {"M": "mamba", "*": "attention"}}         one character per layer
  {"indices": "attn_layer_indices",
   "inside": "attention", "outside": "mamba"}          the layers listed have one kind, the others another
  {"prefix": "first_k_dense_replace",
   "inside": "dense", "outside": "moe"}                the first N layers have one kind, the others another
  {"interval": "moe_layer_interval",
   "start": "moe_layer_start_index",
   "end": "moe_layer_end_index",
   "inside": "moe", "outside": "dense"}               layer i has the inside kind when (i + 1) % interval == 0
                                                       and start <= i <= end (ERNIE 4.5 MoE; end -1: the last
                                                       layer), the others the outside kind
  {"periods": [{"period": "attn_layer_period",
                "offset": "attn_layer_offset",
                "inside": "attention", "outside": "mamba"},
               {"period": "expert_layer_period", ...}]}  layer i has a part of each partition: its inside kind when
                                                       i % period == offset, else its outside kind (Jamba: a mixer,
                                                       attention or mamba, and an MLP, moe or dense); the block's kind
                                                       is its parts joined by "/" ("mamba/moe")
  {"lists": [{"list": "layer_types", "values": {...}},
             {"list": "mlp_layer_types", "values": {...}}]}  one entry per layer in each list, translated: a block's
                                                       kind is its parts joined by "/" ("csa/hash": DeepSeek-V4's
                                                       attention and MLP kinds)

and a tensor rule with ``"layers": [kinds]`` exists only in layers of those kinds (for periods and lists: in layers that
have one of those parts). A list may name, with
``"indices_too": {"key": "full_attn_idxs", "kind": "attention"}``, an older key that repeats the layers of one kind
as indices (LFM2): where the config states it, it is rewritten with the list; a list of such objects names several,
each with an optional ``"base"`` (1: the indices count from 1, as Kimi Linear's linear_attn_config.full_attn_layers
and kda_layers do; a key with dots reaches into a nested config). Under depth growth every new
block has its source block's kind, and the config is rewritten in the same encoding; a layout the encoding cannot
say (stacked copies that break a dense prefix, a copied layer that breaks an interval) is refused in one line.
Periods and cycles are the strictest encodings (one inserted block shifts every later one): an identity block computes
the identity whatever its kind, so there each identity block may take the kind, and copy the weights of a source block
of the kind, that keeps every partition periodic or the cycle going (fit_identity_blocks); the plan's notes say which
blocks did.
Pure functions: nothing here reads files.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product
from typing import Any

from hyperclone.common.errors import HyperCloneError
from hyperclone.grow.config_lookup import config_value

ENCODINGS = ("list", "pattern", "indices", "prefix", "interval", "periods", "lists", "cycle")
TRANSLATED = ("list", "pattern", "cycle")  # encodings whose entries values translate
PERIOD_KEYS = {"period", "offset", "inside", "outside"}
TWO_KINDS = ("indices", "prefix", "interval")  # encodings that name one inside and one outside kind


@dataclass(frozen=True)
class LayerKinds:
    encoding: str  # one of ENCODINGS
    key: str  # the config key that holds it
    values: tuple[tuple[Any, str], ...] = ()  # list / pattern / cycle: config value -> kind (empty: value is kind)
    inside: str = ""  # indices / prefix / interval: the kind of the layers named
    outside: str = ""  # ... and of the others
    indices_too: tuple[tuple[str, str, int], ...] = ()  # list: (config key, kind, base) of keys listing a kind's layers
    bounds: tuple[str, str] | None = None  # interval: the config keys of the first and last index it may hold
    periods: tuple[tuple[str, str, str, str], ...] = ()  # periods: (period key, offset key, inside, outside) each
    lists: tuple[LayerKinds, ...] = ()  # lists: one "list" encoding per part of a block's kind

    @property
    def kinds(self) -> tuple[str, ...] | None:
        """Every kind this encoding can name (None: any value of a list is a kind of its own)."""
        if self.encoding in TWO_KINDS:
            return (self.inside, self.outside)
        if self.encoding == "periods":  # the parts a rule may name
            return tuple(kind for _, _, inside, outside in self.periods for kind in (inside, outside))
        if self.encoding == "lists":
            return tuple(kind for part in self.lists for kind in part.kinds)
        return tuple(dict.fromkeys(kind for _, kind in self.values)) or None


def parse_layer_kinds(family: str, raw: Any) -> LayerKinds:
    """A family table's ``layer_kinds`` object; a malformed one is a ValueError when the tables load."""
    encodings = [e for e in ENCODINGS if isinstance(raw, dict) and e in raw]
    if encodings == ["periods"]:
        return _parse_periods(family, raw)
    if encodings == ["lists"]:
        return _parse_lists(family, raw)
    if len(encodings) != 1 or not isinstance(raw[encodings[0]], str):
        raise ValueError(f"family {family}: layer_kinds must name exactly one of {', '.join(ENCODINGS)} with its "
                         "config key")
    encoding = encodings[0]
    allowed = {encoding, "values"} if encoding in TRANSLATED else {encoding, "inside", "outside"}
    allowed |= {"indices_too"} if encoding == "list" else set()
    allowed |= {"start", "end"} if encoding == "interval" else set()
    if set(raw) - allowed:
        raise ValueError(f"family {family}: layer_kinds {encoding} takes {sorted(allowed)}, not "
                         f"{sorted(set(raw) - allowed)}")
    values = raw.get("values", {})
    if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
        raise ValueError(f"family {family}: layer_kinds values must map config values to kind names")
    if encoding == "pattern" and (not values or any(len(k) != 1 for k in values)):
        raise ValueError(f"family {family}: layer_kinds pattern needs values for single characters")
    if encoding in TWO_KINDS and not (isinstance(raw.get("inside"), str) and isinstance(raw.get("outside"), str)):
        raise ValueError(f"family {family}: layer_kinds {encoding} needs inside and outside kinds")
    if encoding == "interval" and not all(isinstance(raw.get(k), str) for k in ("start", "end")):
        raise ValueError(f"family {family}: layer_kinds interval needs the start and end config keys")
    also = raw.get("indices_too", [])
    also = [also] if isinstance(also, dict) else also
    if not isinstance(also, list) or not all(
            isinstance(a, dict) and {"key", "kind"} <= set(a) <= {"key", "kind", "base"}
            and isinstance(a["key"], str) and isinstance(a["kind"], str) and a.get("base", 0) in (0, 1) for a in also):
        raise ValueError(f"family {family}: layer_kinds indices_too must be {{key, kind}} (and base 0 or 1), or a list "
                         "of them")
    return LayerKinds(encoding, raw[encoding], tuple(values.items()), raw.get("inside", ""), raw.get("outside", ""),
                      tuple((a["key"], a["kind"], int(a.get("base", 0))) for a in also),
                      (raw["start"], raw["end"]) if encoding == "interval" else None)


def _parse_periods(family: str, raw: dict) -> LayerKinds:
    entries = raw["periods"]
    if set(raw) != {"periods"} or not isinstance(entries, list) or not entries or not all(
            isinstance(e, dict) and set(e) == PERIOD_KEYS and all(isinstance(v, str) for v in e.values())
            for e in entries):
        raise ValueError(f"family {family}: layer_kinds periods must be a list of {{{', '.join(sorted(PERIOD_KEYS))}}}")
    parts = [kind for e in entries for kind in (e["inside"], e["outside"])]
    if len(set(parts)) != len(parts) or any("/" in kind for kind in parts):
        raise ValueError(f"family {family}: layer_kinds periods need distinct kinds without '/'")
    periods = tuple((e["period"], e["offset"], e["inside"], e["outside"]) for e in entries)
    return LayerKinds("periods", entries[0]["period"], periods=periods)


def _parse_lists(family: str, raw: dict) -> LayerKinds:
    """Several per-layer lists, each translated by its own values: a block's kind joins one part from each."""
    entries = raw["lists"]
    if set(raw) != {"lists"} or not isinstance(entries, list) or len(entries) < 2 or not all(
            isinstance(e, dict) and set(e) == {"list", "values"} and isinstance(e["list"], str)
            and isinstance(e["values"], dict) and e["values"] for e in entries):
        raise ValueError(f"family {family}: layer_kinds lists must be a list of at least two {{list, values}}")
    lists = tuple(parse_layer_kinds(family, e) for e in entries)
    parts = [kind for part in lists for kind in dict.fromkeys(part.kinds)]
    if len(set(parts)) != len(parts) or any("/" in kind for kind in parts):
        raise ValueError(f"family {family}: layer_kinds lists need distinct kinds without '/'")
    return LayerKinds("lists", lists[0].key, lists=lists)


def has_part(kind: str, wanted: tuple[str, ...]) -> bool:
    """Whether a block of `kind` holds a tensor rule for the kinds `wanted` (a periods or lists kind: any of its
    parts)."""
    return kind in wanted or any(part in wanted for part in kind.split("/"))


def _translated(table: dict[Any, str], entry: Any) -> str | None:
    """The kind a list entry names: by the entry, or an integer by its spelling as a JSON key (None: not described)."""
    if entry in table:
        return table[entry]
    return table.get(str(entry)) if isinstance(entry, int) and not isinstance(entry, bool) else None


def read_layer_kinds(spec: LayerKinds, config: Any, layers: int) -> tuple[str, ...]:
    """The kind of every block of a source checkpoint, or a one-line refusal when the config cannot say it."""
    if spec.encoding == "lists":
        parts = [read_layer_kinds(part, config, layers) for part in spec.lists]
        return tuple("/".join(kinds) for kinds in zip(*parts, strict=True))
    value = getattr(config, spec.key, None)
    where = f"config.json: {spec.key}"
    if spec.encoding in TRANSLATED:
        shaped = isinstance(value, str) if spec.encoding == "pattern" else isinstance(value, (list, tuple))
        entries = list(value) if shaped else None
        if spec.encoding == "cycle" and entries:  # repeated over the layers (RecurrentGemma's block_types)
            entries = [entries[i % len(entries)] for i in range(layers)]
        if entries is None or len(entries) != layers:
            raise HyperCloneError(f"{where} must give one entry per layer ({layers}), got {value!r}")
        table = dict(spec.values)
        if not table:
            return tuple(str(entry) for entry in entries)
        unknown = next((entry for entry in entries if _translated(table, entry) is None), None)
        if unknown is not None:
            raise HyperCloneError(f"{where}: layer kind {unknown!r} is not described (known: "
                                  f"{', '.join(map(repr, table))})")
        return tuple(_translated(table, entry) for entry in entries)
    if spec.encoding == "indices":
        named = [] if value is None else value
        if not isinstance(named, (list, tuple)) or any(
                isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < layers for i in named):
            raise HyperCloneError(f"{where} must list layer indices from 0 to {layers - 1}, got {value!r}")
        return tuple(spec.inside if i in set(named) else spec.outside for i in range(layers))
    if spec.encoding == "interval":
        return _interval_kinds(spec, _read_interval(spec, config, layers), layers)
    if spec.encoding == "periods":
        flags = [_period_flags(_read_period(config, entry), layers) for entry in spec.periods]
        return tuple("/".join(entry[2] if f[i] else entry[3] for entry, f in zip(spec.periods, flags, strict=True))
                     for i in range(layers))
    count = 0 if value is None else value
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= layers:
        raise HyperCloneError(f"{where} must be a layer count from 0 to {layers}, got {value!r}")
    return tuple(spec.inside if i < count else spec.outside for i in range(layers))


def write_layer_kinds(spec: LayerKinds, config: Any, kinds: tuple[str, ...],
                      source_layers: int | None = None) -> dict[str, Any]:
    """The config update that says `kinds` (the grown model's blocks) in the source config's own encoding
    (`source_layers`: the source's layer count, which an interval's end of -1 or past the end refers to; by
    default the grown count)."""
    if spec.encoding in TRANSLATED:
        source = getattr(config, spec.key)
        back: dict[str, Any] = {}
        for entry in source:  # the source's own spelling of each kind (first one wins)
            kind = (_translated(dict(spec.values), entry) or entry) if spec.values else str(entry)
            back.setdefault(kind, entry)
        entries = [back[kind] for kind in kinds]
        if spec.encoding == "cycle" and entries == [source[i % len(source)] for i in range(len(entries))]:
            entries = list(source)  # the source's cycle still says the layers
        updates = {spec.key: "".join(entries) if spec.encoding == "pattern" else entries}
        moved = len(kinds) != len(source)  # (the same layers: the key, if stated, still holds)
        for key, named, base in spec.indices_too if moved else ():
            if config_value(config, key) is not None:
                updates[key] = [i + base for i, kind in enumerate(kinds) if kind == named]
        return updates
    if spec.encoding == "indices":
        return {spec.key: [i for i, kind in enumerate(kinds) if kind == spec.inside]}
    if spec.encoding == "interval":
        return _write_interval(spec, config, kinds, len(kinds) if source_layers is None else source_layers)
    if spec.encoding == "periods":
        return _write_periods(spec, config, kinds)
    if spec.encoding == "lists":
        return {key: value for n, part in enumerate(spec.lists) for key, value in write_layer_kinds(
            part, config, tuple(kind.split("/")[n] for kind in kinds), source_layers).items()}
    count = sum(kind == spec.inside for kind in kinds)
    if any(kind == spec.inside for kind in kinds[count:]):
        raise HyperCloneError(f"{spec.key}: the grown layers would put {spec.inside} blocks after "
                              f"{spec.outside} ones, which {spec.key} cannot say; insert the new layers with "
                              "--depth-mode identity")
    return {spec.key: count}


def _read_interval(spec: LayerKinds, config: Any, layers: int) -> tuple[int, int, int]:
    """(start, end, interval) as the config states them; an end of -1 is the last layer (as transformers reads it)."""
    assert spec.bounds is not None
    keys = (*spec.bounds, spec.key)
    values = [getattr(config, key, None) for key in keys]
    for key, value in zip(keys, values, strict=True):
        if isinstance(value, bool) or not isinstance(value, int) or (key == spec.key and value < 1):
            least = "a positive integer" if key == spec.key else "an integer"
            raise HyperCloneError(f"config.json: {key} must be {least}, got {value!r}")
    start, end, interval = values
    return start, layers - 1 if end == -1 else end, interval


def _interval_kinds(spec: LayerKinds, bounds: tuple[int, int, int], layers: int) -> tuple[str, ...]:
    start, end, interval = bounds
    return tuple(spec.inside if (i + 1) % interval == 0 and start <= i <= end else spec.outside
                 for i in range(layers))


def _write_interval(spec: LayerKinds, config: Any, kinds: tuple[str, ...], source_layers: int) -> dict[str, Any]:
    """The start, end and interval that say `kinds`, the source's own values first (its end, when it reached its
    last layer, moved to the grown last layer), or a one-line refusal when none can."""
    assert spec.bounds is not None
    layers = len(kinds)
    start, end, interval = _read_interval(spec, config, source_layers)
    inside = [i for i, kind in enumerate(kinds) if kind == spec.inside]
    starts = dict.fromkeys([start, *inside[:1], layers])
    ends = dict.fromkeys([layers - 1 if end >= source_layers - 1 else end, *inside[-1:], layers - 1])
    for step in dict.fromkeys([interval, *range(1, layers + 1)]):
        for first in starts:
            for final in ends:
                if _interval_kinds(spec, (first, final, step), layers) == kinds:
                    return {spec.bounds[0]: first, spec.bounds[1]: final, spec.key: step}
    raise HyperCloneError(f"{spec.bounds[0]}/{spec.bounds[1]}/{spec.key}: the grown layers would put {spec.inside} "
                          f"blocks at {', '.join(map(str, inside))} of {layers}, which a start index, an end index "
                          "and an interval cannot say; insert identity layers where they keep the pattern "
                          "(--insert-after) or grow only the width")


def _read_period(config: Any, entry: tuple[str, str, str, str]) -> tuple[int, int]:
    """(period, offset) as the config states them: a positive period, an offset below it."""
    period_key, offset_key = entry[:2]
    period, offset = getattr(config, period_key, None), getattr(config, offset_key, None)
    if isinstance(period, bool) or not isinstance(period, int) or period < 1:
        raise HyperCloneError(f"config.json: {period_key} must be a positive integer, got {period!r}")
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset < period:
        raise HyperCloneError(f"config.json: {offset_key} must be an integer from 0 to {period - 1}, got {offset!r}")
    return period, offset


def _period_flags(period_offset: tuple[int, int], layers: int) -> list[bool]:
    period, offset = period_offset
    return [i % period == offset for i in range(layers)]


def _periods_saying(wanted: list[bool | None], first: tuple[int, int]) -> list[tuple[int, int]]:
    """Every (period, offset) whose layers of the inside kind are the True entries of `wanted` (None: either), the
    source's own first, then by period: a period longer than the stack names at most one layer, or none."""
    layers = len(wanted)
    candidates = [first, *((p, o) for p in range(1, layers + 2) for o in range(p))]
    return [c for c in dict.fromkeys(candidates)
            if all(w is None or w == f for w, f in zip(wanted, _period_flags(c, layers), strict=True))]


def _write_periods(spec: LayerKinds, config: Any, kinds: tuple[str, ...]) -> dict[str, Any]:
    updates: dict[str, Any] = {}
    for n, entry in enumerate(spec.periods):
        period_key, offset_key, inside, _ = entry
        wanted: list[bool | None] = [kind.split("/")[n] == inside for kind in kinds]
        found = _periods_saying(wanted, _read_period(config, entry))
        if not found:
            where = ", ".join(str(i) for i, flag in enumerate(wanted) if flag)
            raise HyperCloneError(f"{period_key}/{offset_key}: the grown layers would put {inside} blocks at {where} "
                                  f"of {len(kinds)}, which a period and an offset cannot say; insert whole periods "
                                  "of identity layers (--insert-after) or grow only the width")
        updates[period_key], updates[offset_key] = found[0]
    return updates


def cycle_insert_after(spec: LayerKinds | None, config: Any, old: int, new: int) -> tuple[int, ...] | None:
    """Cycle only: the source layers identity blocks follow so that the source's cycle still says the grown layers
    (every source layer moves by whole cycles): whole cycles spread evenly over the source's cycle boundaries (after
    layers period - 1, 2 * period - 1, ...), the blocks that make no whole cycle after the last layer; each takes
    the kind the cycle needs where it lands (fit_identity_blocks). None for other encodings or no new layer."""
    if spec is None or spec.encoding != "cycle" or new <= old:
        return None
    period = len(getattr(config, spec.key))
    whole, rest = divmod(new - old, period)
    boundaries = old // period
    after = [(max(1, round((t + 1) * boundaries / (whole + 1))) * period - 1 if boundaries else old - 1)
             for t in range(whole) for _ in range(period)]
    return tuple(after + [old - 1] * rest)


def fit_identity_blocks(spec: LayerKinds | None, config: Any, kinds: tuple[str, ...],
                        layers: list[tuple[int, bool]]) -> tuple[list[tuple[int, bool]], list[int]]:
    """Periods and cycles: the layer plan with every identity block's source chosen so that each partition stays
    periodic (the cycle goes on), and the grown positions whose source changed. An identity block computes the
    identity whatever its kind; it takes a source block of the kind needed there (periods: the first such; a cycle:
    the nearest at or before the one it follows), its weights copied, its residual writers zeroed. The plan as given
    where it already fits, or where nothing does (write_layer_kinds refuses, or writes a cycle out per layer)."""
    if spec is None or spec.encoding not in ("periods", "cycle") or not any(identity for _, identity in layers):
        return layers, []
    if spec.encoding == "cycle":
        return _fit_cycle(spec, config, kinds, layers)
    as_planned = tuple(kinds[src] for src, _ in layers)
    if all(_periods_saying([kind.split("/")[n] == entry[2] for kind in as_planned], _read_period(config, entry))
           for n, entry in enumerate(spec.periods)):
        return layers, []
    fixed: list[str | None] = [None if identity else kinds[src] for src, identity in layers]
    options = []
    for n, entry in enumerate(spec.periods):
        wanted = [None if kind is None else kind.split("/")[n] == entry[2] for kind in fixed]
        options.append(_periods_saying(wanted, _read_period(config, entry)))
    first_of = {}
    for index, kind in enumerate(kinds):
        first_of.setdefault(kind, index)
    grown = len(layers)
    for choice in product(*options):
        flags = [_period_flags(c, grown) for c in choice]
        needed = ["/".join(e[2] if f[i] else e[3] for e, f in zip(spec.periods, flags, strict=True))
                  for i in range(grown)]
        if all(needed[i] in first_of for i, kind in enumerate(fixed) if kind is None):
            fitted = [(first_of[needed[i]], True) if identity else (src, False)
                      for i, (src, identity) in enumerate(layers)]
            return fitted, [i for i, (a, b) in enumerate(zip(layers, fitted, strict=True)) if a != b]
    return layers, []


def _fit_cycle(spec: LayerKinds, config: Any, kinds: tuple[str, ...],
               layers: list[tuple[int, bool]]) -> tuple[list[tuple[int, bool]], list[int]]:
    needed = read_layer_kinds(spec, config, len(layers))  # the source's cycle over the grown layers
    if any(not identity and kinds[src] != needed[i] for i, (src, identity) in enumerate(layers)):
        return layers, []  # source layers moved off the cycle (--insert-after): the kinds are written out per layer
    if any(identity and needed[i] not in kinds for i, (_, identity) in enumerate(layers)):
        return layers, []  # no source layer of a kind the cycle needs: the kinds are written out per layer
    fitted = [(_nearest([j for j, kind in enumerate(kinds) if kind == needed[i]], src), True)
              if identity and kinds[src] != needed[i] else (src, identity) for i, (src, identity) in enumerate(layers)]
    return fitted, [i for i, (a, b) in enumerate(zip(layers, fitted, strict=True)) if a != b]


def _nearest(chosen: list[int], src: int) -> int:
    """The last of `chosen` (ascending source layers, not empty) at or before `src`, else the first."""
    return max((c for c in chosen if c <= src), default=chosen[0])


def copy_for_identity(rule: tuple[str, Any] | None, config: Any,
                      layers: list[tuple[int, bool]]) -> tuple[list[tuple[int, bool]], list[int]]:
    """A table's identity_copies (per-layer list key, entry): the layer plan with every identity block after the first
    layer copying the nearest source layer at or before the one it follows whose entry in that list is the entry (the
    first such layer where none precedes it), and the grown positions whose source changed; the plan as given where
    the rule is absent or no source layer has the entry."""
    entries = config_value(config, rule[0]) if rule is not None else None
    chosen = [i for i, entry in enumerate(entries or ()) if rule is not None and entry == rule[1]]
    if not chosen:
        return layers, []
    leading = next((i for i, (_, identity) in enumerate(layers) if not identity), len(layers))
    fitted = [(_nearest(chosen, src), True) if identity and i > leading else (src, identity)
              for i, (src, identity) in enumerate(layers)]
    return fitted, [i for i, (a, b) in enumerate(zip(layers, fitted, strict=True)) if a != b]


def copy_kind_for_identity(family: str, kind: str, kinds: tuple[str, ...], layers: list[tuple[int, bool]]
                           ) -> tuple[list[tuple[int, bool]], list[int]]:
    """A table's identity_kind: the layer plan with every identity block copying the nearest source layer of that kind
    at or before its source (the first such layer where none precedes it), and the grown positions whose source
    changed; refused in one line where the source has no layer of that kind and a block must be an identity."""
    chosen = [i for i, own in enumerate(kinds) if own == kind]
    if not any(identity for _, identity in layers):
        return layers, []
    if not chosen:
        raise HyperCloneError(f"{family}: new layers are identity copies of a {kind} layer, and the source has none; "
                              "grow only the width")
    fitted = [(_nearest(chosen, src), True) if identity else (src, identity) for src, identity in layers]
    return fitted, [i for i, (a, b) in enumerate(zip(layers, fitted, strict=True)) if a != b]
