"""How flattened trees are evaluated for a whole batch: leaf codes, a walk, and paths.

Walking every tree one depth at a time costs several gathers per (row, tree,
depth). Small trees allow far less: a tree with at most 8 splits is decided
by its 8 split outcomes, which pack into one byte; a table per tree maps that
byte to the leaf (``LeafCodes``). Split outcomes are themselves cheap once
every input is *binned*: a split ``x <= t`` compares the input's bin (the
number of thresholds of that input below ``x``, one ``searchsorted`` per
input) with the threshold's index, an exact integer comparison. Better still,
the outcomes of *every* split on one input are fixed by that input's bin: a
table per input maps each bin to the bits it sets in every tree's code, so a
row's codes for all trees are the OR of one table row per input, 8 trees to a
64-bit word. Trees with more splits fall back to ``walk``.

Contributions use each leaf's path, tabulated once: the inputs split on from
root to leaf and the change of node value at each step. With leaf codes they
are tabulated per (tree, input the tree splits on) and code, so a batch
gathers one number per such pair and sums them per input, pairs laid out
along rows so that gathering a tree's codes and summing an input's pairs are
whole-row operations; walked trees use ``LeafPaths``, one entry per step.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from sankofa.engine.trees import TreeArrays

FloatArray = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.intp]

#: Split outcomes packed per tree: one byte.
SLOTS: Final = 8
#: Thresholds one input may have: its bin is counted in one byte.
_MOST_THRESHOLDS: Final = 255
_add_reduce = np.add.reduce
#: The byte of an index that holds its low 8 bits.
_LOW_BYTE: Final = 0 if sys.byteorder == "little" else 7


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
    leaf: IndexArray  # (trees * 256,) leaf node reached for each (tree, code)
    _tree_base: IndexArray  # (trees,) first table entry of each tree
    # Codes: per used input, one row per bin of 64-bit words, 8 trees a word: the
    # code bits that bin sets (the splits on that input that go right).
    or_table: npt.NDArray[np.uint64]  # (sum of (bins + 1) over used inputs, words)
    or_offset: IndexArray  # (used,) first row of each used input in ``or_table``
    padded_bins: FloatArray  # (most thresholds, used): each used input's, then +inf
    # Contributions: one entry per (tree, input it splits on), grouped by input.
    pair_tree: IndexArray  # (pairs,)
    pair_base: IndexArray  # (pairs,) first entry of the pair in ``pair_change``
    pair_change: FloatArray  # (pairs * 256,) summed value change on that input, per code
    input_start: IndexArray  # first pair of each input in ``inputs_with_pairs``
    inputs_with_pairs: IndexArray
    _scratch: threading.local = field(default_factory=threading.local, compare=False)

    @classmethod
    def build(cls, trees: TreeArrays, n_inputs: int, depth: int) -> LeafCodes | None:
        """The tables, or None when a tree has more than ``SLOTS`` splits or an input
        more than ``_MOST_THRESHOLDS`` thresholds."""
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
        if max(b.shape[0] for b in bins) > _MOST_THRESHOLDS:
            return None
        used = np.asarray([k for k in range(n_inputs) if bins[k].shape[0]], dtype=np.intp)
        slot_of = np.full(trees.value.shape[0], -1, dtype=np.intp)
        filled = np.zeros(n_trees, dtype=np.intp)
        words = (n_trees + SLOTS - 1) // SLOTS
        # Per input, per bin: the code bits set in each tree (one byte per tree).
        bits = {int(k): np.zeros((bins[k].shape[0] + 1, words * 8), np.uint8) for k in used}
        for node in inner.tolist():
            t = int(owner[node])
            slot = int(filled[t])
            filled[t] += 1
            slot_of[node] = t * SLOTS + slot
            f = int(trees.feature[node])
            # Went right: x > threshold, i.e. more thresholds below x than its index.
            index = int(np.searchsorted(bins[f], trees.threshold[node]))
            bits[f][index + 1 :, t] |= np.uint8(1 << slot)
        tables = [bits[int(k)] for k in used]
        or_table = (
            np.ascontiguousarray(np.concatenate(tables)).view(np.uint64)
            if tables
            else np.zeros((1, words), np.uint64)
        )
        sizes = np.asarray([t.shape[0] for t in tables], dtype=np.intp)
        or_offset = (np.cumsum(sizes) - sizes).astype(np.intp)
        widest = max((bins[k].shape[0] for k in used.tolist()), default=0)
        padded_bins = np.full((widest, used.shape[0]), np.inf)
        for j, k in enumerate(used.tolist()):
            padded_bins[: bins[k].shape[0], j] = bins[k]
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
            leaf_of_code,
            base,
            or_table,
            or_offset,
            padded_bins,
            np.asarray([t for t, _ in pairs], dtype=np.intp),
            np.arange(len(pairs), dtype=np.intp) * 256,
            np.concatenate([change[p] for p in pairs]) if pairs else np.zeros(0),
            input_start.astype(np.intp),
            inputs_with_pairs.astype(np.intp),
        )

    @property
    def n_trees(self) -> int:
        return int(self._tree_base.shape[0])

    def leaves(self, z: FloatArray) -> IndexArray:
        """Leaf node of every (row, tree)."""
        leaves: IndexArray = self.leaf[self.codes_of(z) + self._tree_base]
        return leaves

    def codes_of(self, z: FloatArray) -> IndexArray:
        """Code (0-255) of every (row, tree): its split outcomes, one bit each."""
        codes: IndexArray = self._code_bytes(z).astype(np.intp)
        return codes

    def _code_bytes(self, z: FloatArray) -> npt.NDArray[np.uint8]:
        """(n, trees) codes as bytes: per input, its bin's row of bits, ORed.

        A bin is the number of the input's thresholds below the value, counted
        by one broadcast comparison for all inputs (thresholds padded with
        infinity) rather than a ``searchsorted`` per input: a few array calls
        per batch, whatever its size. Inputs are finite (``inputs``).
        """
        values = z[:, self.used].T  # (used, n)
        below = (values[None] > self.padded_bins[:, :, None]).view(np.uint8)
        at = np.add.reduce(below, axis=0, dtype=np.uint8) + self.or_offset[:, None]
        words = np.bitwise_or.reduce(self.or_table[at], axis=0)  # (n, words)
        codes: npt.NDArray[np.uint8] = words.view(np.uint8)[:, : self.n_trees]
        return codes

    def contributions(self, codes: IndexArray, n_inputs: int) -> FloatArray:
        """(n, inputs) value changes per input, from the codes of ``codes_of``."""
        n = codes.shape[0]
        out = np.zeros((n, n_inputs), dtype=np.float64)
        if self.pair_tree.shape[0]:
            taken = self.pair_change[codes[:, self.pair_tree] + self.pair_base]
            out[:, self.inputs_with_pairs] = np.add.reduceat(taken, self.input_start, axis=1)
        return out

    def evaluate(self, z: FloatArray, n_inputs: int) -> tuple[FloatArray, FloatArray]:
        """Per row: the summed change from the roots' values (the margin less the
        bias) and its split per input (n, inputs), for a block of model inputs.

        The hot path. Pairs run along rows: a tree's codes for the block are one
        row, so gathering them per pair is a copy of whole rows, written into the
        low byte of indices whose upper bytes already hold the pair's table base
        (bases are multiples of 256); an input's pairs are consecutive rows, summed
        with row adds. Every row's sums are taken in the same order whatever the
        block's width (a width of 1 is padded to 2: a one-column sum would be
        pairwise), so a row scores the same alone or in any batch.
        """
        n = z.shape[0]
        if n == 1:
            z = np.concatenate([z, z])
        m = z.shape[0]
        credit = np.zeros((n, n_inputs), dtype=np.float64)
        pairs = self.pair_tree.shape[0]
        if not pairs:
            return np.zeros(n), credit
        code_rows = self._code_bytes(z).T  # (trees, m) view
        block = self._block(m)
        block.low[...] = code_rows[self.pair_tree]
        np.take(self.pair_change, block.index, out=block.taken, mode="clip")
        for part, total in block.groups:
            _add_reduce(part, 0, None, out=total)
        credit[:, self.inputs_with_pairs] = block.sums[:, :n].T
        change: FloatArray = block.sums.sum(axis=0)[:n]
        return change, credit

    def _block(self, m: int) -> _Block:
        """This thread's scratch for a block of ``m`` rows, reused so that a batch
        allocates (and page-faults) nothing large; rebuilt (indices refilled with
        the pairs' bases) only when the block width changes."""
        local = self._scratch
        block: _Block | None = getattr(local, "block", None)
        if block is None or block.width != m:
            capacity = max(m, block.capacity if block is not None else 0)
            block = _Block(self.pair_base, self.input_start, m, capacity, block)
            local.block = block
        return block


class _Block:
    """Scratch arrays of ``LeafCodes.evaluate`` for one block width."""

    width: int
    capacity: int
    index: IndexArray
    low: npt.NDArray[np.uint8]
    taken: FloatArray
    sums: FloatArray
    groups: list[tuple[FloatArray, FloatArray]]
    _flat: tuple[IndexArray, FloatArray]

    __slots__ = ("_flat", "capacity", "groups", "index", "low", "sums", "taken", "width")

    def __init__(
        self,
        pair_base: IndexArray,
        input_start: IndexArray,
        width: int,
        capacity: int,
        previous: _Block | None,
    ) -> None:
        pairs = pair_base.shape[0]
        if previous is not None and previous.capacity >= capacity:
            flat = previous._flat
        else:
            flat = (np.empty(pairs * capacity, np.intp), np.empty(pairs * capacity, np.float64))
        self._flat = flat
        self.width, self.capacity = width, capacity
        self.index = flat[0][: pairs * width].reshape(pairs, width)
        self.index[...] = pair_base[:, None]
        self.low = self.index.view(np.uint8).reshape(pairs, width, 8)[:, :, _LOW_BYTE]
        self.taken = flat[1][: pairs * width].reshape(pairs, width)
        self.sums = np.empty((input_start.shape[0], width), np.float64)
        starts = input_start.tolist()
        ends = [*starts[1:], pairs]
        self.groups = [
            (self.taken[lo:hi], self.sums[j])
            for j, (lo, hi) in enumerate(zip(starts, ends, strict=True))
        ]


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
