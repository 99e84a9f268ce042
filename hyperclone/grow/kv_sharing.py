"""KV-shared last layers under depth growth (Gemma 4 E2B/E4B's num_kv_shared_layers: the family table's
``kv_shared_layers`` key).

The last N of L layers compute no keys or values: each reads those of its kind's reference, the last layer of its
kind before them (below F = L - N), which stores them (Gemma4TextConfig.kv_sharing_modes). An identity block keeps
the function where it changes neither a reference nor a reference's input:

* after source layer F - 1 or later it joins the shared block (N grows by one): it reads its kind's reference (its
  attention output is zeroed anyway) and copies a KV-shared layer, so that it has their tensors (no k_proj, v_proj,
  k_norm; Gemma 4's double-wide MLP): the layer it follows, or layer F where it follows layer F - 1;
* before that, after source layer a (-1: before the first), it is a layer of its kind k with keys of its own: allowed
  only before k's reference (a < ref_k); after it, it would become k's reference and the shared layers would read
  keys computed from another input. Explicit such positions are refused in one line naming the allowed ones; the
  default spread moves each to the nearest allowed position (the earlier one on a tie).

Stacked copies (--depth-mode stack) would put copies of KV-shared layers, which have no keys of their own, before the
shared block: refused in one line. Pure functions: nothing here reads files.
"""

from __future__ import annotations

from hyperclone.common.errors import HyperCloneError


def reference_layers(kinds: tuple[str, ...] | None, layers: int, shared: int) -> dict[str, int]:
    """{kind: the source layer whose keys and values the KV-shared layers of that kind read}."""
    kinds = kinds or ("",) * layers
    return {kind: index for index, kind in enumerate(kinds[:layers - shared])}  # the last of each kind


def allowed_positions(kinds: tuple[str, ...] | None, layers: int, shared: int) -> list[int]:
    """The source layers (-1: before the first) after which an identity block keeps every reference and its input."""
    if not shared:
        return list(range(-1, layers))
    first, refs = layers - shared, reference_layers(kinds, layers, shared)
    kinds = kinds or ("",) * layers
    return [a for a in range(-1, layers) if a >= first - 1 or a < refs[kinds[max(a, 0)]]]


def place_new_layers(kinds: tuple[str, ...] | None, layers: int, shared: int, after: tuple[int, ...],
                     given: bool) -> tuple[int, ...]:
    """The positions of the identity blocks: `after` where every one is allowed; else refused in one line where the
    positions were given (--insert-after), moved to the nearest allowed ones where they are the default spread."""
    allowed = allowed_positions(kinds, layers, shared)
    bad = sorted({a for a in after if a not in allowed})
    if not bad:
        return after
    if given:
        raise HyperCloneError(
            f"--insert-after {', '.join(map(str, bad))}: a new layer there would follow the last layer of its kind "
            f"before the {shared} KV-shared last layers (num_kv_shared_layers) and so compute the keys and values "
            f"they read from another input; new layers may follow source layers {', '.join(map(str, allowed))}")
    return tuple(min(allowed, key=lambda p: (abs(p - a), p)) for a in after)


def refuse_stacking(shared: int) -> None:
    if shared:
        raise HyperCloneError(f"--depth-mode stack with {shared} KV-shared last layers (num_kv_shared_layers): "
                              "stacked copies of them would have no keys of their own before the shared block; grow "
                              "depth with --depth-mode identity")


def share_new_layers(plan: list[tuple[int, bool]], layers: int, shared: int
                     ) -> tuple[list[tuple[int, bool]], int, list[int]]:
    """The layer plan (source layer, identity?) with every identity block after source layer F - 1 copying a
    KV-shared layer (layer F where it follows layer F - 1), the grown number of KV-shared layers, and the grown
    positions whose source changed."""
    if not shared:
        return plan, 0, []
    first = layers - shared
    last_own = max((g for g, (src, identity) in enumerate(plan) if src == first - 1 and not identity), default=-1)
    fitted = [(first, True) if g > last_own and identity and src < first else (src, identity)
              for g, (src, identity) in enumerate(plan)]
    moved = [g for g, (a, b) in enumerate(zip(plan, fitted, strict=True)) if a != b]
    return fitted, len(plan) - last_own - 1, moved
