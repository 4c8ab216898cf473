"""Closed-form matting (Levin, Lischinski & Weiss, TPAMI 2008) of several constraint maps over one image,
with `pymatting <https://pypi.org/project/pymatting/>`_ building the matting Laplacian and solving."""
from __future__ import annotations

import contextlib
import io
import logging

import numpy as np

logger = logging.getLogger(__name__)


def _import_pymatting():
    try:
        from pymatting import cf_laplacian, cg, ichol, jacobi
    except ImportError as exc:
        raise ImportError(
            "the LBP method's matting refinement needs pymatting: `pip install defocus[matting]` "
            "(or pass refine=False to skip the refinement)"
        ) from exc
    return cf_laplacian, cg, ichol, jacobi


def _preconditioner(matrix, ichol, jacobi):
    """Incomplete Cholesky (pymatting prints its retries with larger diagonal shifts: kept out of stdout)."""
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink):
            return ichol(matrix.tocsc(), max_nnz=60 * matrix.shape[0] + 1024)
    except ValueError:
        logger.debug("incomplete Cholesky failed, Jacobi preconditioner used instead")
        return jacobi(matrix)
    finally:
        if sink.getvalue():
            logger.debug("pymatting ichol: %s", sink.getvalue().strip().replace("\n", " "))


def matte_from_constraints(rgb: np.ndarray, values: np.ndarray, known: np.ndarray, *, epsilon: float = 1e-7,
                           radius: int = 1, rtol: float = 1e-6, maxiter: int = 2000) -> np.ndarray:
    """Closed-form alpha mattes of ``rgb`` (hxwx3, [0, 1]), one per constraint map.

    ``values`` (S, h, w) holds the constrained alpha (0 or 1) where ``known`` (S, h, w, bool) is set; the other
    pixels are solved for by minimising alpha^T L alpha with the constraints held exactly (the limit of a large
    constraint weight). The Laplacian L (window ``radius``, regulariser ``epsilon``) is built once for all maps.
    A map with no constrained pixel is returned unchanged; the result is clipped to [0, 1]. Returns float32.
    """
    cf_laplacian, cg, ichol, jacobi = _import_pymatting()
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
