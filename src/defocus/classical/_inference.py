"""Multi-scale inference of a sharpness map: an L1 data term and L1 smoothness within and across scales.

Minimises over h (S, H, W)::

    sum_s sum_i |h_i^s - a_i^s|
      + beta * ( sum_s sum_i sum_{j in N4(i)} |h_i^s - h_j^s|  +  sum_{s<S} sum_i |h_i^s - h_i^{s+1}| )

(Yi & Eramian, TIP 2016, Sec. IV-C). The double sum over i and its 4-neighbours j counts every in-scale edge
twice, so in-scale edges weigh 2*beta and cross-scale edges beta. The paper solves a discretised version with
loopy belief propagation; here the same convex energy is minimised over continuous h with the first-order
primal-dual algorithm of Chambolle & Pock (JMIV 2011), fully vectorised.
"""
from __future__ import annotations

import numpy as np


def _grad(h: np.ndarray):
    gx = np.zeros_like(h)
    gy = np.zeros_like(h)
    gs = np.zeros_like(h)
    gx[:, :, :-1] = h[:, :, 1:] - h[:, :, :-1]
    gy[:, :-1, :] = h[:, 1:, :] - h[:, :-1, :]
    gs[:-1] = h[1:] - h[:-1]
    return gx, gy, gs


def _grad_adjoint(px: np.ndarray, py: np.ndarray, ps: np.ndarray) -> np.ndarray:
    """K^T p for the forward differences of :func:`_grad` (minus the divergence)."""
    out = np.zeros_like(px)
    out[:, :, :-1] -= px[:, :, :-1]
    out[:, :, 1:] += px[:, :, :-1]
    out[:, :-1, :] -= py[:, :-1, :]
    out[:, 1:, :] += py[:, :-1, :]
    out[:-1] -= ps[:-1]
    out[1:] += ps[:-1]
    return out


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
    px = np.zeros_like(a)
    py = np.zeros_like(a)
    ps = np.zeros_like(a)
    for _ in range(n_iter):
        gx, gy, gs = _grad(h_bar)
        np.clip(px + sigma * gx, -w_xy, w_xy, out=px)
        np.clip(py + sigma * gy, -w_xy, w_xy, out=py)
        np.clip(ps + sigma * gs, -w_s, w_s, out=ps)
        v = h - tau * _grad_adjoint(px, py, ps) - a
        # proximal step of tau*|h - a|: soft-threshold around a
        h_new = a + np.sign(v) * np.maximum(np.abs(v) - tau, 0.0)
        h_bar = 2.0 * h_new - h
        h = h_new
    return np.clip(h, 0.0, 1.0).astype(np.float32)
