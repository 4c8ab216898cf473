"""Multi-scale inference of the LBP method: a two-label Markov random field over the per-scale matted maps,
solved for its marginals by loopy belief propagation.

The S maps alpha (S, H, W) are first standardised together (zero mean, unit standard deviation over all scales).
Every pixel of every scale is a node with two labels, in focus and blurred; the node potentials are
``exp(-|1 - x|)`` (in focus) and ``exp(-|x|)`` (blurred) of its standardised value x; every node is linked to its
four neighbours in its scale and to the same pixel in the scales above and below, with potential 1 for equal
labels and ``exp(-beta)`` for different ones. Sum-product messages are updated in parallel (flooding schedule);
the result is each node's belief of being in focus.

This is the inference of the authors' released code for Yi & Eramian (TIP 2016), which produced the paper's
numbers; the paper writes the same couplings as an L1 energy.
"""
from __future__ import annotations

import numpy as np


def _message(cavity: np.ndarray, coupling: np.float32) -> np.ndarray:
    """Log-odds message sent across a two-label Potts edge by a node whose log-odds without the receiver is
    ``cavity``: 2 atanh(tanh(beta / 2) tanh(cavity / 2)), with ``coupling`` = tanh(beta / 2)."""
    return 2.0 * np.arctanh(coupling * np.tanh(0.5 * cavity))


def standardise(alpha: np.ndarray) -> np.ndarray:
    """``alpha`` minus its mean, divided by its standard deviation, over all values; all zeros when constant."""
    a = np.asarray(alpha, dtype=np.float64)
    std = float(a.std())
    if std <= 1e-12:
        return np.zeros(a.shape, dtype=np.float32)
    return ((a - a.mean()) / std).astype(np.float32)


def multiscale_beliefs(alpha: np.ndarray, beta: float = 0.5, n_iter: int = 100, tol: float = 1e-4) -> np.ndarray:
    """In-focus beliefs (S, H, W) float32 in [0, 1] of the multi-scale field of this module over the per-scale maps
    ``alpha`` (S, H, W). ``beta``: cost of a label change between linked nodes (0: no coupling, the beliefs are
    the node potentials alone); at most ``n_iter`` parallel message updates, fewer once no message moves by more
    than ``tol``. A constant ``alpha`` leaves the field nothing to weigh: the beliefs are that constant (all in
    focus when the matting fixed every pixel sharp, all blurred when it fixed every pixel blurred)."""
    x = standardise(alpha)
    if not x.any():
        return np.full(x.shape, np.clip(float(np.asarray(alpha).flat[0]), 0.0, 1.0), dtype=np.float32)
    unary = np.abs(x) - np.abs(1.0 - x)  # log(potential in focus / potential blurred)
    coupling = np.float32(np.tanh(0.5 * max(float(beta), 0.0)))
    # incoming messages, by the side they come from: previous / next along scale, row and column axes
    axes = (0, 1, 2)
    from_prev = [np.zeros_like(unary) for _ in axes]
    from_next = [np.zeros_like(unary) for _ in axes]
    if coupling > 0:
        for _ in range(int(n_iter)):
            total = unary + sum(from_prev) + sum(from_next)
            change = 0.0
            for ax in axes:
                n = unary.shape[ax]
                if n < 2:
                    continue
                head = [slice(None)] * 3
                tail = [slice(None)] * 3
                head[ax], tail[ax] = slice(0, n - 1), slice(1, n)
                head, tail = tuple(head), tuple(tail)
                # node i sends to i+1 everything it knows except what i+1 sent to it, and vice versa
                to_next = _message(total[head] - from_next[ax][head], coupling)
                to_prev = _message(total[tail] - from_prev[ax][tail], coupling)
                change = max(change, float(np.abs(to_next - from_prev[ax][tail]).max()),
                             float(np.abs(to_prev - from_next[ax][head]).max()))
                from_prev[ax][tail] = to_next
                from_next[ax][head] = to_prev
            if change < tol:
                break
    total = unary + sum(from_prev) + sum(from_next)
    return (1.0 / (1.0 + np.exp(-total))).astype(np.float32)
