"""Round 51 of new-user models: rotations and molecular / robotic / vision geometry near
their singular points, with torch 2.13 CPU float64 autograd (torch.linalg.matrix_exp as
an independent exp map, torch.sinc) and central finite differences as the judges
(closed forms where they exist).

Families not covered before: rotation averaging on a pose graph by the SO(3) LOG map
(arccos of the clipped trace, th / (2 sin th) vee(E - E^T) with its Taylor series under
the double-where idiom; exp by Rodrigues, judged against matrix_exp); rigid registration
by an unnormalised quaternion q / |q| and the textbook quaternion-to-matrix formula;
Whittaker-Shannon sinc interpolation with a learned bandwidth (sin x / x by the double
where the sg.sinc message suggests, samples on the nodes); AMBER torsions k (1 + cos(n
phi - delta)) with per-kind learned barriers and phases (Blondel's atan2 of cross
products over an int64 (T, 4) quadruple array); harmonic bond angles by arccos of the
normalised dot product with the clip users add; a six-atom molecular-mechanics force
field (bonds, angles, torsions, Lorentz-Berthelot Lennard-Jones, Coulomb; learned
charges; int64 gathers); planar 3-link IK of end-effector POSES with the heading error
wrapped by atan2(sin, cos); IK of a 5-joint spatial arm as a chain of batched rotation
matrices built by sg.stack; bundle adjustment with the Brown-Conrady lens (k1, k2, p1,
p2), per-camera normalised quaternions and a Cauchy loss; point-to-plane ICP with the
full Rodrigues rotation; and a sphere tracer unrolled for six steps through a
smooth-union (logaddexp) SDF of a sphere and a plane. All ten first and second order
against torch and differences, six unrolled; 25 edges first and second order (and
unrolled): r = 0 exactly with identity measurements, residual rotations of 0, 1e-9,
1e-4 and pi - 0.01, a node at |r| = pi, quaternions at the identity, a half turn and
scales 1e-100 / 1e100, bandwidth 0 / 3e-5 / 1e-3, planar cis/trans torsions (phi = 0,
pi exactly), collinear and folded angles under the clip, a planar uncharged molecule, a
straight arm and a heading off by exactly pi, a spatial arm at zero and a target at its
base, a point on the optical axis and no distortion, ICP at r = 0, 1e-9 and pi, a ray
through the sphere's centre and a vanishing sphere. Closed forms: log(exp(r)) = r
(gradient c, Hessian 0, from 0 to 3.1 rad); q . grad_q = 0, grad(s q) = grad / s and
the double cover; no net force or torque from the force field and H annihilating
translations; the ICP Hessian at zero residual is exactly 2 J^T J and one Newton step
converges quadratically; sinc's w = 0 Hessian; dihedrals of constructed geometries
(-179 to 180 degrees); exactly collinear atoms give atan2(0, 0) = 0 with torch's zero
gradient.

No wrong numbers. symgrad is better than torch twice: torch.sinc's double backward is
nan at x = 0 (symgrad's Hessian agrees with differences of its gradient), and a single
sg.where(x == 0, 1, sin x / x) has gradient 0 at 0 where torch's is nan; near theta = pi
the user's log map is ill-conditioned (sin th from th = arccos c), and there torch's
matrix_exp twin's Hessian is off by 2e-3 while symgrad's matches differences of its own
gradient to 4e-6 (judged so at that edge).

Found (6 strict xfails, 5 fixed): the unrolled function of Rodrigues' double-where
idiom raises ZeroDivisionError at r = 0 exactly and value_and_grad silently falls back
to NumPy (right numbers, lost speed; the not-taken branch 1 / sqrt(th2) is hoisted out
of its conditional, symgrad/unroll.py). Messages, fixed: sg.arccos(c, -1, 1) said
"sg.acos(x) takes one argument" (also sg.asin, sg.Abs, sg.loggamma: SymPy's names;
_unary in symgrad/model.py now takes sg's name, and arccos/arcsin say clip first);
torch.deg2rad / np.deg2rad / np.radians, np.linalg.svd (there is no SVD) and
torch.linalg.vecdot said only "use sg's functions"; sg.cross of (N, 3) and (3, 3)
named the internal component slices' shapes. The other mistakes met (x.acos,
torch.acos, sg.atan2, math.atan2, torch.linalg.cross, dim=, cross of 2- or 4-vectors,
clamp, x.norm, F.normalize, sg.sinc, matrix_exp, sg.trace, a Python if, a float index,
an int64 multiplicity, a NumPy constant, a float in sg.stack) name the fix.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import (
    Families,
    assert_matches_central_differences,
    assert_second_order_agrees,
    check,
    check_unrolled,
    compile_module,
    normal,
    rel,
)

import symgrad as sg

torch = pytest.importorskip("torch")
F = torch.nn.functional

FAMILIES = Families()
family = FAMILIES.add
module_of = FAMILIES.module
f64 = torch.float64


# ============================================================== shared geometry helpers


def _skew_sg(r):
    """[r]x of each row of r (..., 3) as (..., 3, 3), by sg.stack of stacks."""
    x, y, z = r[..., 0], r[..., 1], r[..., 2]
    o = sg.zeros_like(x)
    return sg.stack(
        [sg.stack([o, -z, y], -1), sg.stack([z, o, -x], -1), sg.stack([-y, x, o], -1)],
        -2,
    )


def _skew_torch(r):
    x, y, z = r[..., 0], r[..., 1], r[..., 2]
    o = torch.zeros_like(x)
    return torch.stack(
        [
            torch.stack([o, -z, y], -1),
            torch.stack([z, o, -x], -1),
            torch.stack([-y, x, o], -1),
        ],
        -2,
    )


def _rodrigues_sg(r):
    """exp([r]x) = I + A K + B K^2, A = sin th / th, B = (1 - cos th) / th^2, guarded
    at th -> 0 by the double-where idiom (Taylor below th^2 = 1e-12, a safe th = 1 in
    the branch not taken); B as 2 sin^2(th / 2) / th^2 (no cancellation)."""
    th2 = sg.sum(r**2, axis=-1)
    small = th2 < 1e-12
    th = sg.sqrt(sg.where(small, 1.0, th2))
    A = sg.where(small, 1 - th2 / 6, sg.sin(th) / th)
    B = sg.where(small, 0.5 - th2 / 24, 2 * (sg.sin(th / 2) / th) ** 2)
    K = _skew_sg(r)
    return sg.eye(3) + A[..., None, None] * K + B[..., None, None] * (K @ K)


def _rodrigues_torch(r):
    """torch's own matrix exponential of the skew matrix: an independent judge."""
    return torch.linalg.matrix_exp(_skew_torch(r))


def _vee_sg(S):
    return sg.stack([S[..., 2, 1], S[..., 0, 2], S[..., 1, 0]], -1)


def _vee_torch(S):
    return torch.stack([S[..., 2, 1], S[..., 0, 2], S[..., 1, 0]], -1)


def _log_so3_sg(E, eps=1e-10):
    """log of rotations E (..., 3, 3) as axis-angle vectors: th = arccos(clip((tr E -
    1) / 2, -1, 1)), w = th / (2 sin th) vee(E - E^T); th / (2 sin th) by its Taylor
    series 1/2 + (1 - c) / 6 where 1 - c < eps (c = cos th), arccos fed a safe 0 there
    (double where). Returns (w, th)."""
    c = sg.clip((sg.einsum("...ii->...", E) - 1) / 2, -1.0, 1.0)
    small = 1 - c < eps
    th = sg.arccos(sg.where(small, 0.0, c))
    coef = sg.where(small, 0.5 + (1 - c) / 6, th / (2 * sg.sin(th)))
    w = coef[..., None] * _vee_sg(E - sg.swapaxes(E, -1, -2))
    return w, sg.where(small, sg.sqrt(2 * (1 - c)), th)


def _log_so3_torch(E, eps=1e-10):
    c = torch.clamp((torch.diagonal(E, dim1=-2, dim2=-1).sum(-1) - 1) / 2, -1.0, 1.0)
    small = 1 - c < eps
    th = torch.arccos(torch.where(small, torch.zeros_like(c), c))
    coef = torch.where(small, 0.5 + (1 - c) / 6, th / (2 * torch.sin(th)))
    w = coef[..., None] * _vee_torch(E - E.transpose(-1, -2))
    return w, torch.where(small, torch.sqrt(2 * (1 - c)), th)


def _rotvec_matrix(r):
    """NumPy exp([r]x), for data."""
    r = np.asarray(r, float)
    th = np.linalg.norm(r)
    K = np.array([[0, -r[2], r[1]], [r[2], 0, -r[0]], [-r[1], r[0], 0]])
    if th == 0:
        return np.eye(3)
    return np.eye(3) + np.sin(th) / th * K + (1 - np.cos(th)) / th**2 * K @ K


def _quat_matrix_sg(q):
    """Unit quaternion (w, x, y, z) -> rotation matrix, the textbook formula."""
    w, x, y, z = q[0], q[1], q[2], q[3]
    return sg.stack(
        [
            sg.stack(
                [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)]
            ),
            sg.stack(
                [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)]
            ),
            sg.stack(
                [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]
            ),
        ]
    )


def _quat_matrix_torch(q):
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            torch.stack(
                [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)]
            ),
            torch.stack(
                [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)]
            ),
            torch.stack(
                [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]
            ),
        ]
    )


def _dihedral_sg(p0, p1, p2, p3):
    """Blondel's dihedral phi = atan2(|b1| b0 . (b1 x b2), (b0 x b1) . (b1 x b2))."""
    b0, b1, b2 = p1 - p0, p2 - p1, p3 - p2
    n1, n2 = sg.cross(b0, b1), sg.cross(b1, b2)
    y = sg.norm(b1, axis=-1) * sg.sum(b0 * n2, axis=-1)
    x = sg.sum(n1 * n2, axis=-1)
    return sg.arctan2(y, x)


def _dihedral_torch(p0, p1, p2, p3):
    b0, b1, b2 = p1 - p0, p2 - p1, p3 - p2
    n1, n2 = torch.linalg.cross(b0, b1), torch.linalg.cross(b1, b2)
    y = torch.linalg.vector_norm(b1, dim=-1) * (b0 * n2).sum(-1)
    return torch.atan2(y, (n1 * n2).sum(-1))


def _angle_sg(a, b, c, lo=-1.0, hi=1.0):
    """The bond angle at b by arccos of the normalised dot product, clipped."""
    u, v = a - b, c - b
    cos = sg.sum(u * v, axis=-1) / (sg.norm(u, axis=-1) * sg.norm(v, axis=-1))
    return sg.arccos(sg.clip(cos, lo, hi))


def _angle_torch(a, b, c, lo=-1.0, hi=1.0):
    u, v = a - b, c - b
    cos = (u * v).sum(-1) / (u.norm(dim=-1) * v.norm(dim=-1))
    return torch.arccos(torch.clamp(cos, lo, hi))


# ===================================================================== 1. model families


def _so3_reference(p, i):
    R = _rodrigues_torch(p["r"])
    E = i["Rm"].transpose(-1, -2) @ R[i["ei"]].transpose(-1, -2) @ R[i["ej"]]
    w, th = _log_so3_torch(E)
    return (w**2).sum() + 0.5 * (p["r"][0] ** 2).sum(), {"theta": th}


@family
def so3_rotation_averaging(hessian=False):
    """Rotation averaging on a pose graph: absolute rotations R_k = exp([r_k]x)
    (Rodrigues by the double-where idiom), relative measurements Rm on int64 edges,
    residual log(Rm^T R_i^T R_j) by the SO(3) log map (arccos of the clipped trace,
    th / (2 sin th) vee(E - E^T), its Taylor series where 1 - cos th < 1e-10), gauge
    fixed softly on node 0. torch: linalg.matrix_exp of the skew matrix, diagonal."""
    m = sg.Model("so3_rotation_averaging", hessian=hessian)
    Rm = m.input("Rm", ("E", 3, 3))
    ei, ej = m.input("ei", ("E",), dtype="int64"), m.input("ej", ("E",), dtype="int64")
    r = m.param("r", ("K", 3))
    R = _rodrigues_sg(r)
    E = sg.swapaxes(Rm, -1, -2) @ sg.swapaxes(R[ei], -1, -2) @ R[ej]
    w, th = _log_so3_sg(E)
    m.output("theta", th)
    m.loss(sg.sum(w**2) + 0.5 * sg.sum(r[0] ** 2))
    rng = np.random.default_rng(0)
    true = normal(rng, 3, 3, scale=0.7)
    ei_, ej_ = np.array([0, 1, 2, 0]), np.array([1, 2, 0, 2])
    Rm_ = np.stack(
        [
            _rotvec_matrix(true[a]).T
            @ _rotvec_matrix(true[b])
            @ _rotvec_matrix(normal(rng, 3, scale=0.1))
            for a, b in zip(ei_, ej_, strict=True)
        ]
    )
    params = {"r": true + normal(rng, 3, 3, scale=0.2)}
    return m, _so3_reference, params, {"Rm": Rm_, "ei": ei_, "ej": ej_}


def _quat_reference(p, i):
    q = p["q"] / torch.linalg.vector_norm(p["q"])
    R = _quat_matrix_torch(q)
    pred = i["P"] @ R.T + p["t"]
    return ((pred - i["Y"]) ** 2).sum(), {"R": R}


@family
def quaternion_pose(hessian=False):
    """Rigid registration by an unnormalised quaternion q, normalised as q / |q| (sg.norm;
    torch: q / q.norm()), turned into a matrix by the textbook formula (sg.stack of
    stacks), least squares of R p + t - y over corresponding points."""
    m = sg.Model("quaternion_pose", hessian=hessian)
    P, Y = m.input("P", ("N", 3)), m.input("Y", ("N", 3))
    q, t = m.param("q", (4,)), m.param("t", (3,))
    R = m.output("R", _quat_matrix_sg(q / sg.norm(q)))
    m.loss(sg.sum((P @ R.T + t - Y) ** 2))
    rng = np.random.default_rng(1)
    P = normal(rng, 5, 3)
    Rt = _rotvec_matrix([0.3, -0.5, 0.8])
    Y = P @ Rt.T + [0.1, -0.2, 0.3] + normal(rng, 5, 3, scale=0.05)
    params = {"q": np.array([0.9, 0.1, -0.3, 0.35]) * 2.5, "t": normal(rng, 3)}
    return m, _quat_reference, params, {"P": P, "Y": Y}


def _sinc_sg(x):
    small = sg.abs(x) < 1e-4
    xs = sg.where(small, 1.0, x)
    return sg.where(small, 1 - x**2 / 6, sg.sin(xs) / xs)


def _sinc_torch(x):
    small = x.abs() < 1e-4
    xs = torch.where(small, torch.ones_like(x), x)
    return torch.where(small, 1 - x**2 / 6, torch.sin(xs) / xs)


def _sinc_reference(p, i, sinc=_sinc_torch):
    x = p["w"] * (i["t"][:, None] - i["tk"][None, :])
    y = sinc(x) @ p["a"]
    return ((y - i["y"]) ** 2).sum(), {"pred": y}


def _torch_sinc_reference(p, i):
    """torch.sinc(x / pi) (torch's sinc is of pi x): first order only, its double
    backward at x = 0 is nan."""
    return _sinc_reference(p, i, lambda x: torch.sinc(x / math.pi))


@family
def sinc_interpolation(hessian=False):
    """Band-limited (Whittaker-Shannon) interpolation y(t) = sum_k a_k sinc(w (t -
    t_k)) with learned amplitudes and bandwidth, sin(x) / x by the double-where idiom
    the sg.sinc message suggests; samples taken exactly at the nodes (x = 0 exactly).
    torch: the same idiom (and torch.sinc(x / pi) to first order, below)."""
    m = sg.Model("sinc_interpolation", hessian=hessian)
    t, tk, y = m.input("t", ("N",)), m.input("tk", ("K",)), m.input("y", ("N",))
    a, w = m.param("a", ("K",)), m.param("w", ())
    pred = m.output("pred", _sinc_sg(w * (t[:, None] - tk[None, :])) @ a)
    m.loss(sg.sum((pred - y) ** 2))
    rng = np.random.default_rng(2)
    tk_ = np.linspace(0.0, 3.0, 4)
    t_ = np.concatenate([tk_[:2], rng.uniform(0, 3, 3)])  # two samples on nodes
    params = {"a": normal(rng, 4), "w": np.array(2.7)}
    return m, _sinc_reference, params, {"t": t_, "tk": tk_, "y": normal(rng, 5)}


def _torsion_reference(p, i):
    X, ix = p["X"], i["quad"]
    phi = _dihedral_torch(X[ix[:, 0]], X[ix[:, 1]], X[ix[:, 2]], X[ix[:, 3]])
    k, delta = p["k"][i["kind"]], p["delta"][i["kind"]]
    e = k * (1 + torch.cos(i["n"] * phi - delta))
    return e.sum(), {"phi": phi}


@family
def amber_torsions(hessian=False):
    """AMBER-style torsion energy sum k_t (1 + cos(n phi - delta_t)) of dihedrals phi
    (atan2 of cross products, Blondel's form) over int64 quadruples (one (T, 4) array,
    columns picked by int slices), barrier heights and phases learned per torsion kind
    (an int64 gather), multiplicities n as float data. torch: atan2, linalg.cross."""
    m = sg.Model("amber_torsions", hessian=hessian)
    quad = m.input("quad", ("T", 4), dtype="int64")
    kind = m.input("kind", ("T",), dtype="int64")
    n = m.input("n", ("T",))
    X, k, delta = m.param("X", ("N", 3)), m.param("k", ("S",)), m.param("delta", ("S",))
    phi = m.output(
        "phi", _dihedral_sg(X[quad[:, 0]], X[quad[:, 1]], X[quad[:, 2]], X[quad[:, 3]])
    )
    m.loss(sg.sum(k[kind] * (1 + sg.cos(n * phi - delta[kind]))))
    rng = np.random.default_rng(3)
    params = {
        "X": normal(rng, 6, 3),
        "k": np.array([1.4, 0.3]),
        "delta": np.array([0.0, math.pi]),
    }
    quad = np.array([[0, 1, 2, 3], [1, 2, 3, 4], [2, 3, 4, 5], [5, 1, 2, 0]])
    inputs = {
        "quad": quad,
        "kind": np.array([0, 1, 0, 1]),
        "n": np.array([3.0, 2, 1, 3]),
    }
    return m, _torsion_reference, params, inputs


def _angle_reference(p, i):
    X = p["X"]
    th = _angle_torch(X[i["ia"]], X[i["ib"]], X[i["ic"]], -1 + 1e-7, 1 - 1e-7)
    return (p["ka"] * (th - i["th0"]) ** 2).sum(), {"theta": th}


@family
def bond_angles(hessian=False):
    """Harmonic bond-angle potential sum k (theta - theta0)^2, theta by arccos of the
    normalised dot product clipped to [-1 + 1e-7, 1 - 1e-7] (the clamp users add so
    arccos' stays finite), learned force constants. torch: clamp, arccos."""
    m = sg.Model("bond_angles", hessian=hessian)
    ia, ib, ic = (m.input(s, ("A",), dtype="int64") for s in ("ia", "ib", "ic"))
    th0 = m.input("th0", ("A",))
    X, ka = m.param("X", ("N", 3)), m.param("ka", ("A",))
    th = m.output("theta", _angle_sg(X[ia], X[ib], X[ic], -1 + 1e-7, 1 - 1e-7))
    m.loss(sg.sum(ka * (th - th0) ** 2))
    rng = np.random.default_rng(4)
    params = {"X": normal(rng, 5, 3), "ka": np.array([0.5, 0.8, 1.2])}
    inputs = {
        "ia": np.array([0, 1, 2]),
        "ib": np.array([1, 2, 3]),
        "ic": np.array([2, 3, 4]),
        "th0": np.array([1.91, 1.91, 2.09]),
    }
    return m, _angle_reference, params, inputs


COULOMB = 332.0636


def _ff_reference(p, i):
    X, q = p["X"], p["q"]
    d = X[i["bi"]] - X[i["bj"]]
    e_bond = (i["kb"] * (d.norm(dim=-1) - i["r0"]) ** 2).sum()
    th = _angle_torch(X[i["ai"]], X[i["aj"]], X[i["ak"]])
    e_angle = (i["ka"] * (th - i["th0"]) ** 2).sum()
    phi = _dihedral_torch(X[i["ti"]], X[i["tj"]], X[i["tk"]], X[i["tl"]])
    e_tors = (i["kt"] * (1 + torch.cos(i["tn"] * phi - i["td"]))).sum()
    pi, pj = i["pi"], i["pj"]
    r = (X[pi] - X[pj]).norm(dim=-1)
    sig = (i["sigma"][pi] + i["sigma"][pj]) / 2
    eps = torch.sqrt(i["eps"][pi] * i["eps"][pj])
    s6 = (sig / r) ** 6
    e_lj = (4 * eps * (s6**2 - s6)).sum()
    e_coul = (COULOMB * q[pi] * q[pj] / r).sum()
    total = e_bond + e_angle + e_tors + e_lj + e_coul
    parts = torch.stack([e_bond, e_angle, e_tors, e_lj, e_coul])
    return total, {"parts": parts}


def _chain_molecule(rng):
    """A 6-atom zig-zag chain (butane-like with two end substituents), slightly
    perturbed, its bonded terms and the 1-4 and farther pairs."""
    X = np.array(
        [
            [0.0, 0.0, 0.0],
            [1.5, 0.0, 0.0],
            [2.0, 1.4, 0.0],
            [3.5, 1.4, 0.3],
            [4.0, 2.8, 0.9],
            [5.5, 2.8, 1.2],
        ]
    )
    X = X + normal(rng, 6, 3, scale=0.05)
    bonds = np.array([[0, 1], [1, 2], [2, 3], [3, 4], [4, 5]])
    angles = np.array([[0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 5]])
    tors = np.array([[0, 1, 2, 3], [1, 2, 3, 4], [2, 3, 4, 5]])
    pairs = np.array([[0, 3], [1, 4], [2, 5], [0, 4], [1, 5], [0, 5]])
    inputs = {
        "bi": bonds[:, 0],
        "bj": bonds[:, 1],
        "kb": np.full(5, 310.0),
        "r0": np.full(5, 1.526),
        "ai": angles[:, 0],
        "aj": angles[:, 1],
        "ak": angles[:, 2],
        "ka": np.full(4, 40.0),
        "th0": np.full(4, 1.911),
        "ti": tors[:, 0],
        "tj": tors[:, 1],
        "tk": tors[:, 2],
        "tl": tors[:, 3],
        "kt": np.array([1.4, 0.16, 1.4]),
        "tn": np.array([3.0, 3.0, 1.0]),
        "td": np.array([0.0, 0.0, math.pi]),
        "pi": pairs[:, 0],
        "pj": pairs[:, 1],
        "sigma": np.array([3.4, 3.4, 3.4, 3.4, 2.6, 2.6]),
        "eps": np.array([0.086, 0.109, 0.109, 0.086, 0.015, 0.015]),
    }
    return X, inputs


@family
def mm_force_field(hessian=False):
    """A small molecular-mechanics force field over int64 index gathers: harmonic
    bonds, harmonic angles (arccos of the clipped normalised dot product), AMBER
    torsions, Lennard-Jones with Lorentz-Berthelot combining (sigma_ij = (s_i + s_j) /
    2, eps_ij = sqrt(e_i e_j)) and Coulomb 332.06 q_i q_j / r on the 1-4 and farther
    pairs; positions and partial charges are parameters (a charge-fitting user), the
    five terms an output. torch: the same sums with norm(dim=-1)."""
    m = sg.Model("mm_force_field", hessian=hessian)
    I64 = {"dtype": "int64"}
    bi, bj = m.input("bi", ("B",), **I64), m.input("bj", ("B",), **I64)
    kb, r0 = m.input("kb", ("B",)), m.input("r0", ("B",))
    ai, aj, ak = (m.input(s, ("A",), **I64) for s in ("ai", "aj", "ak"))
    ka, th0 = m.input("ka", ("A",)), m.input("th0", ("A",))
    ti, tj, tk, tl = (m.input(s, ("T",), **I64) for s in ("ti", "tj", "tk", "tl"))
    kt, tn, td = m.input("kt", ("T",)), m.input("tn", ("T",)), m.input("td", ("T",))
    pi, pj = m.input("pi", ("P",), **I64), m.input("pj", ("P",), **I64)
    sigma, eps = m.input("sigma", ("N",)), m.input("eps", ("N",))
    X, q = m.param("X", ("N", 3)), m.param("q", ("N",))
    e_bond = sg.sum(kb * (sg.norm(X[bi] - X[bj], axis=-1) - r0) ** 2)
    th = _angle_sg(X[ai], X[aj], X[ak])
    e_angle = sg.sum(ka * (th - th0) ** 2)
    phi = _dihedral_sg(X[ti], X[tj], X[tk], X[tl])
    e_tors = sg.sum(kt * (1 + sg.cos(tn * phi - td)))
    r = sg.norm(X[pi] - X[pj], axis=-1)
    sig = (sigma[pi] + sigma[pj]) / 2
    eps_ij = sg.sqrt(eps[pi] * eps[pj])
    s6 = (sig / r) ** 6
    e_lj = sg.sum(4 * eps_ij * (s6**2 - s6))
    e_coul = sg.sum(COULOMB * q[pi] * q[pj] / r)
    m.output("parts", sg.stack([e_bond, e_angle, e_tors, e_lj, e_coul]))
    m.loss(e_bond + e_angle + e_tors + e_lj + e_coul)
    rng = np.random.default_rng(5)
    X_, inputs = _chain_molecule(rng)
    params = {"X": X_, "q": np.array([-0.18, 0.06, 0.06, -0.18, 0.12, 0.12])}
    return m, _ff_reference, params, inputs


def _planar_reference(p, i):
    cum = torch.cumsum(p["th"], dim=1)
    L = i["L"]
    x = (L * torch.cos(cum)).sum(1)
    y = (L * torch.sin(cum)).sum(1)
    d = cum[:, -1] - i["goal"][:, 2]
    wrap = torch.atan2(torch.sin(d), torch.cos(d))
    loss = (
        (x - i["goal"][:, 0]) ** 2 + (y - i["goal"][:, 1]) ** 2 + 0.3 * wrap**2
    ).sum()
    return loss, {"wrap": wrap}


@family
def planar_arm_pose_ik(hessian=False):
    """Inverse kinematics of a planar 3-link arm for a batch of end-effector POSES (x,
    y, heading): joint angles th (B, 3), absolute angles by sg.cumsum along the joints,
    the heading error wrapped to (-pi, pi] by atan2(sin d, cos d) (the wrap users
    write), squared. torch: the same with cumsum(dim=1)."""
    m = sg.Model("planar_arm_pose_ik", hessian=hessian)
    L, goal = m.input("L", (3,)), m.input("goal", ("B", 3))
    th = m.param("th", ("B", 3))
    cum = sg.cumsum(th, axis=1)
    x = sg.sum(L * sg.cos(cum), axis=1)
    y = sg.sum(L * sg.sin(cum), axis=1)
    d = cum[:, -1] - goal[:, 2]
    wrap = m.output("wrap", sg.arctan2(sg.sin(d), sg.cos(d)))
    m.loss(sg.sum((x - goal[:, 0]) ** 2 + (y - goal[:, 1]) ** 2 + 0.3 * wrap**2))
    rng = np.random.default_rng(6)
    goal = np.array([[1.2, 0.8, 2.0], [-0.5, 1.5, -2.9], [2.0, -0.4, 3.1]])
    params = {"th": normal(rng, 3, 3)}
    return m, _planar_reference, params, {"L": np.array([1.0, 0.8, 0.5]), "goal": goal}


def _rot_sg(axis, a):
    """Batched rotations (B, 3, 3) about a coordinate axis by angles a (B,)."""
    c, s = sg.cos(a), sg.sin(a)
    o, one = sg.zeros_like(a), sg.ones_like(a)
    rows = {
        "z": [[c, -s, o], [s, c, o], [o, o, one]],
        "y": [[c, o, s], [o, one, o], [-s, o, c]],
        "x": [[one, o, o], [o, c, -s], [o, s, c]],
    }[axis]
    return sg.stack([sg.stack(row, -1) for row in rows], -2)


def _rot_torch(axis, a):
    c, s = torch.cos(a), torch.sin(a)
    o, one = torch.zeros_like(a), torch.ones_like(a)
    rows = {
        "z": [[c, -s, o], [s, c, o], [o, o, one]],
        "y": [[c, o, s], [o, one, o], [-s, o, c]],
        "x": [[one, o, o], [o, c, -s], [o, s, c]],
    }[axis]
    return torch.stack([torch.stack(row, -1) for row in rows], -2)


ARM_AXES = ("z", "y", "y", "x", "y")
ARM_LINKS = (
    (0.0, 0.0, 0.4),
    (0.6, 0.0, 0.0),
    (0.5, 0.0, 0.0),
    (0.0, 0.0, 0.0),
    (0.2, 0, 0),
)


def _spatial_reference(p, i):
    q = p["q"]
    B = q.shape[0]
    R = torch.eye(3, dtype=f64).expand(B, 3, 3)
    pos = torch.zeros(B, 3, dtype=f64)
    for k, axis in enumerate(ARM_AXES):
        R = R @ _rot_torch(axis, q[:, k])
        pos = pos + R @ torch.tensor(ARM_LINKS[k], dtype=f64)
    err = pos - i["target"]
    z_axis = R[:, :, 0]
    loss = (err**2).sum() + 0.1 * (1 - (z_axis * i["approach"]).sum(-1)).sum()
    loss = loss + 0.01 * (q**2).sum()
    return loss, {"pos": pos}


@family
def spatial_arm_ik(hessian=False):
    """IK of a 5-joint spatial arm (base yaw, shoulder and elbow pitch, forearm roll,
    wrist pitch), forward kinematics as a chain of batched 3x3 rotations built by
    sg.stack of stacks (B, 3, 3) @ (B, 3, 3) and link offsets R @ l as columns of R times the lengths, for a
    batch of targets with an approach-direction cost 1 - x_tool . a and a small
    regulariser. torch: the same chain with expand, @ and a (3,) tensor."""
    m = sg.Model("spatial_arm_ik", hessian=hessian)
    target, approach = m.input("target", ("B", 3)), m.input("approach", ("B", 3))
    q = m.param("q", ("B", len(ARM_AXES)))
    R = None
    pos = 0.0
    for k, axis in enumerate(ARM_AXES):
        Rk = _rot_sg(axis, q[:, k])
        R = Rk if R is None else R @ Rk
        for j, length in enumerate(ARM_LINKS[k]):
            if length:
                pos = pos + length * R[:, :, j]
    pos = m.output("pos", pos)
    loss = sg.sum((pos - target) ** 2)
    loss = loss + 0.1 * sg.sum(1 - sg.sum(R[:, :, 0] * approach, axis=-1))
    m.loss(loss + 0.01 * sg.sum(q**2))
    rng = np.random.default_rng(7)
    a = normal(rng, 2, 3)
    inputs = {
        "target": np.array([[0.6, 0.3, 0.7], [0.2, -0.7, 0.2]]),
        "approach": a / np.linalg.norm(a, axis=1, keepdims=True),
    }
    return m, _spatial_reference, params_arm(rng), inputs


def params_arm(rng):
    return {"q": normal(rng, 2, len(ARM_AXES), scale=0.7)}


def _ba_reference(p, i):
    qn = p["q"] / p["q"].norm(dim=-1, keepdim=True)
    R = torch.stack([_quat_matrix_torch(qq) for qq in qn])
    cam, pt = i["cam"], i["pt"]
    Xc = (R[cam] @ p["X"][pt][:, :, None])[:, :, 0] + p["t"][cam]
    xn = Xc[:, :2] / Xc[:, 2:]
    x, y = xn[:, 0], xn[:, 1]
    r2 = x * x + y * y
    k1, k2, p1, p2 = p["dist"].unbind()
    radial = 1 + k1 * r2 + k2 * r2**2
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    uv = p["f"] * torch.stack([xd, yd], -1) + i["pp"]
    res = uv - i["uv_obs"]
    loss = torch.log1p((res**2).sum(-1) / 4.0).sum()
    return loss, {"uv": uv}


@family
def ba_brown_conrady(hessian=False):
    """Bundle adjustment with the Brown-Conrady lens model (radial k1, k2 and
    tangential p1, p2, shared and learned with the focal length), cameras as
    normalised quaternions (per row: q / sg.norm(q, axis=-1, keepdims=True)), int64
    camera / point gathers of the observations, a Cauchy robust loss log1p(|e|^2 /
    c^2). torch: normalise, a list of quaternion matrices, batched @."""
    m = sg.Model("ba_brown_conrady", hessian=hessian)
    cam, pt = m.input("cam", ("O",), dtype="int64"), m.input(
        "pt", ("O",), dtype="int64"
    )
    uv_obs, pp = m.input("uv_obs", ("O", 2)), m.input("pp", (2,))
    q, t = m.param("q", ("C", 4)), m.param("t", ("C", 3))
    X, f, dist = m.param("X", ("P", 3)), m.param("f", ()), m.param("dist", (4,))
    qn = q / sg.norm(q, axis=-1, keepdims=True)
    w, a, b, c = qn[:, 0], qn[:, 1], qn[:, 2], qn[:, 3]
    R = sg.stack(
        [
            sg.stack(
                [1 - 2 * (b * b + c * c), 2 * (a * b - w * c), 2 * (a * c + w * b)], -1
            ),
            sg.stack(
                [2 * (a * b + w * c), 1 - 2 * (a * a + c * c), 2 * (b * c - w * a)], -1
            ),
            sg.stack(
                [2 * (a * c - w * b), 2 * (b * c + w * a), 1 - 2 * (a * a + b * b)], -1
            ),
        ],
        -2,
    )
    Xc = sg.einsum("oij,oj->oi", R[cam], X[pt]) + t[cam]
    x, y = Xc[:, 0] / Xc[:, 2], Xc[:, 1] / Xc[:, 2]
    r2 = x * x + y * y
    k1, k2, p1, p2 = dist[0], dist[1], dist[2], dist[3]
    radial = 1 + k1 * r2 + k2 * r2**2
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    uv = m.output("uv", f * sg.stack([xd, yd], -1) + pp)
    m.loss(sg.sum(sg.log1p(sg.sum((uv - uv_obs) ** 2, axis=-1) / 4.0)))
    rng = np.random.default_rng(8)
    params = {
        "q": np.array([[1.0, 0.02, -0.03, 0.01], [0.98, -0.05, 0.1, 0.02]]) * 1.3,
        "t": np.array([[0.0, 0.0, 0.0], [-0.5, 0.05, 0.1]]),
        "X": np.column_stack([normal(rng, 3, 2), rng.uniform(4, 8, 3)]),
        "f": np.array(500.0),
        "dist": np.array([-0.2, 0.05, 1e-3, -2e-3]),
    }
    cam_ = np.array([0, 0, 0, 1, 1, 1])
    pt_ = np.array([0, 1, 2, 0, 1, 2])
    inputs = {
        "cam": cam_,
        "pt": pt_,
        "uv_obs": normal(rng, 6, 2, scale=60.0) + 320.0,
        "pp": np.array([320.0, 240.0]),
    }
    return m, _ba_reference, params, inputs


def _icp_reference(p, i):
    R = _rodrigues_torch(p["r"])
    e = ((i["P"] @ R.T + p["t"] - i["Q"]) * i["Nrm"]).sum(-1)
    return (e**2).sum(), {"e": e}


@family
def icp_point_to_plane(hessian=False):
    """Point-to-plane ICP energy sum ((R p + t - q) . n)^2 over correspondences with
    the full rotation R = exp([r]x) (Rodrigues, double-where guarded at r = 0) rather
    than the linearised one, for Gauss-Newton / Newton steps. torch: matrix_exp."""
    m = sg.Model("icp_point_to_plane", hessian=hessian)
    P, Q, Nrm = m.input("P", ("N", 3)), m.input("Q", ("N", 3)), m.input("Nrm", ("N", 3))
    r, t = m.param("r", (3,)), m.param("t", (3,))
    R = _rodrigues_sg(r)
    e = m.output("e", sg.sum((P @ R.T + t - Q) * Nrm, axis=-1))
    m.loss(sg.sum(e**2))
    rng = np.random.default_rng(9)
    P = normal(rng, 8, 3)
    Nrm = normal(rng, 8, 3)
    Nrm /= np.linalg.norm(Nrm, axis=1, keepdims=True)
    Q = P @ _rotvec_matrix([0.05, -0.1, 0.2]).T + [0.1, 0.0, -0.05]
    Q = Q + normal(rng, 8, 3, scale=0.01)
    params = {"r": np.array([0.02, -0.05, 0.1]), "t": np.zeros(3)}
    return m, _icp_reference, params, {"P": P, "Q": Q, "Nrm": Nrm}


STEPS = 6


def _sdf_torch(p, c, rad, k):
    a = (p - c).norm(dim=-1) - rad
    b = p[:, 1] + 1.0
    return -k * torch.logaddexp(-a / k, -b / k)


def _tracer_reference(p, i):
    t = torch.zeros(i["O"].shape[0], dtype=f64)
    for _ in range(STEPS):
        t = t + _sdf_torch(i["O"] + t[:, None] * i["D"], p["c"], p["rad"], 0.1)
    return ((t - i["depth"]) ** 2).sum(), {"t": t}


@family
def sdf_sphere_tracer(hessian=False):
    """Differentiable sphere tracing, unrolled for six steps: t <- t + sdf(o + t d),
    the SDF a smooth union (smin_k = -k logaddexp(-a / k, -b / k), k = 0.1) of a sphere
    (learned centre and radius, |p - c| - rad by sg.norm) and the ground plane y = -1;
    depths fitted to observed ones. torch: the same loop, logaddexp, norm(dim=-1)."""
    m = sg.Model("sdf_sphere_tracer", hessian=hessian)
    O, D, depth = (
        m.input("O", ("R", 3)),
        m.input("D", ("R", 3)),
        m.input("depth", ("R",)),
    )
    c, rad = m.param("c", (3,)), m.param("rad", ())
    t = sg.zeros_like(depth)
    for _ in range(STEPS):
        p = O + t[:, None] * D
        a = sg.norm(p - c, axis=-1) - rad
        b = p[:, 1] + 1.0
        t = t - 0.1 * sg.logaddexp(-a / 0.1, -b / 0.1)
    t = m.output("t", t)
    m.loss(sg.sum((t - depth) ** 2))
    rng = np.random.default_rng(10)
    D = np.column_stack([normal(rng, 4, 2, scale=0.15), np.ones(4)])
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    O = np.tile([0.0, 0.0, -3.0], (4, 1))
    params = {"c": np.array([0.1, -0.05, 0.2]), "rad": np.array(1.0)}
    return (
        m,
        _tracer_reference,
        params,
        {"O": O, "D": D, "depth": rng.uniform(1.5, 2.5, 4)},
    )


# ============================================================= 2. first and second order


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_agrees_with_pytorch_and_central_differences(name):
    _, reference, params, inputs = FAMILIES[name]()
    module = module_of(name, hessian=True)
    check(module, reference, params, inputs)
    assert_matches_central_differences(module, params, inputs)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_hessian_and_hvp_agree_with_pytorch(name):
    FAMILIES.assert_second_order_agrees(name)


# unrolled builds cost 2-6 s of compile each: the families whose edges need them
UNROLLED = {
    "quaternion_pose",
    "sinc_interpolation",
    "amber_torsions",
    "bond_angles",
    "planar_arm_pose_ik",
    "icp_point_to_plane",
}


@pytest.mark.parametrize("name", sorted(UNROLLED))
def test_unrolled_at_the_datas_sizes_agrees_with_pytorch(name):
    FAMILIES.assert_unrolled_agrees(name)


# ======================================================================== 3. edges
# name -> (family, edit(params, inputs) -> (params, inputs)).


def _so3_identity(p, i):
    """Every node at r = 0 exactly and every measurement the identity: E = I exactly,
    the Taylor branches of both the exp and the log map."""
    return {"r": np.zeros((3, 3))}, {**i, "Rm": np.stack([np.eye(3)] * 4)}


AXIS = np.array([1.0, -2.0, 0.5]) / np.linalg.norm([1.0, -2.0, 0.5])


def _so3_residuals(p, i):
    """Nodes at r = 0, residual rotations of angle 0, 1e-9, 1e-4 and 0.5 about a skew
    axis (E = Rm^T): both branches of the log map."""
    Rm = np.stack([_rotvec_matrix(-a * AXIS) for a in (0.0, 1e-9, 1e-4, 0.5)])
    return {"r": np.zeros((3, 3))}, {**i, "Rm": Rm}


def _so3_residual_near_pi(p, i, angle=np.pi - 1e-2):
    """The family's nodes, measurements making the last edge's residual E = exp(angle
    axis) exactly: Rm = R_i^T R_j exp(-angle axis)."""
    R = [_rotvec_matrix(r) for r in p["r"]]
    Rm = i["Rm"].copy()
    a, b = i["ei"][-1], i["ej"][-1]
    Rm[-1] = R[a].T @ R[b] @ _rotvec_matrix(-angle * AXIS)
    return p, {**i, "Rm": Rm}


def _so3_node_at_pi(p, i):
    r = p["r"].copy()
    r[1] = np.pi * np.array([0.0, 0.6, 0.8])
    return {"r": r}, i


def _tors_planar(p, i):
    X = p["X"].copy()
    X[:, 2] = 0.0
    return {**p, "X": X}, i


def _tors_collinear(p, i):
    """Atoms 1, 2, 3 exactly on one line: torsions 0 and 1 have b1 x b2 = 0 exactly,
    atan2(0, 0)."""
    X = p["X"].copy()
    X[1:4] = [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [2.5, 0.0, 0.0]]
    return {**p, "X": X}, i


def _angles_collinear(p, i):
    """Atoms 0, 1, 2 on one line (theta = pi, the clip active) and 2, 3, 4 folded
    (theta = 0)."""
    X = p["X"].copy()
    X[0] = X[1] - 0.5 * (X[2] - X[1])
    X[4] = X[3] + 2.0 * (X[2] - X[3])
    return {**p, "X": X}, i


def _ff_planar(p, i):
    X = p["X"].copy()
    X[:, 2] = 0.0
    return {**p, "X": X, "q": np.zeros(6)}, i


def _arm_heading_pi(p, i):
    goal = i["goal"].copy()
    goal[:, 2] = p["th"].sum(1) - np.pi
    return p, {**i, "goal": goal}


def _ba_on_axis(p, i):
    """Point 0 on camera 0's optical axis (r^2 = 0), camera 0 at the identity."""
    q, X = p["q"].copy(), p["X"].copy()
    q[0] = [1.0, 0.0, 0.0, 0.0]
    X[0] = [0.0, 0.0, 5.0]
    return {**p, "q": q, "X": X}, i


def _tracer_through_centre(p, i):
    D = i["D"].copy()
    D[0] = p["c"] - i["O"][0]
    D[0] /= np.linalg.norm(D[0])
    return p, {**i, "D": D}


EDGES = {
    "so3_identity_exact": ("so3_rotation_averaging", _so3_identity),
    "so3_residuals_0_1e-9_1e-4": ("so3_rotation_averaging", _so3_residuals),
    "so3_residual_near_pi": ("so3_rotation_averaging", _so3_residual_near_pi),
    "so3_node_at_pi": ("so3_rotation_averaging", _so3_node_at_pi),
    "quat_identity": (
        "quaternion_pose",
        lambda p, i: ({**p, "q": np.array([1.0, 0.0, 0.0, 0.0])}, i),
    ),
    "quat_half_turn": (
        "quaternion_pose",
        lambda p, i: ({**p, "q": np.array([0.0, 0.0, 0.0, 1.0])}, i),
    ),
    "quat_scale_1e-100": (
        "quaternion_pose",
        lambda p, i: ({**p, "q": 1e-100 * p["q"]}, i),
    ),
    "quat_scale_1e100": (
        "quaternion_pose",
        lambda p, i: ({**p, "q": 1e100 * p["q"]}, i),
    ),
    "sinc_w_0": ("sinc_interpolation", lambda p, i: ({**p, "w": np.array(0.0)}, i)),
    "sinc_w_3e-5": ("sinc_interpolation", lambda p, i: ({**p, "w": np.array(3e-5)}, i)),
    "sinc_w_1e-3": ("sinc_interpolation", lambda p, i: ({**p, "w": np.array(1e-3)}, i)),
    "torsions_planar_cis_trans": ("amber_torsions", _tors_planar),
    "angles_collinear_and_folded": ("bond_angles", _angles_collinear),
    "ff_planar_uncharged": ("mm_force_field", _ff_planar),
    "arm_straight": ("planar_arm_pose_ik", lambda p, i: ({"th": np.zeros((3, 3))}, i)),
    "arm_heading_off_by_pi": ("planar_arm_pose_ik", _arm_heading_pi),
    "spatial_arm_zero": ("spatial_arm_ik", lambda p, i: ({"q": np.zeros((2, 5))}, i)),
    "spatial_target_at_base": (
        "spatial_arm_ik",
        lambda p, i: (p, {**i, "target": np.zeros((2, 3))}),
    ),
    "ba_point_on_axis": ("ba_brown_conrady", _ba_on_axis),
    "ba_no_distortion": (
        "ba_brown_conrady",
        lambda p, i: ({**p, "dist": np.zeros(4)}, i),
    ),
    "icp_r_0": ("icp_point_to_plane", lambda p, i: ({**p, "r": np.zeros(3)}, i)),
    "icp_r_1e-9": ("icp_point_to_plane", lambda p, i: ({**p, "r": 1e-9 * p["r"]}, i)),
    "icp_r_pi": (
        "icp_point_to_plane",
        lambda p, i: ({**p, "r": np.pi * p["r"] / np.linalg.norm(p["r"])}, i),
    ),
    "tracer_ray_through_centre": ("sdf_sphere_tracer", _tracer_through_centre),
    "tracer_tiny_sphere": (
        "sdf_sphere_tracer",
        lambda p, i: ({**p, "rad": np.array(1e-8)}, i),
    ),
}


# Near theta = pi the user's log map computes sin(theta) from theta = arccos(c), whose
# error ~1e-16 / sqrt(1 - c^2) is amplified by 1 / sin(theta): at pi - 0.01 the
# gradient is good to ~1e-7 (symgrad's and torch's alike, judged by differences with a
# larger step). The heading wrap is discontinuous at an error of pi: no differences.
EDGE_FD_STEP = {"so3_residual_near_pi": 1e-4, "arm_heading_off_by_pi": None}
EDGE_TOL = {"so3_residual_near_pi": 1e-6}


def _assert_central_differences(module, params, inputs, step, tol=1e-5, seed=3):
    """v . grad against central differences along random directions, step relative to
    each parameter's size (helpers' check with a step to choose)."""
    _, grads = module.value_and_grad(params, inputs)
    rng = np.random.default_rng(seed)
    for _ in range(2):
        v = {
            k: rng.standard_normal(np.shape(p)) * (float(np.max(np.abs(p))) or 1e-3)
            for k, p in params.items()
        }

        def f(sign, v=v):
            shifted = {k: params[k] + sign * step * v[k] for k in params}
            return float(module.value_and_grad(shifted, inputs)[0])

        fd = (f(1) - f(-1)) / (2 * step)
        exact = sum(float(np.sum(grads[k] * v[k])) for k in params)
        assert abs(exact - fd) <= tol * max(abs(exact), abs(fd), 1e-8) + 1e-9, (
            exact,
            fd,
        )


# torch's Hessian (matrix_exp's double backward) is off by 2e-3 there, symgrad's
# agrees with differences of its own gradient to 4e-6
HESSIAN_BY_DIFFERENCES = {"so3_residual_near_pi"}


def _hessian_by_differences(module, params, inputs, h=1e-4):
    """Central differences of the module's own gradient, one column per parameter
    entry, in PARAMS order."""
    names = list(module.PARAMS)
    flat = np.concatenate([np.ravel(params[k]) for k in names])
    cuts = np.cumsum([np.size(params[k]) for k in names])[:-1]

    def grad(x):
        parts = np.split(x, cuts)
        p = {
            k: v.reshape(np.shape(params[k])) for k, v in zip(names, parts, strict=True)
        }
        g = module.value_and_grad(p, inputs)[1]
        return np.concatenate([np.ravel(g[k]) for k in names])

    return np.array(
        [(grad(flat + h * e) - grad(flat - h * e)) / (2 * h) for e in np.eye(flat.size)]
    ).T


# the unrolled function raises there and value_and_grad falls back to NumPy (right
# numbers): the strict xfail test_unrolled_double_where_rodrigues_at_zero_minimal
UNROLLED_RAISES = {"icp_r_0"}


def _edge(case):
    name, edit = EDGES[case]
    _, reference, params, inputs = FAMILIES[name]()
    params, inputs = edit(params, inputs)
    return name, reference, params, inputs


@pytest.mark.parametrize("case", list(EDGES))
def test_edges_first_and_second_order_and_unrolled(case):
    """Gradients against torch and central differences, the Hessian and hvp against
    torch's, and the unrolled code (not NumPy's fallback) at the same point."""
    name, reference, params, inputs = _edge(case)
    module = module_of(name, hessian=True)
    tol = EDGE_TOL.get(case, 1e-9)
    check(module, reference, params, inputs, tol=tol)
    step = EDGE_FD_STEP.get(case, 1e-6)
    if step is not None:
        _assert_central_differences(module, params, inputs, step)
    if case in HESSIAN_BY_DIFFERENCES:
        H, expected = module.hessian(params, inputs), _hessian_by_differences(
            module, params, inputs
        )
        assert rel(H, expected, 1e-3 * np.max(np.abs(expected))) <= 1e-5
    else:
        assert_second_order_agrees(module, reference, params, inputs, scaled=True)
    if name in UNROLLED and case not in UNROLLED_RAISES:
        check_unrolled(module_of(name, unroll=True), reference, params, inputs)


# ==================================================================== 4. closed forms


def _log_exp_model():
    m = sg.Model("log_of_exp", hessian=True)
    c = m.input("c", ("B", 3))
    r = m.param("r", ("B", 3))
    w, th = _log_so3_sg(_rodrigues_sg(r))
    m.output("theta", th)
    m.loss(sg.sum(c * w))
    return m


def test_log_map_of_exp_map_is_the_identity_from_zero_to_near_pi():
    """log(exp(r)) = r for |r| < pi, so sum(c * log(exp(r))) has gradient c and
    Hessian 0, at r = 0 exactly (both Taylor branches), 1e-9, 1e-5 (the arccos branch
    just past the switch), 1, 2.5 and 3.1; theta is |r|."""
    module = compile_module(_log_exp_model())
    rng = np.random.default_rng(30)
    dirs = normal(rng, 6, 3)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    angles = np.array([0.0, 1e-9, 1e-5, 1.0, 2.5, 3.1])
    params = {"r": dirs * angles[:, None]}
    inputs = {"c": normal(rng, 6, 3)}
    outputs, _ = module.forward(params, inputs)
    assert rel(outputs["loss"], np.sum(inputs["c"] * params["r"])) <= 1e-12
    # theta = sqrt(2 (1 - c)) in the Taylor branch: c rounds to 1 below ~1e-8, so
    # theta reads 0 at 1e-9 (w, from vee(E - E^T), does not lose it)
    assert np.max(np.abs(outputs["theta"] - angles)) <= 2e-9
    _, grads = module.value_and_grad(params, inputs)
    # the Jacobian of log o exp is I; round-off grows as 1 / sin(theta) near pi
    assert np.max(np.abs(grads["r"][:5] - inputs["c"][:5])) <= 1e-9
    assert np.max(np.abs(grads["r"][5] - inputs["c"][5])) <= 1e-7
    H = module.hessian({"r": params["r"][:4]}, {"c": inputs["c"][:4]})
    assert np.max(np.abs(H)) <= 1e-6


def test_quaternion_gradient_is_scale_free_and_sign_symmetric():
    """The loss depends on q / |q| only: q . grad = 0 (Euler), grad(s q) = grad(q) / s
    for s = 1e-100 and 1e100, and grad(-q) = -grad(q) (the double cover)."""
    module = module_of("quaternion_pose", hessian=True)
    _, _, params, inputs = FAMILIES["quaternion_pose"]()
    loss, g = module.value_and_grad(params, inputs)
    assert abs(params["q"] @ g["q"]) <= 1e-12 * np.linalg.norm(g["q"])
    for s in (1e-100, 1e100, -1.0):
        loss_s, g_s = module.value_and_grad({**params, "q": s * params["q"]}, inputs)
        assert rel(loss_s, loss) <= 1e-13
        assert rel(s * g_s["q"], g["q"]) <= 1e-12
        assert rel(g_s["t"], g["t"]) <= 1e-12


def test_force_field_forces_have_no_net_force_or_torque():
    """The energy is invariant under translations and rotations of the molecule: the
    forces sum to zero, so do their torques x_i x F_i, and the Hessian maps a rigid
    translation to zero."""
    module = module_of("mm_force_field", hessian=True)
    _, _, params, inputs = FAMILIES["mm_force_field"]()
    _, g = module.value_and_grad(params, inputs)
    scale = np.max(np.abs(g["X"]))
    assert np.max(np.abs(g["X"].sum(0))) <= 1e-11 * scale
    torque = np.cross(params["X"], g["X"]).sum(0)
    assert np.max(np.abs(torque)) <= 1e-11 * scale * np.max(np.abs(params["X"]))
    H = module.hessian(params, inputs)
    n = params["X"].size
    for axis in range(3):
        shift = np.zeros((6, 3))
        shift[:, axis] = 1.0
        assert np.max(np.abs(H[:n, :n] @ shift.ravel())) <= 1e-9 * np.max(np.abs(H))


def test_icp_hessian_at_zero_residual_is_gauss_newton():
    """Where every residual is 0 (q = p, r = 0, t = 0) the gradient is 0 and the
    Hessian is exactly the Gauss-Newton matrix 2 J^T J, J_i = [p_i x n_i, n_i]; one
    Newton step from a pose 2e-3 away lands 100 times closer."""
    module = module_of("icp_point_to_plane", hessian=True)
    _, _, _, inputs = FAMILIES["icp_point_to_plane"]()
    inputs = {**inputs, "Q": inputs["P"].copy()}
    params = {"r": np.zeros(3), "t": np.zeros(3)}
    _, g = module.value_and_grad(params, inputs)
    assert np.max(np.abs(g["r"])) == 0.0 and np.max(np.abs(g["t"])) == 0.0
    J = np.column_stack([np.cross(inputs["P"], inputs["Nrm"]), inputs["Nrm"]])
    assert rel(module.hessian(params, inputs), 2 * J.T @ J) <= 1e-13
    start = {"r": np.array([1e-3, -2e-3, 5e-4]), "t": np.array([1e-3, 0.0, -1e-3])}
    _, g = module.value_and_grad(start, inputs)
    step = np.linalg.solve(
        module.hessian(start, inputs), np.concatenate([g["r"], g["t"]])
    )
    new = np.concatenate([start["r"], start["t"]]) - step
    assert np.max(np.abs(new)) <= 1e-2 * 2e-3  # quadratic convergence


def test_sinc_at_zero_bandwidth_closed_form_and_torch_sinc():
    """At w = 0 every sinc is 1: the prediction is sum(a), d loss / dw = 0 (sinc is
    even) and d2 loss / dw2 = 2 sum_n res_n (-sum_k a_k d_nk^2 / 3). torch.sinc(x /
    pi) agrees to first order at the family's point (nodes included); its double
    backward at x = 0 is nan, where symgrad's Hessian agrees with differences of its
    gradient."""
    module = module_of("sinc_interpolation", hessian=True)
    _, _, params, inputs = FAMILIES["sinc_interpolation"]()
    check(module, _torch_sinc_reference, params, inputs)
    z = {**params, "w": np.array(0.0)}
    _, g = module.value_and_grad(z, inputs)
    res = np.sum(params["a"]) - inputs["y"]
    assert rel(g["a"], 2 * np.full(4, res.sum())) <= 1e-13
    assert g["w"] == 0.0
    d2 = (inputs["t"][:, None] - inputs["tk"][None, :]) ** 2
    expected = 2 * np.sum(res * -(d2 @ params["a"]) / 3)
    assert rel(module.hessian(z, inputs)[-1, -1], expected) <= 1e-12
    th = torch.tensor(params["a"]), torch.tensor(2.7, dtype=f64, requires_grad=True)
    x = th[1] * torch.tensor(inputs["t"][:, None] - inputs["tk"][None, :])
    (gw,) = torch.autograd.grad(torch.sinc(x / math.pi).sum(), th[1], create_graph=True)
    assert torch.isnan(torch.autograd.grad(gw, th[1])[0])  # nodes: x = 0 exactly
    H = module.hessian(params, inputs)
    expected = _hessian_by_differences(module, params, inputs, h=1e-5)
    assert np.all(np.isfinite(H)) and rel(H, expected) <= 1e-7


def test_naive_single_where_sinc_is_finite_where_torch_is_nan():
    """sg.where(x == 0, 1, sin(x) / x) (one where): torch's gradient at x = 0 is nan
    (0 times the nan of the branch not taken); symgrad's is 0, the derivative of the
    branch taken, with no NumPy warning; elsewhere both are cos x / x - sin x / x^2."""
    m = sg.Model("naive_sinc")
    x = m.param("x", ("n",))
    m.loss(sg.sum(sg.where(x == 0, 1.0, sg.sin(x) / x)))
    module = compile_module(m)
    xs = np.array([0.0, 1e-3, 1.0])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, g = module.value_and_grad({"x": xs}, {})
    tx = torch.tensor(xs, requires_grad=True)
    torch.where(tx == 0, 1.0, torch.sin(tx) / tx).sum().backward()
    assert torch.isnan(tx.grad[0]) and g["x"][0] == 0.0
    assert rel(g["x"][1:], tx.grad[1:].numpy()) <= 1e-12
    assert (
        rel(g["x"][1:], np.cos(xs[1:]) / xs[1:] - np.sin(xs[1:]) / xs[1:] ** 2) <= 1e-9
    )


def test_dihedral_of_a_constructed_geometry():
    """phi of atoms built with known dihedrals (Newman projection: p3 turned by phi
    about the b1 axis) is phi, for -179, -90, 0, 60, 180 degrees."""
    module = module_of("amber_torsions", hessian=True)
    _, _, params, inputs = FAMILIES["amber_torsions"]()
    for deg in (-179.0, -90.0, 0.0, 60.0, 180.0):
        phi = math.radians(deg)
        X = params["X"].copy()
        X[:4] = [
            [1.0, 1.0, 0.0],
            [0.0, 0.0, 0.0],
            [0.0, 0.0, 1.5],
            [math.cos(phi), math.sin(phi), 1.5 + 0.4],
        ]
        # p0 sits at azimuth 45 degrees: rotate p3's azimuth to 45 + phi
        X[3, :2] = [math.cos(phi + math.pi / 4), math.sin(phi + math.pi / 4)]
        outputs, _ = module.forward({**params, "X": X}, inputs)
        got = outputs["phi"][0]
        assert abs(math.remainder(got - phi, 2 * math.pi)) <= 1e-12, (deg, got)


def test_collinear_torsion_has_zero_angle_gradient_as_in_torch():
    """Three atoms of a torsion on one line: b1 x b2 = 0, atan2(0, 0) = 0 with the
    gradient 0 that torch also gives (the dihedral is undefined); the force from
    that term is 0 and the rest of the gradient agrees with torch."""
    name, reference, params, inputs = (
        "amber_torsions",
        *FAMILIES["amber_torsions"]()[1:],
    )
    params, inputs = _tors_collinear(params, inputs)
    module = module_of(name, hessian=True)
    check(module, reference, params, inputs)
    outputs, _ = module.forward(params, inputs)
    assert outputs["phi"][0] == 0.0 and outputs["phi"][1] == 0.0


# ============================================================ 5. wrong behaviour found

UNROLLED_DOUBLE_WHERE_REASON = (
    "the unrolled function of Rodrigues' double-where idiom raises ZeroDivisionError at "
    "r = 0 exactly (the point the idiom guards, an ICP user's initial pose), so every "
    "call there silently falls back to NumPy (right numbers, lost speed): SymPy pushes "
    "sg.sqrt(sg.where(small, 1.0, th2)) inside the where and the unrolled code computes "
    "the not-taken branch t21 = 1.0 / math.sqrt(th2) unconditionally before "
    "t22 = 1.0 if small else t21 (symgrad/unroll.py, CSE of a conditional's branch "
    "hoisted out of its conditional expression)"
)


def _unrolled_rodrigues(r_shape):
    m = sg.Model("rodrigues_unrolled")
    v = m.input("v", (3,))
    r = m.param("r", r_shape)
    m.loss(sg.sum(_rodrigues_sg(r) @ v))
    return m


@pytest.mark.xfail(strict=True, reason=UNROLLED_DOUBLE_WHERE_REASON)
def test_unrolled_double_where_rodrigues_at_zero_minimal():
    m = _unrolled_rodrigues((3,))
    m.unroll()
    module = compile_module(m)
    params, inputs = {"r": np.zeros(3)}, {"v": np.array([1.0, 2.0, 3.0])}
    _, g = module.value_and_grad(params, inputs)
    # d/dr sum((I + [r]x) v) = v x 1 at r = 0: NumPy's fallback gets it right
    assert rel(g["r"], np.cross(inputs["v"], np.ones(3))) <= 1e-12
    module._value_and_grad_unrolled(params["r"], inputs["v"])  # ZeroDivisionError


def test_unrolled_double_where_rodrigues_off_zero_runs_unrolled():
    """The same unrolled function at r = 1e-9 (Taylor branch, no zero to divide by)
    and r = 0.3 runs and agrees with torch's matrix_exp."""
    m = _unrolled_rodrigues((3,))
    m.unroll()
    module = compile_module(m)

    def reference(p, i):
        return (_rodrigues_torch(p["r"]) @ i["v"]).sum(), {}

    for r in (np.full(3, 1e-9), np.array([0.3, -0.1, 0.2])):
        check_unrolled(module, reference, {"r": r}, {"v": np.array([1.0, 2.0, 3.0])})


# ======================================================================= 6. messages


def _porting_model():
    m = sg.Model("porting")
    X = m.param("X", ("N", 3))
    q = m.param("q", (4,))
    W = m.param("W", (3, 3))
    idx = m.input("idx", ("P",))
    n = m.input("n", ("T",), dtype="int64")
    return m, X, q, W, idx, n


# the mistakes met porting this round's models, with what each message must name
SPELLINGS = {
    "x.acos()": (lambda X, q, W, idx, n: X.acos(), "sg.arccos"),
    "torch.acos": (lambda X, q, W, idx, n: torch.acos(X), "sg.arccos"),
    "sg.atan2": (lambda X, q, W, idx, n: sg.atan2(X, X), "sg.arctan2"),
    "math.atan2": (lambda X, q, W, idx, n: math.atan2(X[0, 1], X[0, 0]), "sg."),
    "torch.linalg.cross": (
        lambda X, q, W, idx, n: torch.linalg.cross(X, X),
        "sg.cross",
    ),
    "sg.cross(dim=)": (lambda X, q, W, idx, n: sg.cross(X, X, dim=1), "axis="),
    "sg.cross of 2-vectors": (lambda X, q, W, idx, n: sg.cross(X[:, :2], X), "not 3"),
    "sg.cross of a quaternion": (lambda X, q, W, idx, n: sg.cross(q, q), "not 3"),
    "x.clamp": (lambda X, q, W, idx, n: X.clamp(-1, 1), "clip"),
    "sg.norm(dim=)": (lambda X, q, W, idx, n: sg.norm(X, dim=-1), "axis="),
    "x.norm()": (lambda X, q, W, idx, n: X.norm(dim=-1), "sg.norm"),
    "F.normalize": (lambda X, q, W, idx, n: F.normalize(X, dim=-1), "sg.norm"),
    "sg.sinc": (lambda X, q, W, idx, n: sg.sinc(X), "sg.where"),
    "torch.linalg.matrix_exp": (
        lambda X, q, W, idx, n: torch.linalg.matrix_exp(W),
        "Rodrigues",
    ),
    "sg.trace": (lambda X, q, W, idx, n: sg.trace(W), "einsum"),
    "if on a condition": (lambda X, q, W, idx, n: 1 if X[0, 0] > 0 else 0, "sg.where"),
    "float index": (lambda X, q, W, idx, n: X[idx], "int64"),
    "int64 multiplicity": (lambda X, q, W, idx, n: sg.cos(n * X[0, 0]), "float64"),
    "np.array constant": (lambda X, q, W, idx, n: X @ np.eye(3), "m.input"),
    "sg.stack of a float": (lambda X, q, W, idx, n: sg.stack([q[0], 1.0]), "full_like"),
    # were strict xfails (messages that named no fix, or the wrong thing): fixed
    "sg.arccos(x, -1, 1)": (
        lambda X, q, W, idx, n: sg.arccos(X, -1.0, 1.0),
        "sg.arccos(x) takes one argument (clip first: x.clip(-1.0, 1.0))",
    ),
    "torch.deg2rad": (lambda X, q, W, idx, n: torch.deg2rad(X), "180"),
    "np.linalg.svd": (lambda X, q, W, idx, n: np.linalg.svd(W), "no SVD"),
    "torch.linalg.vecdot": (
        lambda X, q, W, idx, n: torch.linalg.vecdot(X, X),
        "sg.sum",
    ),
    "sg.cross of (N, 3) and (3, 3)": (lambda X, q, W, idx, n: sg.cross(X, W), "(3, 3)"),
}


@pytest.mark.parametrize("case", list(SPELLINGS))
def test_porting_mistakes_name_the_fix(case):
    fn, fix = SPELLINGS[case]
    _, X, q, W, idx, n = _porting_model()
    with pytest.raises(Exception) as info:
        fn(X, q, W, idx, n)
    assert fix in str(info.value), str(info.value)
