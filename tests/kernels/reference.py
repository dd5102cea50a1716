"""Slow, obviously-correct reference implementations the kernels are tested against.

Everything here is plain numpy over all pairs and all relevant periodic images; nothing is
shared with matdx.kernels.
"""

from __future__ import annotations

import itertools

import numpy as np


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A random proper rotation matrix."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def orthorhombic_cell() -> np.ndarray:
    return np.diag([11.0, 12.5, 10.0])


def triclinic_cell(rng: np.random.Generator) -> np.ndarray:
    """A skewed cell in a random orientation (rows are lattice vectors)."""
    cell = np.array([[10.0, 0.0, 0.0], [3.1, 9.2, 0.0], [-2.3, 2.7, 8.4]])
    return cell @ random_rotation(rng).T


def widths(cell: np.ndarray) -> np.ndarray:
    """Perpendicular widths from the unit normals of the faces."""
    out = np.empty(3)
    for i in range(3):
        normal = np.cross(cell[(i + 1) % 3], cell[(i + 2) % 3])
        out[i] = abs(cell[i] @ normal) / np.linalg.norm(normal)
    return out


def image_pairs(
    positions: np.ndarray, cell: np.ndarray | None, pbc, cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (i < j, image) with |r_j + n H - r_i| <= cutoff, searching n in {-1, 0, 1}^3.

    With cutoff <= half the smallest width and the fractional difference wrapped to
    [-0.5, 0.5), no other image can be within the cutoff, so the search is exhaustive.
    Returns i, j, vectors (r_j + nH - r_i).
    """
    pos = np.asarray(positions, dtype=float)
    n = len(pos)
    iu, ju = np.triu_indices(n, 1)
    diff = pos[ju] - pos[iu]
    if cell is None:
        keep = np.linalg.norm(diff, axis=1) <= cutoff
        return iu[keep], ju[keep], diff[keep]
    pbc = np.broadcast_to(np.asarray(pbc, bool), (3,))
    frac = diff @ np.linalg.inv(cell)
    frac -= np.where(pbc, np.round(frac), 0.0)
    base = frac @ cell
    out_i, out_j, out_v = [], [], []
    ranges = [(-1, 0, 1) if p else (0,) for p in pbc]
    for image in itertools.product(*ranges):
        vec = base + np.asarray(image, float) @ cell
        keep = np.linalg.norm(vec, axis=1) <= cutoff
        out_i.append(iu[keep])
        out_j.append(ju[keep])
        out_v.append(vec[keep])
    return np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_v)


def rdf_histogram(positions, cell, r_max, n_bins, species=None, pair=None):
    """Unordered pair counts per bin (np.histogram on [0, r_max]) for one frame."""
    i, j, vec = image_pairs(positions, cell, True, r_max)
    d = np.linalg.norm(vec, axis=1)
    if pair is not None:
        sp = np.asarray(species)
        a, b = pair
        keep = ((sp[i] == a) & (sp[j] == b)) | ((sp[i] == b) & (sp[j] == a))
        d = d[keep]
    return np.histogram(d, bins=n_bins, range=(0.0, r_max))[0]


def msd_direct(x: np.ndarray) -> np.ndarray:
    """MSD over all time origins by the double loop, averaged over atoms."""
    n = len(x)
    return np.array([np.mean(np.sum((x[m:] - x[: n - m]) ** 2, axis=-1)) for m in range(n)])


def vacf_direct(v: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """<w_i v_i(k) . v_i(k+m)> over origins k and atoms i, by the double loop."""
    n = len(v)
    w = np.ones(v.shape[1]) if weights is None else weights
    return np.array([np.mean(np.sum(v[m:] * v[: n - m], axis=-1) * w[None, :]) for m in range(n)])


def structure_factor_direct(positions, cell, q_max):
    """|q| and S(q) = |sum_j exp(i q.r_j)|^2 / N for all hkl with 0 < |q| <= q_max."""
    rec = 2.0 * np.pi * np.linalg.inv(cell).T
    limit = int(np.ceil(q_max / min(widths(rec)) * 2)) + 1
    rng = np.arange(-limit, limit + 1)
    hkl = np.array(list(itertools.product(rng, rng, rng)), float)
    q = hkl @ rec
    norm = np.linalg.norm(q, axis=1)
    keep = (norm > 0) & (norm <= q_max)
    q, norm = q[keep], norm[keep]
    rho = np.exp(1j * positions @ q.T).sum(axis=0)
    return norm, np.abs(rho) ** 2 / len(positions)


def fcc(a: float, repeats: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of a cubic fcc supercell and its cell."""
    basis = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]) * a
    grid = np.array(list(itertools.product(range(repeats), repeat=3)), float) * a
    return (grid[:, None, :] + basis[None]).reshape(-1, 3), np.eye(3) * a * repeats


def trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    """Trapezoidal rule (np.trapezoid needs numpy 2)."""
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2)
