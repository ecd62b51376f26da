"""Memory planning: where each buffer lives in one arena, so buffers whose lifetimes do not overlap share memory.

Buffer sizes depend on the batch size, so the layout is computed once per set of sizes,
at run time, from each buffer's size and lifetime (the first and last top-level step that
touch it). Part of the support package generated modules import: it needs only NumPy.
"""

import numpy as np

__all__ = ["plan_layout"]  # what generated code names


def plan_layout(sizes, lifetimes):
    """Offsets (in elements, 16-element aligned) for buffers of `sizes` live over `lifetimes` [(first, last)].

    Largest first, each at the lowest offset that no buffer live at the same time occupies.
    """
    offsets = np.zeros(len(sizes), np.int64)
    placed = []  # (offset, end, first, last)
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        first, last = lifetimes[i]
        size = -(-max(sizes[i], 1) // 16) * 16
        busy = sorted((start, end) for start, end, born, dies in placed if born <= last and first <= dies)
        offset = 0
        for start, end in busy:
            if offset + size <= start:
                break
            offset = max(offset, end)
        offsets[i] = offset
        placed.append((offset, offset + size, first, last))
    total = max((end for _, end, _, _ in placed), default=0)
    return offsets, total
