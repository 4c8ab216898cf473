"""Multi-scale inference of a sharpness map: an L1 data term and L1 smoothness within and across scales.

Minimises over h (S, H, W)::

    sum_s sum_i |h_i^s - a_i^s|
      + beta * ( sum_s sum_i sum_{j in N4(i)} |h_i^s - h_j^s|  +  sum_{s<S} sum_i |h_i^s - h_i^{s+1}| )

(Yi & Eramian, TIP 2016). The double sum over i and its 4-neighbours j counts every in-scale edge
twice, so in-scale edges weigh 2*beta and cross-scale edges beta. The paper solves a discretised version with
loopy belief propagation; here the same convex energy is minimised over continuous h with the first-order
primal-dual algorithm of Chambolle & Pock (JMIV 2011), fully vectorised.
"""
from __future__ import annotations

import numpy as np


def multiscale_inference(alpha: np.ndarray, beta: float = 0.5, n_iter: int = 100) -> np.ndarray:
    """Jointly smooth the per-scale maps ``alpha`` (S, H, W) under the energy of this module; returns float32
    (S, H, W). ``beta`` weighs smoothness against fidelity; ``n_iter`` primal-dual iterations."""
    a = np.asarray(alpha, dtype=np.float32)
    if beta <= 0 or n_iter <= 0:
        return a.copy()
    w_xy, w_s = np.float32(2.0 * beta), np.float32(beta)
    # ||K||^2 <= 4 + 4 + 4 for forward differences along three axes.
    tau = sigma = np.float32(0.99 / np.sqrt(12.0))
    h = a.copy()
    h_bar = a.copy()
    # dual variables, one per edge; the last column / row / scale has no edge and stays 0
    px, py, ps = np.zeros_like(a), np.zeros_like(a), np.zeros_like(a)
    tmp = np.zeros_like(a)
    kt = np.empty_like(a)
    for _ in range(n_iter):
        # dual ascent step and projection onto |p| <= edge weight
        for p, axis, wmax in ((px, 2, w_xy), (py, 1, w_xy), (ps, 0, w_s)):
            n = a.shape[axis]
            if n < 2:
                continue
            lo = [slice(None)] * 3
            hi = [slice(None)] * 3
            lo[axis], hi[axis] = slice(0, n - 1), slice(1, n)
            np.subtract(h_bar[tuple(hi)], h_bar[tuple(lo)], out=tmp[tuple(lo)])
            tmp[tuple(lo)] *= sigma
            p[tuple(lo)] += tmp[tuple(lo)]
            np.clip(p, -wmax, wmax, out=p)
        # K^T p (minus the divergence), using that p is 0 on the last slice of its axis
        np.add(px, py, out=kt)
        kt += ps
        np.negative(kt, out=kt)
        kt[:, :, 1:] += px[:, :, :-1]
        kt[:, 1:, :] += py[:, :-1, :]
        kt[1:] += ps[:-1]
        # primal step: proximal map of tau*|h - a| (soft-threshold of the update around a)
        np.multiply(kt, -tau, out=tmp)
        tmp += h
        tmp -= a
        np.copyto(h_bar, h)
        np.sign(tmp, out=h)
        np.abs(tmp, out=tmp)
        tmp -= tau
        np.maximum(tmp, 0.0, out=tmp)
        h *= tmp
        h += a
        # over-relaxation: h_bar = 2 h_new - h_old
        np.subtract(2.0 * h, h_bar, out=h_bar)
    return np.clip(h, 0.0, 1.0).astype(np.float32)
