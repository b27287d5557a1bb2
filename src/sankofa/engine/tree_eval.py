"""How flattened trees are evaluated for a whole batch: leaf codes, a walk, and paths.

Walking every tree one depth at a time costs several gathers per (row, tree,
depth). Small trees allow far less: a tree with at most 8 splits is decided
by its 8 split outcomes, which pack into one byte; a table per tree maps that
byte to the leaf (``LeafCodes``). Split outcomes are themselves cheap once
every input is *binned*: a split ``x <= t`` compares the input's bin (the
number of thresholds of that input below ``x``, one ``searchsorted`` per
input) with the threshold's index, an exact integer comparison. A batch then
costs one binning per input, one gather and comparison over (rows x 8 x
trees) small integers, one ``packbits`` and one table lookup, whatever the
depth. Trees with more splits fall back to ``walk``.

Contributions use each leaf's path, tabulated once: the inputs split on from
root to leaf and the change of node value at each step. With leaf codes they
are tabulated per (tree, input the tree splits on) and code, so a batch
gathers one number per such pair and sums them per input; walked trees use
``LeafPaths``, one entry per step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from sankofa.engine.trees import TreeArrays

FloatArray = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.intp]

#: Split outcomes packed per tree: one byte.
SLOTS: Final = 8
#: A padding slot compares against this threshold index: never exceeded.
_NEVER: Final = np.iinfo(np.uint16).max
#: Gathers the low bit of each of 8 bytes of a little-endian word into one byte:
#: (word * _PACK) >> 56 == sum(byte_j << j) for bytes that are 0 or 1.
_PACK: Final = np.uint64(0x0102040810204080)
_TOP_BYTE: Final = np.uint64(56)


def is_leaf(trees: TreeArrays) -> npt.NDArray[np.bool_]:
    index = np.arange(trees.value.shape[0])
    flags: npt.NDArray[np.bool_] = (trees.left == index) & (trees.right == index)
    return flags


def tree_of_nodes(trees: TreeArrays) -> IndexArray:
    """Which tree each node belongs to (nodes of a tree are reachable from its root only)."""
    owner = np.full(trees.value.shape[0], -1, dtype=np.intp)
    leaf = is_leaf(trees)
    for t, root in enumerate(trees.roots.tolist()):
        stack = [root]
        while stack:
            node = stack.pop()
            if owner[node] >= 0:
                continue
            owner[node] = t
            if not leaf[node]:
                stack += [int(trees.left[node]), int(trees.right[node])]
    return owner


def walk(trees: TreeArrays, z: FloatArray, depth: int) -> IndexArray:
    """Leaf of every (row, tree), one depth per round (any tree size)."""
    n, k = z.shape
    flat = np.ascontiguousarray(z).ravel()
    row_start = (np.arange(n, dtype=np.intp) * k)[:, None]
    node = np.broadcast_to(trees.roots, (n, trees.roots.shape[0]))
    for _ in range(depth):
        right = flat[row_start + trees.feature[node]] > trees.threshold[node]
        node = np.where(right, trees.right[node], trees.left[node])
    return np.asarray(node, dtype=np.intp)


@dataclass(frozen=True, slots=True)
class LeafCodes:
    """Binned inputs and one byte of split outcomes per tree (module docstring)."""

    bins: tuple[FloatArray, ...]  # per input: its sorted distinct thresholds
    used: IndexArray  # inputs that any split reads
    slot_input: IndexArray  # (trees * SLOTS,) input compared in each slot
    slot_bin: npt.NDArray[np.uint16]  # (trees * SLOTS,) threshold index of each slot
    leaf: IndexArray  # (trees * 256,) leaf node reached for each (tree, code)
    _tree_base: IndexArray  # (trees,) first table entry of each tree
    # Contributions: one entry per (tree, input it splits on), grouped by input.
    pair_tree: IndexArray  # (pairs,)
    pair_base: IndexArray  # (pairs,) first entry of the pair in ``pair_change``
    pair_change: FloatArray  # (pairs * 256,) summed value change on that input, per code
    input_start: IndexArray  # first pair of each input in ``inputs_with_pairs``
    inputs_with_pairs: IndexArray

    @classmethod
    def build(cls, trees: TreeArrays, n_inputs: int, depth: int) -> LeafCodes | None:
        """The tables, or None when a tree has more than ``SLOTS`` splits."""
        leaf = is_leaf(trees)
        owner = tree_of_nodes(trees)
        n_trees = trees.roots.shape[0]
        inner = np.flatnonzero(~leaf)
        per_tree = np.bincount(owner[inner], minlength=n_trees)
        if per_tree.max(initial=0) > SLOTS:
            return None
        bins = tuple(
            np.unique(trees.threshold[inner][trees.feature[inner] == k]) for k in range(n_inputs)
        )
        if max(b.shape[0] for b in bins) >= _NEVER:
            return None
        used = np.asarray([k for k in range(n_inputs) if bins[k].shape[0]], dtype=np.intp)
        slot_input = np.zeros(n_trees * SLOTS, dtype=np.intp)
        slot_bin = np.full(n_trees * SLOTS, _NEVER, dtype=np.uint16)
        slot_of = np.full(trees.value.shape[0], -1, dtype=np.intp)
        filled = np.zeros(n_trees, dtype=np.intp)
        for node in inner.tolist():
            t = int(owner[node])
            slot = t * SLOTS + int(filled[t])
            filled[t] += 1
            slot_of[node] = slot
            f = int(trees.feature[node])
            slot_input[slot] = f
            slot_bin[slot] = int(np.searchsorted(bins[f], trees.threshold[node]))
        # Walk all 256 codes of every tree at once: bit j of a code is slot j's outcome.
        codes = np.arange(256, dtype=np.intp)
        at = np.repeat(trees.roots[:, None], 256, axis=1)
        for _ in range(depth):
            position = slot_of[at] % SLOTS
            bit = (codes[None, :] >> position) & 1
            nxt = np.where(bit == 1, trees.right[at], trees.left[at])
            at = np.where(leaf[at], at, nxt)
        base = np.arange(n_trees, dtype=np.intp) * 256
        leaf_of_code = at.ravel().astype(np.intp)
        paths = LeafPaths.build(trees, depth)
        # Per (tree, input): the change credited to that input on the path of each code.
        change: dict[tuple[int, int], FloatArray] = {}
        for t in range(n_trees):
            reached = leaf_of_code[t * 256 : (t + 1) * 256]
            for d in range(paths.inputs.shape[1]):
                k_of_code = paths.inputs[reached, d]
                delta = paths.deltas[reached, d]
                for k in np.unique(k_of_code[delta != 0.0]).tolist():
                    table = change.setdefault((t, k), np.zeros(256))
                    table += np.where(k_of_code == k, delta, 0.0)
        pairs = sorted(change, key=lambda tk: (tk[1], tk[0]))
        pair_input = np.asarray([k for _, k in pairs], dtype=np.intp)
        inputs_with_pairs, input_start = np.unique(pair_input, return_index=True)
        return cls(
            bins,
            used,
            slot_input,
            slot_bin,
            leaf_of_code,
            base,
            np.asarray([t for t, _ in pairs], dtype=np.intp),
            np.arange(len(pairs), dtype=np.intp) * 256,
            np.concatenate([change[p] for p in pairs]) if pairs else np.zeros(0),
            input_start.astype(np.intp),
            inputs_with_pairs.astype(np.intp),
        )

    def contributions(self, codes: IndexArray, n_inputs: int) -> FloatArray:
        """(n, inputs) value changes per input, from the codes of ``codes_of``."""
        n = codes.shape[0]
        out = np.zeros((n, n_inputs), dtype=np.float64)
        if self.pair_tree.shape[0]:
            taken = self.pair_change[codes[:, self.pair_tree] + self.pair_base]
            out[:, self.inputs_with_pairs] = np.add.reduceat(taken, self.input_start, axis=1)
        return out

    def leaves(self, z: FloatArray) -> IndexArray:
        """Leaf node of every (row, tree)."""
        leaves: IndexArray = self.leaf[self.codes_of(z) + self._tree_base]
        return leaves

    def codes_of(self, z: FloatArray) -> IndexArray:
        """Code (0-255) of every (row, tree): its split outcomes, one bit each."""
        n = z.shape[0]
        binned = np.zeros((n, len(self.bins)), dtype=np.uint16)
        for k in self.used.tolist():
            binned[:, k] = np.searchsorted(self.bins[k], z[:, k], side="left")
        # Went right: more thresholds below x than the split's index, i.e. x > threshold.
        outcome = np.ascontiguousarray(binned[:, self.slot_input] > self.slot_bin)
        # A tree's 8 outcomes are 8 consecutive bytes: one little-endian word.
        words = outcome.view(np.uint8).view("<u8")
        codes: IndexArray = ((words * _PACK) >> _TOP_BYTE).astype(np.intp)
        return codes


@dataclass(frozen=True, slots=True)
class LeafPaths:
    """Per node (used for leaves): inputs split on from the root and the value changes."""

    inputs: IndexArray  # (nodes, depth)
    deltas: FloatArray  # (nodes, depth); 0 past the leaf's own depth

    @classmethod
    def build(cls, trees: TreeArrays, depth: int) -> LeafPaths:
        n = trees.value.shape[0]
        inputs = np.zeros((n, max(depth, 1)), dtype=np.intp)
        deltas = np.zeros((n, max(depth, 1)), dtype=np.float64)
        leaf = is_leaf(trees)
        for root in trees.roots.tolist():
            stack: list[tuple[int, list[tuple[int, float]]]] = [(root, [])]
            while stack:
                node, path = stack.pop()
                if leaf[node]:
                    for d, (k, change) in enumerate(path):
                        inputs[node, d], deltas[node, d] = k, change
                    continue
                f = int(trees.feature[node])
                for child in (int(trees.left[node]), int(trees.right[node])):
                    change = float(trees.value[child] - trees.value[node])
                    stack.append((child, [*path, (f, change)]))
        return cls(inputs, deltas)

    def contributions(self, leaves: IndexArray, n_inputs: int) -> FloatArray:
        """(n, inputs): each row's summed value changes per input over its trees' paths."""
        n = leaves.shape[0]
        slot = self.inputs[leaves]
        slot += (np.arange(n, dtype=np.intp) * n_inputs)[:, None, None]
        sums = np.bincount(
            slot.ravel(), weights=self.deltas[leaves].ravel(), minlength=n * n_inputs
        )
        return np.asarray(sums, dtype=np.float64).reshape(n, n_inputs)
