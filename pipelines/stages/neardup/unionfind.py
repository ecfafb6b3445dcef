"""Connected components of an edge list, vectorised: union-find with hooking by minimum and path halving done
for all nodes at once (numpy), so millions of edges cost a few passes rather than a Python loop per edge."""

from __future__ import annotations

import numpy as np


def components(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(nodes, label): every node that appears in an edge (sorted) and the smallest node of its component."""
    nodes = np.unique(np.concatenate((a, b)))
    u, v = np.searchsorted(nodes, a), np.searchsorted(nodes, b)
    parent = np.arange(len(nodes), dtype=np.int64)
    while True:
        ru, rv = parent[u], parent[v]
        differ = ru != rv
        if not differ.any():
            break
        ru, rv = ru[differ], rv[differ]
        # Hook the larger root under the smaller one; np.minimum.at resolves several hooks on one root.
        np.minimum.at(parent, np.maximum(ru, rv), np.minimum(ru, rv))
        while True:  # compress every path to its root
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
        u, v = u[differ], v[differ]
    return nodes, nodes[parent]
