"""KV-shared last layers under depth growth (Gemma 4 E2B/E4B's num_kv_shared_layers: the family table's
``kv_shared_layers`` key).

The last N of L layers compute no keys or values: each reads those of its kind's reference, the last layer of its
kind before them (below F = L - N), which stores them (Gemma4TextConfig.kv_sharing_modes). An identity block keeps
the function where it changes neither a reference nor a reference's input:

* after source layer F - 1 or later it joins the shared block (N grows by one): it reads its kind's reference (its
  attention output is zeroed anyway) and copies a KV-shared layer, so that it has their tensors (no k_proj, v_proj,
  k_norm; Gemma 4's double-wide MLP): the layer it follows, or layer F where it follows layer F - 1;
* before that, after source layer a (-1: before the first), it has keys of its own, computed from its input: it must
  not be the last layer of its kind before the shared block, or the shared layers of that kind would read its keys.
  A copy of layer a is one where a is its kind's reference (the last of its kind before F): such a block copies layer
  F - 1 instead, the reference of its own kind, which it precedes (a plan note says so). Every position is exact.

Stacked copies (--depth-mode stack) would put copies of KV-shared layers, which have no keys of their own, before the
shared block: refused in one line. Pure functions: nothing here reads files.
"""

from __future__ import annotations

from hyperclone.common.errors import HyperCloneError


def reference_layers(kinds: tuple[str, ...] | None, layers: int, shared: int) -> dict[str, int]:
    """{kind: the source layer whose keys and values the KV-shared layers of that kind read}."""
    kinds = kinds or ("",) * layers
    return {kind: index for index, kind in enumerate(kinds[:layers - shared])}  # the last of each kind


def refuse_stacking(shared: int) -> None:
    if shared:
        raise HyperCloneError(f"--depth-mode stack with {shared} KV-shared last layers (num_kv_shared_layers): "
                              "stacked copies of them would have no keys of their own before the shared block; grow "
                              "depth with --depth-mode identity")


def share_new_layers(plan: list[tuple[int, bool]], kinds: tuple[str, ...] | None, layers: int, shared: int
                     ) -> tuple[list[tuple[int, bool]], int, list[int], list[int]]:
    """The layer plan (source layer, identity?) with every identity block after source layer F - 1 copying a
    KV-shared layer (layer F where it follows layer F - 1), every one that would follow its kind's reference copying
    layer F - 1, the grown number of KV-shared layers, and the grown positions of each group whose source changed."""
    if not shared:
        return plan, 0, [], []
    first, refs = layers - shared, reference_layers(kinds, layers, shared)
    kinds = kinds or ("",) * layers
    last_own = max((g for g, (src, identity) in enumerate(plan) if src == first - 1 and not identity), default=-1)
    fitted, follows = [], None  # follows: the source layer the block comes after (None: before the first)
    for g, (src, identity) in enumerate(plan):
        if identity and g > last_own and src < first:
            fitted.append((first, True))
        elif identity and follows is not None and refs[kinds[follows]] == follows < first - 1:
            fitted.append((first - 1, True))
        else:
            fitted.append((src, identity))
        follows = src if not identity else follows
    changed = [g for g, (a, b) in enumerate(zip(plan, fitted, strict=True)) if a != b]
    joined = [g for g in changed if fitted[g][0] == first]
    return fitted, len(plan) - last_own - 1, joined, [g for g in changed if g not in joined]
