"""Closed-form matting (Levin, Lischinski & Weiss, TPAMI 2008), with `pymatting
<https://pypi.org/project/pymatting/>`_ building the matting Laplacian and solving: hard constraints (the LBP
baseline's refinement, :func:`matte_from_constraints`) and a network map's confident calls carried into its unsure
pixels along the photo's colour edges (``--refine``, :func:`refine_map`)."""
from __future__ import annotations

import importlib
import logging

import numpy as np

logger = logging.getLogger(__name__)


def _import_pymatting():
    try:
        import pymatting
        # the module (its package exports a function of the same name, which `from ... import` would give)
        ichol_module = importlib.import_module("pymatting.preconditioner.ichol")
    except ImportError as exc:
        raise ImportError(
            "closed-form matting (the LBP method's refinement, a network map's --refine) needs pymatting: "
            "`pip install defocus[matting]` (or pass refine=False to skip the refinement)"
        ) from exc
    # pymatting's incomplete Cholesky prints each retry with a larger diagonal shift: into the debug log instead.
    # A name in that module only: swapping sys.stdout instead would swap it for every thread of the process.
    ichol_module.print = _log_print
    return pymatting


def _log_print(*args, **kwargs) -> None:
    """``print`` for pymatting's incomplete Cholesky: its lines go to the debug log, never to stdout."""
    text = " ".join(str(a) for a in args).strip()
    if text:
        logger.debug("pymatting ichol: %s", text)


def _preconditioner(matrix, ichol, jacobi):
    """Incomplete Cholesky, or Jacobi where it fails."""
    try:
        return ichol(matrix.tocsc(), max_nnz=60 * matrix.shape[0] + 1024)
    except ValueError:
        logger.debug("incomplete Cholesky failed, Jacobi preconditioner used instead")
        return jacobi(matrix)


def matte_from_constraints(rgb: np.ndarray, values: np.ndarray, known: np.ndarray, *, epsilon: float = 1e-7,
                           radius: int = 1, rtol: float = 1e-6, maxiter: int = 2000) -> np.ndarray:
    """Closed-form alpha mattes of ``rgb`` (hxwx3, [0, 1]), one per constraint map.

    ``values`` (S, h, w) holds the constrained alpha (0 or 1) where ``known`` (S, h, w, bool) is set; the other
    pixels are solved for by minimising alpha^T L alpha with the constraints held exactly (the limit of a large
    constraint weight). The Laplacian L (window ``radius``, regulariser ``epsilon``) is built once for all maps.
    A map with no constrained pixel is returned unchanged; the result is clipped to [0, 1]. Returns float32.
    """
    pm = _import_pymatting()
    cf_laplacian, cg, ichol, jacobi = pm.cf_laplacian, pm.cg, pm.ichol, pm.jacobi
    h, w = rgb.shape[:2]
    out = np.asarray(values, dtype=np.float32).copy()
    if min(h, w) < 2 * radius + 1:
        logger.debug("image %dx%d smaller than the matting window; refinement skipped", h, w)
        return out
    lap = cf_laplacian(np.ascontiguousarray(rgb, dtype=np.float64), epsilon, radius).tocsr()
    for s in range(out.shape[0]):
        k = known[s].ravel()
        if not k.any() or k.all():
            continue
        u = ~k
        x = out[s].ravel().astype(np.float64)
        if np.ptp(x[k]) == 0:
            # one constrained value only: the constant map is the minimiser (constants are in L's null space)
            x[u] = x[k][0]
        else:
            l_u = lap[u][:, u].tocsr()
            rhs = -(lap[u][:, k] @ x[k])
            try:
                x[u] = cg(l_u, rhs, M=_preconditioner(l_u, ichol, jacobi), rtol=rtol, maxiter=maxiter)
            except ValueError as exc:  # no convergence: keep the initial map of this scale
                logger.warning("matting solve did not converge (%s); unrefined map kept for this scale", exc)
                continue
        out[s] = np.clip(x, 0.0, 1.0).reshape(h, w).astype(np.float32)
    return out


#: Weight of the network's map against the colour-edge smoothness in :func:`refine_map` (benchmarks/
#: SELECTION_bundled_v2.md, twenty-first round).
REFINE_STRENGTH = 0.05
#: Regulariser of the matting Laplacian in :func:`refine_map`.
REFINE_EPSILON = 1e-5


def refine_map(rgb: np.ndarray, prob: np.ndarray, *, strength: float = REFINE_STRENGTH,
               epsilon: float = REFINE_EPSILON, radius: int = 1, rtol: float = 1e-6, maxiter: int = 500
               ) -> np.ndarray:
    """An in-focus map refined along the colour edges of its image (not in the paper).

    Minimises ``a^T L a + strength * sum_i c_i (a_i - p_i)^2`` over the map ``a``: ``L`` is the matting
    Laplacian of ``rgb`` (hxwx3, [0, 1]; window ``radius``, regulariser ``epsilon``), ``p`` = ``prob`` (hxw, [0,
    1]) and ``c = (2p - 1)^2`` its confidence; solved by multigrid-preconditioned conjugate gradients. Confident
    pixels keep their value; unsure ones (``p`` near 0.5) take the values of the pixels they are colour-connected
    to, so a grey inside of a sharp subject fills in and a grey fringe snaps to the subject's edge. Returns float32 in [0, 1]; the map unchanged when the image is
    smaller than the matting window or the solve does not converge.
    """
    import scipy.sparse

    pm = _import_pymatting()
    p = np.clip(np.asarray(prob, dtype=np.float64), 0.0, 1.0)
    h, w = p.shape
    if rgb.shape[:2] != (h, w):
        raise ValueError(f"image {rgb.shape[:2]} and map {(h, w)} differ in size")
    if min(h, w) < 2 * radius + 1:
        return p.astype(np.float32)
    lap = pm.cf_laplacian(np.ascontiguousarray(rgb, dtype=np.float64), epsilon, radius)
    weight = strength * (2.0 * p.ravel() - 1.0) ** 2
    system = (lap + scipy.sparse.diags(weight)).tocsr()
    # multigrid: a weak data term leaves the system close to the Laplacian's, whose incomplete Cholesky factor
    # fills in far more than the LBP solves' (and takes longer than the whole solve with this preconditioner)
    try:
        a = pm.cg(system, weight * p.ravel(), x0=p.ravel().copy(), M=pm.vcycle(system, (h, w)), rtol=rtol,
                  maxiter=maxiter)
    except ValueError as exc:  # no convergence
        logger.warning("map refinement did not converge (%s); the network's map is kept", exc)
        return p.astype(np.float32)
    return np.clip(a, 0.0, 1.0).reshape(h, w).astype(np.float32)
