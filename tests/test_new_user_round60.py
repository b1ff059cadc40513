"""Round 60 of new-user models: materials and molecular-simulation users (positions
as the parameter, the energy as the loss, forces = -gradient, the Hessian the
force-constant matrix), with torch 2.13 CPU float64 autograd, central finite
differences and physics identities (no net force or torque, energy and forces
covariant under translations and rotations, a symmetric Hessian annihilating
translations) as the judges.

Families not covered before (round 26 did force matching of a bare Morse, round 51 a
bonded force field with arccos angles): a Morse pair potential under a CHARMM-like C1
switch (nested sg.where on r < r_on, r < rc) over int64 pairs; BKS-like Buckingham plus
shifted-force Coulomb cut at rc; the Ewald real-space sum q_i q_j erfc(alpha r) / r plus
the self term, with positions, charges and alpha as parameters (sg.erfc); a Finnis-
Sinclair EAM (F = -sqrt(rho) of a cut-off density sum) over ALL ordered pairs with an
off-diagonal mask; Stillinger-Weber two- and three-body terms (cos theta by dot / norms,
exp(gamma / (r - a)) by the double-where idiom) over int64 triplets; a Tersoff bond order
(zeta summed from triplets onto bonds by sg.segment_sum, (beta zeta)^n with n = 0.787,
the sin cutoff switch); soft spheres in a periodic box under the minimum image (the
shifts round(d / L) as NumPy data, torch's twin calling torch.round); a bonded chain
with angles by arctan2(|u x v|, u . v) and a two-term torsion by Blondel's arctan2;
and a GAP / Behler-Parrinello-like radial descriptor sum exp(-eta (r - rs)^2) f_c(r)
under a linear model with the weights as parameters too. All nine first order against
torch and differences, seven Hessians and hvps (plus symmetry and the acoustic sum
rule), three unrolled, physics checks on the seven position-only families; 23 edges
(eight also second order): two atoms exactly at rc and at r_on, every pair beyond rc,
atoms 1e-6 apart (Morse, Buckingham + Coulomb, Ewald, descriptor), the Ewald sum at
alpha r = 30 (erfc underflows: the energy is exactly the self term, forces exactly 0)
and 26, zero charges, an EAM dimer and a neighbour at rc, collinear triples (theta =
0 and pi) for SW, Tersoff and the bonded chain (whose torsion is then atan2(0, 0): no
differences there), an SW neighbour exactly at the cutoff a, an equilateral Tersoff
triangle, atoms exactly L / 2 apart across the box and touching through the faces,
cis / trans planar torsions. Closed forms: the shifted-force Coulomb E = (rc - r)^2 /
(r rc^2) near rc; a NumPy constant pair index (np.triu_indices) equals int64 inputs.

Found (strict xfails, not fixed): the all-pairs idiom sqrt(sum(d^2) + (1 - mask)) (the
diagonal lifted before the sqrt) loses digits: SymPy flattens the user's grouping, the
generated code computes np.sqrt(1.0 + r2 - mask), and (1 + 1e-12) - 1 keeps 4 digits
of r^2: atoms 1e-6 apart are 1.0000444e-6 apart, forces off by 4e-5 relative (torch:
exact; + sg.eye(n) or a named m.let("lift", 1 - mask) keeps them). Messages (10
cases, were strict xfails; fixed since: the porting table names the recipes): the minimum image's round has no recipe (torch.round, np.round, np.rint and
round(x) say "use sg's functions" or "no __round__", sg.round / sg.floor / sg.rint
are bare AttributeErrors, where % and torch.remainder name "x - c * k with k computed
in NumPy"); F.pdist says only "use sg's functions" and sg.pdist is bare (torch.cdist
and sg.cdist name sg.norm(a[:, None] - b[None], axis=-1)); sg.segment_sum(dim_size=)
(torch_scatter's keyword) is Python's bare "unexpected keyword". Clear (14 cases):
torch.cdist, sg.cdist, scatter_add / index_add the torch way, sg.scatter_add, an index
by torch.triu_indices, torch.special.erfc, x.erfc(), torch.linalg.norm, %,
torch.remainder, torch.where, x.sum(dim=). Noted, not bugs: an EAM atom with no
neighbour inside rc (rho = 0) and a Tersoff bond whose atom has no other neighbour
(zeta = 0, (beta zeta)^n with n < 1) give nan gradients in torch and symgrad alike
(an infinite slope times 0); at r = rc exactly the switched energies are C1 but not
C2, so central differences are off by O(step) there (torch is the judge);
torch.triu_indices(x.shape[0], ...) fails in torch itself (a symbolic Size is no int).
"""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
from helpers import (
    Families,
    assert_matches_central_differences,
    assert_second_order_agrees,
    check,
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
I64 = {"dtype": "int64"}


# ============================================================ helpers (NumPy / torch)


def all_pairs(n):
    i, j = np.triu_indices(n, k=1)
    return {"i": i.astype(np.int64), "j": j.astype(np.int64)}


def jittered_lattice(rng, side, spacing, scale=0.05):
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1)
    return spacing * grid.reshape(-1, 3) + normal(rng, side**3, 3, scale=scale)


def where(lib, cond, a, b):
    if lib is sg:
        return sg.where(cond, a, b)
    a = a if torch.is_tensor(a) else torch.tensor(float(a), dtype=torch.float64)
    b = b if torch.is_tensor(b) else torch.tensor(float(b), dtype=torch.float64)
    return torch.where(cond, a, b)


def switch(lib, r, r_on, rc):
    """CHARMM-like smooth switch: 1 below r_on, 0 from rc, C1 in between."""
    x = (rc - r) ** 2 * (rc + 2 * r - 3 * r_on) / (rc - r_on) ** 3
    return where(lib, r < r_on, 1.0, where(lib, r < rc, x, 0.0))


def pair_r(lib, pos, i, j):
    d = pos[i] - pos[j]
    if lib is sg:
        return sg.norm(d, axis=-1)
    return torch.linalg.vector_norm(d, dim=-1)


def all_pair_r(lib, pos, mask):
    """(N, N) distances of every ordered pair; the diagonal (r = 0) is lifted to 1 by
    the off-diagonal mask before the sqrt, so no sqrt(0) is differentiated."""
    d = pos[:, None, :] - pos[None, :, :]
    return (
        lib.sqrt((d**2).sum(-1) + (1 - mask))
        if lib is torch
        else sg.sqrt(sg.sum(d**2, axis=-1) + (1 - mask))
    )


def rotation(a, b, c):
    ca, sa, cb, sb, cc, sc = (f(t) for t in (a, b, c) for f in (np.cos, np.sin))
    Rz = np.array([[ca, -sa, 0], [sa, ca, 0], [0, 0, 1]])
    Ry = np.array([[cb, 0, sb], [0, 1, 0], [-sb, 0, cb]])
    Rx = np.array([[1, 0, 0], [0, cc, -sc], [0, sc, cc]])
    return Rz @ Ry @ Rx


# ===================================================================== 1. model families
# Each family: (hessian=False) -> (model, torch twin, params, inputs).

MORSE = {"D": 0.8, "a": 1.5, "r0": 1.6, "r_on": 2.5, "rc": 3.0}


def _morse(lib, r):
    c = MORSE
    e = c["D"] * ((1 - lib.exp(-c["a"] * (r - c["r0"]))) ** 2 - 1)
    return e * switch(lib, r, c["r_on"], c["rc"])


def _morse_reference(p, i):
    e = _morse(torch, pair_r(torch, p["pos"], i["i"], i["j"]))
    return e.sum(), {"pair_energy": e}


@family
def morse_switched(hessian=False):
    """A Morse pair potential D ((1 - e^{-a (r - r0)})^2 - 1) times a CHARMM-like
    switching function (1 below r_on = 2.5, (rc - r)^2 (rc + 2r - 3 r_on) / (rc -
    r_on)^3 up to rc = 3, then 0: nested sg.where on r < r_on, r < rc), over all pairs
    of a jittered 2x2x2 lattice (spacing 1.6: pairs inside, across and beyond the
    switch) by int64 pair indices. torch: torch.where, linalg.vector_norm."""
    m = sg.Model("morse_switched", hessian=hessian)
    pos = m.param("pos", ("N", 3))
    i, j = m.input("i", ("P",), **I64), m.input("j", ("P",), **I64)
    r = m.let("r", pair_r(sg, pos, i, j))
    e = m.output("pair_energy", _morse(sg, r))
    m.loss(sg.sum(e))
    rng = np.random.default_rng(0)
    return m, _morse_reference, {"pos": jittered_lattice(rng, 2, 1.6)}, all_pairs(8)


BKS = {"A": 1388.773, "rho": 0.3623, "C": 175.0, "rc": 5.5}


def _bks(lib, r, qq):
    """Buckingham A e^{-r / rho} - C / r^6 plus a shifted-force Coulomb, cut at rc."""
    c, rc = BKS, BKS["rc"]
    buck = c["A"] * lib.exp(-r / c["rho"]) - c["C"] / r**6
    coul = qq * (1 / r - 1 / rc + (r - rc) / rc**2)
    return where(lib, r < rc, buck + coul, 0.0)


def _bks_reference(p, i):
    r = pair_r(torch, p["pos"], i["i"], i["j"])
    e = _bks(torch, r, i["q"][i["i"]] * i["q"][i["j"]])
    return e.sum(), {"pair_energy": e}


@family
def buckingham_coulomb_sf(hessian=False):
    """A BKS-like silica model: Buckingham A e^{-r / rho} - C / r^6 plus Coulomb
    with the shifted-force cutoff q_i q_j (1 / r - 1 / rc + (r - rc) / rc^2) (energy
    and force continuous at rc = 5.5), sg.where(r < rc, ., 0), charges gathered by
    the pair indices from an input. A 2x2x2 lattice of spacing 1.7 of alternating
    +-1.2 / 2.4 charges. torch: the same with torch.where."""
    m = sg.Model("buckingham_coulomb_sf", hessian=hessian)
    pos = m.param("pos", ("N", 3))
    q = m.input("q", ("N",))
    i, j = m.input("i", ("P",), **I64), m.input("j", ("P",), **I64)
    e = m.output("pair_energy", _bks(sg, pair_r(sg, pos, i, j), q[i] * q[j]))
    m.loss(sg.sum(e))
    rng = np.random.default_rng(1)
    q = np.array([2.4, -1.2, -1.2, 2.4, -1.2, 2.4, 2.4, -1.2]) / 3
    inputs = {"q": q, **all_pairs(8)}
    return m, _bks_reference, {"pos": jittered_lattice(rng, 2, 1.7, 0.1)}, inputs


def _ewald_reference(p, i):
    r = pair_r(torch, p["pos"], i["i"], i["j"])
    q, alpha = p["q"], p["alpha"]
    real = (q[i["i"]] * q[i["j"]] * torch.special.erfc(alpha * r) / r).sum()
    self_term = -alpha / math.sqrt(math.pi) * (q**2).sum()
    return real + self_term, {"real": real}


@family
def ewald_real_space(hessian=False):
    """The real-space part of an Ewald sum, sum q_i q_j erfc(alpha r) / r over pairs,
    plus the self term -alpha / sqrt(pi) sum q^2; positions, charges (a charge-fitting
    user) and the splitting parameter alpha are parameters. 6 ions in a box of 4.
    torch: torch.special.erfc."""
    m = sg.Model("ewald_real_space", hessian=hessian)
    pos, q, alpha = m.param("pos", ("N", 3)), m.param("q", ("N",)), m.param("alpha", ())
    i, j = m.input("i", ("P",), **I64), m.input("j", ("P",), **I64)
    r = pair_r(sg, pos, i, j)
    real = m.output("real", sg.sum(q[i] * q[j] * sg.erfc(alpha * r) / r))
    m.loss(real - alpha / math.sqrt(math.pi) * sg.sum(q**2))
    rng = np.random.default_rng(2)
    pos = jittered_lattice(rng, 2, 2.0, 0.2)[:6]
    params = {
        "pos": pos,
        "q": np.array([1.0, -1.0, 0.5, -0.5, 1.0, -1.0]),
        "alpha": np.array(0.8),
    }
    return m, _ewald_reference, params, all_pairs(6)


EAM = {"beta": 1.8, "re": 2.5, "rc": 4.0, "A": 0.3, "gamma": 2.2}


def _eam(lib, pos, mask):
    c = EAM
    r = all_pair_r(lib, pos, mask)
    cut = where(lib, r < c["rc"], (c["rc"] - r) ** 2, 0.0)
    dens = mask * lib.exp(-c["beta"] * (r - c["re"])) * cut**2
    rho = dens.sum(-1) if lib is torch else sg.sum(dens, axis=-1)
    phi = mask * c["A"] * lib.exp(-c["gamma"] * (r - c["re"])) * cut
    embed = -lib.sqrt(rho)
    pair = 0.5 * (phi.sum() if lib is torch else sg.sum(phi))
    return rho, embed, pair


def _eam_reference(p, i):
    rho, embed, pair = _eam(torch, p["pos"], i["mask"])
    return embed.sum() + pair, {"rho": rho}


@family
def eam_all_pairs(hessian=False):
    """An embedded-atom model over ALL ordered pairs with an off-diagonal mask input:
    densities rho_i = sum_j e^{-beta (r - re)} (rc - r)^4 (0 beyond rc = 4, by
    sg.where), the Finnis-Sinclair embedding F = -sqrt(rho), and a pair repulsion
    0.5 sum A e^{-gamma (r - re)} (rc - r)^2. The diagonal's r = 0 is lifted to 1 under
    the sqrt by + (1 - mask). A jittered 2x2x2 lattice of spacing 2.5 (the body
    diagonals are beyond rc). torch: the same broadcasts."""
    m = sg.Model("eam_all_pairs", hessian=hessian)
    pos = m.param("pos", ("N", 3))
    mask = m.input("mask", ("N", "N"))
    rho, embed, pair = _eam(sg, pos, mask)
    m.output("rho", rho)
    m.loss(sg.sum(embed) + pair)
    rng = np.random.default_rng(3)
    return (
        m,
        _eam_reference,
        {"pos": jittered_lattice(rng, 2, 2.5, 0.1)},
        {"mask": 1 - np.eye(8)},
    )


SW = {"A": 7.049556277, "B": 0.6022245584, "a": 1.8, "lam": 21.0, "gamma": 1.2}


def _sw_exp(lib, r, scale):
    """exp(scale / (r - a)) for r < a, else 0, by the double-where idiom (the
    not-taken branch sees r = 0, so 1 / (r - a) is finite there)."""
    a = SW["a"]
    inside = r < a
    rs = where(lib, inside, r, 0.0)
    return where(lib, inside, lib.exp(scale / (rs - a)), 0.0)


def _sw(lib, pos, i, j, tj, ti, tk):
    c = SW
    r = pair_r(lib, pos, i, j)
    two = c["A"] * (c["B"] * r**-4 - 1) * _sw_exp(lib, r, 1.0)
    dij, dik = pos[tj] - pos[ti], pos[tk] - pos[ti]
    if lib is sg:
        rij, rik = sg.norm(dij, axis=-1), sg.norm(dik, axis=-1)
        dot = sg.sum(dij * dik, axis=-1)
    else:
        rij = torch.linalg.vector_norm(dij, dim=-1)
        rik = torch.linalg.vector_norm(dik, dim=-1)
        dot = (dij * dik).sum(-1)
    cos = dot / (rij * rik)
    g = c["gamma"]
    three = c["lam"] * (cos + 1 / 3) ** 2 * _sw_exp(lib, rij, g) * _sw_exp(lib, rik, g)
    return two, three, cos


def _sw_reference(p, i):
    two, three, cos = _sw(torch, p["pos"], i["i"], i["j"], i["tj"], i["ti"], i["tk"])
    return two.sum() + three.sum(), {"cos": cos}


def sw_triplets(n):
    """Every angle j-i-k (centre i, j < k, both other than i)."""
    rows = [(j, c, k) for c in range(n) for j in range(n) for k in range(j + 1, n)]
    rows = np.array([t for t in rows if c_ok(t)], dtype=np.int64)
    return {"tj": rows[:, 0], "ti": rows[:, 1], "tk": rows[:, 2]}


def c_ok(t):
    return t[0] != t[1] and t[2] != t[1]


@family
def stillinger_weber(hessian=False):
    """Stillinger-Weber silicon (sigma = epsilon = 1): the two-body A (B r^-4 - 1)
    e^{1 / (r - a)} and the three-body lambda (cos theta_jik + 1/3)^2 e^{gamma / (r_ij
    - a)} e^{gamma / (r_ik - a)} over every angle (int64 triplets j, i, k), cos theta by
    the dot product over the norms, each exponential 0 beyond a = 1.8 by the
    double-where idiom. A perturbed tetrahedral 5-atom cluster (bond 1.1, the outer
    atoms 1.80 apart: some just inside, some just beyond the cutoff). torch: the same
    with torch.where."""
    m = sg.Model("stillinger_weber", hessian=hessian)
    pos = m.param("pos", ("N", 3))
    i, j = m.input("i", ("P",), **I64), m.input("j", ("P",), **I64)
    tj, ti, tk = (m.input(s, ("T",), **I64) for s in ("tj", "ti", "tk"))
    two, three, cos = _sw(sg, pos, i, j, tj, ti, tk)
    m.output("cos", cos)
    m.loss(sg.sum(two) + sg.sum(three))
    rng = np.random.default_rng(4)
    tet = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) / math.sqrt(3)
    pos = np.concatenate([np.zeros((1, 3)), 1.1 * tet]) + normal(rng, 5, 3, scale=0.03)
    return m, _sw_reference, {"pos": pos}, {**all_pairs(5), **sw_triplets(5)}


TERSOFF = {
    "A": 1830.8,
    "B": 471.18,
    "l1": 2.4799,
    "l2": 1.7322,
    "beta": 1.1e-6,
    "n": 0.78734,
    "c": 100390.0,
    "d": 16.217,
    "h": -0.59825,
    "R": 2.85,
    "D": 0.15,
}


def _fc(lib, r):
    c = TERSOFF
    mid = 0.5 - 0.5 * lib.sin(math.pi / 2 * (r - c["R"]) / c["D"])
    return where(
        lib, r < c["R"] - c["D"], 1.0, where(lib, r < c["R"] + c["D"], mid, 0.0)
    )


def _tersoff(lib, pos, bi, bj, ti, tj, tk, tb, n_bonds):
    c = TERSOFF
    norm = (
        (lambda d: sg.norm(d, axis=-1))
        if lib is sg
        else (lambda d: torch.linalg.vector_norm(d, dim=-1))
    )
    r = norm(pos[bj] - pos[bi])
    dij, dik = pos[tj] - pos[ti], pos[tk] - pos[ti]
    rij, rik = norm(dij), norm(dik)
    dot = (dij * dik).sum(-1) if lib is torch else sg.sum(dij * dik, axis=-1)
    cos = dot / (rij * rik)
    g = (
        1
        + c["c"] ** 2 / c["d"] ** 2
        - c["c"] ** 2 / (c["d"] ** 2 + (c["h"] - cos) ** 2)
    )
    contrib = _fc(lib, rik) * g
    if lib is sg:
        zeta = sg.segment_sum(contrib, tb, n_bonds)
    else:
        zeta = torch.zeros(n_bonds, dtype=torch.float64).index_add(0, tb, contrib)
    b = (1 + (c["beta"] * zeta) ** c["n"]) ** (-1 / (2 * c["n"]))
    e = _fc(lib, r) * (
        c["A"] * lib.exp(-c["l1"] * r) - b * c["B"] * lib.exp(-c["l2"] * r)
    )
    return 0.5 * e, b


def _tersoff_reference(p, i):
    e, b = _tersoff(
        torch, p["pos"], i["bi"], i["bj"], i["ti"], i["tj"], i["tk"], i["tb"],
        len(i["bi"]),
    )  # fmt: skip
    return e.sum(), {"bond_order": b}


def tersoff_topology(n):
    bonds = [(a, b) for a in range(n) for b in range(n) if a != b]
    trip = [(bi, a, b, k) for bi, (a, b) in enumerate(bonds) for k in range(n)]
    trip = np.array([t for t in trip if t[3] not in (t[1], t[2])], dtype=np.int64)
    bonds = np.array(bonds, dtype=np.int64)
    return {
        "bi": bonds[:, 0],
        "bj": bonds[:, 1],
        "tb": trip[:, 0],
        "ti": trip[:, 1],
        "tj": trip[:, 2],
        "tk": trip[:, 3],
    }


def tersoff_cluster(rng):
    """Three atoms in a triangle of side 2.4 and a fourth above it at 2.9 from each
    (inside the cutoff's switching region R +- D = 2.85 +- 0.15), perturbed."""
    tri = (
        2.4
        / math.sqrt(3)
        * np.array(
            [[1, 0, 0], [-0.5, math.sqrt(3) / 2, 0], [-0.5, -math.sqrt(3) / 2, 0]]
        )
    )
    top = np.array([[0, 0, math.sqrt(2.9**2 - (2.4 / math.sqrt(3)) ** 2)]])
    return np.concatenate([tri, top]) + normal(rng, 4, 3, scale=0.02)


@family
def tersoff_bond_order(hessian=False):
    """Tersoff silicon: 1/2 sum over ordered bonds of f_c(r) (A e^{-l1 r} - b_ij B
    e^{-l2 r}) with the bond order b_ij = (1 + (beta zeta_ij)^n)^{-1 / 2n} (n = 0.787),
    zeta_ij = sum_k f_c(r_ik) g(theta_ijk), g = 1 + c^2/d^2 - c^2 / (d^2 + (h -
    cos)^2), summed from triplets onto bonds by sg.segment_sum (torch: index_add);
    f_c the sin switch over R +- D by nested sg.where. Four atoms, one apex in the
    switching region."""
    m = sg.Model("tersoff_bond_order", hessian=hessian)
    pos = m.param("pos", ("N", 3))
    bi, bj = m.input("bi", ("B",), **I64), m.input("bj", ("B",), **I64)
    tb, ti, tj, tk = (m.input(s, ("T",), **I64) for s in ("tb", "ti", "tj", "tk"))
    e, b = _tersoff(sg, pos, bi, bj, ti, tj, tk, tb, bi.shape[0])
    m.output("bond_order", b)
    m.loss(sg.sum(e))
    rng = np.random.default_rng(5)
    return m, _tersoff_reference, {"pos": tersoff_cluster(rng)}, tersoff_topology(4)


BOX, SOFT_RC = 3.0, 1.2


def _soft(lib, d):
    r = (d**2).sum(-1) ** 0.5 if lib is torch else sg.sqrt(sg.sum(d**2, axis=-1))
    return where(lib, r < SOFT_RC, 0.5 * (1 - r / SOFT_RC) ** 2, 0.0)


def _periodic_reference(p, i):
    d = p["pos"][i["i"]] - p["pos"][i["j"]]
    d = d - BOX * torch.round(d / BOX)  # the minimum image as a torch user writes it
    e = _soft(torch, d)
    return e.sum(), {"pair_energy": e}


def image_shifts(pos, i, j):
    """np.round(d / L): the minimum-image shifts, data (as sg's message for % says)."""
    return np.round((pos[i] - pos[j]) / BOX)


@family
def periodic_soft_spheres(hessian=False):
    """Soft spheres 0.5 (1 - r / rc)^2 (a jamming user) in a periodic cubic box L = 3
    under the minimum image d - L round(d / L); sg has no round, so the shifts
    round(d / L) are computed in NumPy and passed as an input (as sg's message for %
    suggests): their gradient is zero almost everywhere anyway. torch: torch.round in
    the model."""
    m = sg.Model("periodic_soft_spheres", hessian=hessian)
    pos = m.param("pos", ("N", 3))
    i, j = m.input("i", ("P",), **I64), m.input("j", ("P",), **I64)
    shift = m.input("shift", ("P", 3))
    e = m.output("pair_energy", _soft(sg, pos[i] - pos[j] - BOX * shift))
    m.loss(sg.sum(e))
    rng = np.random.default_rng(6)
    pos = rng.uniform(0, BOX, (8, 3))
    pos[1] = pos[0] + [BOX - 0.9, 0.2, -0.1]  # a pair touching through the boundary
    pairs = all_pairs(8)
    inputs = {**pairs, "shift": image_shifts(pos, pairs["i"], pairs["j"])}
    return m, _periodic_reference, {"pos": pos}, inputs


def _angle(lib, a, b, c):
    """The angle at b by atan2(|u x v|, u . v)."""
    u, v = a - b, c - b
    if lib is sg:
        return sg.arctan2(sg.norm(sg.cross(u, v), axis=-1), sg.sum(u * v, axis=-1))
    return torch.atan2(
        torch.linalg.vector_norm(torch.linalg.cross(u, v), dim=-1), (u * v).sum(-1)
    )


def _dihedral(lib, p0, p1, p2, p3):
    """Blondel's dihedral atan2(|b2| b1 . (b2 x b3), (b1 x b2) . (b2 x b3))."""
    b1, b2, b3 = p1 - p0, p2 - p1, p3 - p2
    cross = sg.cross if lib is sg else (lambda x, y: torch.linalg.cross(x, y))
    n1, n2 = cross(b1, b2), cross(b2, b3)
    if lib is sg:
        y = sg.norm(b2, axis=-1) * sg.sum(b1 * n2, axis=-1)
        return sg.arctan2(y, sg.sum(n1 * n2, axis=-1))
    y = torch.linalg.vector_norm(b2, dim=-1) * (b1 * n2).sum(-1)
    return torch.atan2(y, (n1 * n2).sum(-1))


def _bonded(lib, X, i):
    rb = pair_r(lib, X, i["bi"], i["bj"])
    e_b = 100.0 * (rb - 1.5) ** 2
    th = _angle(lib, X[i["ai"]], X[i["aj"]], X[i["ak"]])
    e_a = 20.0 * (th - 1.91) ** 2
    phi = _dihedral(lib, X[i["ti"]], X[i["tj"]], X[i["tk"]], X[i["tl"]])
    e_t = 1.4 * (1 + lib.cos(3 * phi)) + 0.3 * (1 - lib.cos(phi))
    s = (lambda x: x.sum()) if lib is torch else sg.sum
    return s(e_b) + s(e_a) + s(e_t), th, phi


def _bonded_reference(p, i):
    e, th, phi = _bonded(torch, p["pos"], i)
    return e, {"theta": th, "phi": phi}


def chain_topology():
    return {
        "bi": np.array([0, 1, 2, 3]),
        "bj": np.array([1, 2, 3, 4]),
        "ai": np.array([0, 1, 2]),
        "aj": np.array([1, 2, 3]),
        "ak": np.array([2, 3, 4]),
        "ti": np.array([0, 1]),
        "tj": np.array([1, 2]),
        "tk": np.array([2, 3]),
        "tl": np.array([3, 4]),
    }


@family
def bonded_chain(hessian=False):
    """A 5-atom chain's bonded terms: harmonic bonds, harmonic angles with the angle
    by sg.arctan2(|u x v|, u . v) (well conditioned at 0 and pi, unlike arccos), and a
    two-term torsion 1.4 (1 + cos 3 phi) + 0.3 (1 - cos phi) with phi by Blondel's
    arctan2 of cross products. torch: atan2, linalg.cross, vector_norm."""
    m = sg.Model("bonded_chain", hessian=hessian)
    pos = m.param("pos", ("N", 3))
    idx = {k: m.input(k, (k[0].upper(),), **I64) for k in chain_topology()}
    e, th, phi = _bonded(sg, pos, idx)
    m.output("theta", th)
    m.output("phi", phi)
    m.loss(e)
    rng = np.random.default_rng(7)
    X = np.array(
        [[0, 0, 0], [1.5, 0, 0], [2.0, 1.4, 0], [3.5, 1.4, 0.6], [4.0, 2.6, 1.4]]
    ) + normal(rng, 5, 3, scale=0.05)
    return m, _bonded_reference, {"pos": X}, chain_topology()


ETA = np.array([0.5, 1.0, 2.0, 4.0])
RS = np.array([1.0, 1.5, 2.0, 2.5])
DESC_RC = 3.5


def _descriptor(lib, pos, mask, eta, rs):
    r = all_pair_r(lib, pos, mask)
    fc = where(lib, r < DESC_RC, 0.5 * (lib.cos(math.pi * r / DESC_RC) + 1), 0.0)
    g = lib.exp(-eta * (r[..., None] - rs) ** 2) * (mask * fc)[..., None]
    return g.sum(1) if lib is torch else sg.sum(g, axis=1)


def _descriptor_reference(p, i):
    G = _descriptor(torch, p["pos"], i["mask"], i["eta"], i["rs"])
    atomic = G @ p["w"] + p["b"]
    return atomic.sum(), {"G": G, "atomic_energy": atomic}


@family
def gaussian_descriptor_linear(hessian=False):
    """A Behler-Parrinello / GAP-like model: radial descriptors G_ik = sum_j
    exp(-eta_k (r_ij - rs_k)^2) f_c(r_ij) (four (eta, rs) channels, cosine cutoff at
    3.5 by sg.where, all pairs with a mask), the atomic energies a linear model G_i .
    w + b, the energy their sum; positions and weights are parameters. torch: the same
    broadcasts."""
    m = sg.Model("gaussian_descriptor_linear", hessian=hessian)
    pos, w, b = m.param("pos", ("N", 3)), m.param("w", (4,)), m.param("b", ())
    mask = m.input("mask", ("N", "N"))
    eta, rs = m.input("eta", (4,)), m.input("rs", (4,))
    G = m.output("G", _descriptor(sg, pos, mask, eta, rs))
    atomic = m.output("atomic_energy", G @ w + b)
    m.loss(sg.sum(atomic))
    rng = np.random.default_rng(8)
    params = {
        "pos": jittered_lattice(rng, 2, 1.6, 0.1)[:6],
        "w": normal(rng, 4),
        "b": np.array(-0.3),
    }
    return (
        m,
        _descriptor_reference,
        params,
        {"mask": 1 - np.eye(6), "eta": ETA, "rs": RS},
    )


# ============================================================= 2. first and second order


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_agrees_with_pytorch_and_central_differences(name):
    FAMILIES.assert_agrees(name)


SECOND_ORDER = [
    "morse_switched",
    "ewald_real_space",
    "eam_all_pairs",
    "stillinger_weber",
    "bonded_chain",
    "periodic_soft_spheres",
]


@pytest.mark.parametrize("name", SECOND_ORDER)
def test_hessian_and_hvp_agree_with_pytorch(name):
    FAMILIES.assert_second_order_agrees(name)


UNROLLED = ["morse_switched", "periodic_soft_spheres", "tersoff_bond_order"]


@pytest.mark.parametrize("name", UNROLLED)
def test_unrolled_at_the_datas_sizes_agrees_with_pytorch(name):
    FAMILIES.assert_unrolled_agrees(name)


# =================================================================== 3. physics checks

POSITION_ONLY = [
    "morse_switched",
    "buckingham_coulomb_sf",
    "eam_all_pairs",
    "stillinger_weber",
    "tersoff_bond_order",
    "periodic_soft_spheres",
    "bonded_chain",
]


@pytest.mark.parametrize("name", POSITION_ONLY)
def test_no_net_force_and_translation_invariance(name):
    """Forces -grad sum to zero (Newton's third law), and shifting every atom by the
    same vector leaves the energy and the forces unchanged."""
    _, _, params, inputs = FAMILIES[name]()
    module = module_of(name)
    energy, grads = module.value_and_grad(params, inputs)
    forces = -grads["pos"]
    scale = np.max(np.abs(forces))
    assert scale > 0
    assert np.max(np.abs(forces.sum(0))) <= 1e-11 * scale
    shifted = {"pos": params["pos"] + np.array([0.37, -1.1, 0.05])}
    energy2, grads2 = module.value_and_grad(shifted, inputs)
    assert abs(energy2 - energy) <= 1e-11 * max(1.0, abs(energy))
    assert rel(grads2["pos"], grads["pos"]) <= 1e-9


ROTATABLE = [n for n in POSITION_ONLY if n != "periodic_soft_spheres"]


@pytest.mark.parametrize("name", ROTATABLE)
def test_rotation_invariance_and_forces_rotate(name):
    """E(X R^T) = E(X) and the forces rotate with the atoms: F(X R^T) = F(X) R^T; no
    net torque: sum x_i x F_i = 0."""
    _, _, params, inputs = FAMILIES[name]()
    module = module_of(name)
    R = rotation(0.7, -0.4, 1.9)
    energy, grads = module.value_and_grad(params, inputs)
    energy2, grads2 = module.value_and_grad({"pos": params["pos"] @ R.T}, inputs)
    assert abs(energy2 - energy) <= 1e-10 * max(1.0, abs(energy))
    assert rel(grads2["pos"], grads["pos"] @ R.T) <= 1e-9
    torque = np.cross(params["pos"], -grads["pos"]).sum(0)
    assert np.max(np.abs(torque)) <= 1e-10 * np.max(np.abs(grads["pos"])) * 10


@pytest.mark.parametrize(
    "name", [n for n in SECOND_ORDER if n in POSITION_ONLY] + ["tersoff_bond_order"]
)
def test_hessian_annihilates_translations_and_is_symmetric(name):
    """The Hessian (the force-constant matrix) is symmetric and its rows summed over
    the atoms for each Cartesian direction vanish: three zero modes."""
    _, _, params, inputs = FAMILIES[name]()
    module = module_of(name, hessian=True)
    H = module.hessian(params, inputs)
    n = params["pos"].shape[0]
    assert H.shape == (3 * n, 3 * n)
    scale = np.max(np.abs(H))
    assert np.max(np.abs(H - H.T)) <= 1e-10 * scale
    acoustic = H.reshape(3 * n, n, 3).sum(1)
    assert np.max(np.abs(acoustic)) <= 1e-10 * scale


def test_tersoff_hessian_agrees_with_pytorch():
    FAMILIES.assert_second_order_agrees("tersoff_bond_order")


# ======================================================================== 4. edges


def _pos(*rows):
    return lambda p, i: {"pos": np.array(rows, dtype=float)}


def _pairs_of(n):
    return lambda p, i: all_pairs(n)


def _periodic_inputs(pos):
    pairs = all_pairs(len(pos))
    return {**pairs, "shift": image_shifts(np.asarray(pos), pairs["i"], pairs["j"])}


def _close(p, i):
    pos = p["pos"].copy()
    pos[1] = pos[0] + [1e-6, 0.0, 0.0]
    return {"pos": pos}


EDGES = {
    # two atoms exactly at the cutoff (r = 3 exactly): S = 0, S' = 0
    "morse_pair_at_rc": (
        "morse_switched",
        _pos([0, 0, 0], [3, 0, 0], [0, 1.6, 0]),
        _pairs_of(3),
    ),
    "morse_pair_at_r_on": (
        "morse_switched",
        _pos([0, 0, 0], [2.5, 0, 0], [0, 1.6, 0]),
        _pairs_of(3),
    ),
    "morse_every_pair_beyond_rc": (
        "morse_switched",
        _pos([0, 0, 0], [3.5, 0, 0], [0, 4, 0]),
        _pairs_of(3),
    ),
    "morse_close_1e-6": ("morse_switched", _close, None),
    "bks_pair_at_rc": (
        "buckingham_coulomb_sf",
        _pos([0, 0, 0], [5.5, 0, 0], [0, 1.7, 0]),
        lambda p, i: {**all_pairs(3), "q": np.array([0.8, -0.4, -0.4])},
    ),
    "bks_close_1e-6": ("buckingham_coulomb_sf", _close, None),
    # alpha r = 30: erfc underflows to 0 (2.6e-393), its derivative e^-900 too
    "ewald_alpha_r_30": (
        "ewald_real_space",
        lambda p, i: {
            "pos": np.array([[0, 0, 0], [1, 0, 0], [0, 2, 0]], float),
            "q": np.array([1.0, -1.0, 0.5]),
            "alpha": np.array(30.0),
        },
        _pairs_of(3),
    ),
    "ewald_alpha_r_26": (
        "ewald_real_space",
        lambda p, i: {
            "pos": np.array([[0, 0, 0], [1, 0, 0], [0, 1.2, 0]], float),
            "q": np.array([1.0, -1.0, 0.5]),
            "alpha": np.array(26.0),
        },
        _pairs_of(3),
    ),
    "ewald_neutral_charges": (
        "ewald_real_space",
        lambda p, i: {"q": np.zeros(6)},
        None,
    ),
    "ewald_close_1e-6": ("ewald_real_space", _close, None),
    "eam_dimer": (
        "eam_all_pairs",
        _pos([0, 0, 0], [2.5, 0, 0]),
        lambda p, i: {"mask": 1 - np.eye(2)},
    ),
    # every atom keeps a neighbour inside rc (an atom with none has rho = 0, where
    # -sqrt(rho) has an infinite slope: nan in torch and symgrad alike)
    "eam_pair_at_rc": (
        "eam_all_pairs",
        _pos([0, 0, 0], [4, 0, 0], [2, 1.5, 0]),
        lambda p, i: {"mask": 1 - np.eye(3)},
    ),
    # collinear triples: theta = pi (cos = -1) and theta = 0 (cos = 1)
    "sw_collinear_pi": (
        "stillinger_weber",
        _pos([-1.1, 0, 0], [0, 0, 0], [1.1, 0, 0]),
        lambda p, i: {**all_pairs(3), **sw_triplets(3)},
    ),
    "sw_collinear_0": (
        "stillinger_weber",
        _pos([0, 0, 0], [1.1, 0, 0], [1.7, 0, 0]),
        lambda p, i: {**all_pairs(3), **sw_triplets(3)},
    ),
    # a neighbour exactly at the cutoff a = 1.8 (its exponentials exactly 0)
    "sw_pair_at_cutoff": (
        "stillinger_weber",
        _pos([0, 0, 0], [1.8, 0, 0], [0, 1.1, 0]),
        lambda p, i: {**all_pairs(3), **sw_triplets(3)},
    ),
    "tersoff_equilateral_in_core": (
        "tersoff_bond_order",
        _pos([0, 0, 0], [2.35, 0, 0], [1.175, 2.35 * math.sqrt(3) / 2, 0]),
        lambda p, i: tersoff_topology(3),
    ),
    # theta = pi at atom 0 and theta = 0 at atoms 1 and 2; the outer pair (2.8 apart)
    # in the switching region, so every bond has a neighbour (zeta > 0: at zeta = 0
    # (beta zeta)^n, n < 1, has an infinite slope: nan in torch and symgrad alike)
    "tersoff_collinear": (
        "tersoff_bond_order",
        _pos([0, 0, 0], [1.4, 0, 0], [-1.4, 0, 0]),
        lambda p, i: tersoff_topology(3),
    ),
    # two atoms exactly L / 2 apart along x (round(0.5) = 0 in both), beyond rc
    "periodic_half_box": (
        "periodic_soft_spheres",
        _pos([0.2, 0.5, 0.5], [1.7, 0.5, 0.5], [0.9, 1.2, 0.5]),
        lambda p, i: _periodic_inputs(
            [[0.2, 0.5, 0.5], [1.7, 0.5, 0.5], [0.9, 1.2, 0.5]]
        ),
    ),
    "periodic_across_the_faces": (
        "periodic_soft_spheres",
        _pos([0.05, 0.05, 0.05], [2.95, 2.95, 2.95], [1.5, 1.5, 1.5]),
        lambda p, i: _periodic_inputs(
            [[0.05, 0.05, 0.05], [2.95, 2.95, 2.95], [1.5, 1.5, 1.5]]
        ),
    ),
    "bonded_collinear_angle_pi": (
        "bonded_chain",
        _pos([0, 0, 0], [1.5, 0, 0], [3.0, 0, 0], [3.5, 1.4, 0.2], [5.0, 1.6, 0.9]),
        None,
    ),
    "bonded_planar_cis_trans": (
        "bonded_chain",
        _pos([0, 1, 0], [0.5, 0, 0], [2.0, 0, 0], [2.5, 1, 0], [4.0, 1, 0]),
        None,
    ),
    "descriptor_pair_at_rc": (
        "gaussian_descriptor_linear",
        _pos([0, 0, 0], [3.5, 0, 0], [0, 1.6, 0]),
        lambda p, i: {"mask": 1 - np.eye(3)},
    ),
    "descriptor_close_1e-6": ("gaussian_descriptor_linear", _close, None),
}


def _edge(case):
    name, params_of, inputs_of = EDGES[case]
    _, reference, params, inputs = FAMILIES[name]()
    if params_of is not None:
        params = {**params, **params_of(params, inputs)}
    if inputs_of is not None:
        inputs = {**inputs, **inputs_of(params, inputs)}
    return name, reference, params, inputs


# close atoms: the difference step (relative to the largest coordinate) is wider than
# their distance; at a cutoff / switch onset the energy is C1 but not C2 there, so
# central differences are off by O(step) (torch is the judge there)
# the torsion through a collinear triple is undefined (atan2(0, 0)): differences jump
NO_DIFFERENCES = ("close", "at_rc", "at_r_on", "at_cutoff", "bonded_collinear")
LIFT_BUG = "symgrad's SymPy sums flatten r2 + (1 - mask) into 1.0 + r2 - mask"


def _edge_params():
    for case in EDGES:
        if case == "descriptor_close_1e-6":
            yield pytest.param(
                case,
                marks=pytest.mark.xfail(
                    strict=True,
                    reason=LIFT_BUG + ": r = 1e-6 comes out 1.00004e-6 (see below)",
                ),
            )
        else:
            yield case


@pytest.mark.parametrize("case", _edge_params())
def test_edges_agree_with_pytorch_and_central_differences(case):
    name, reference, params, inputs = _edge(case)
    module = module_of(name)
    check(module, reference, params, inputs)
    if not any(word in case for word in NO_DIFFERENCES):
        assert_matches_central_differences(module, params, inputs, tol=1e-5)


SECOND_ORDER_EDGES = [
    "morse_pair_at_rc",
    "morse_pair_at_r_on",
    "ewald_alpha_r_30",
    "sw_collinear_pi",
    "sw_collinear_0",
    "sw_pair_at_cutoff",
    "periodic_across_the_faces",
    "eam_pair_at_rc",
]


@pytest.mark.parametrize("case", SECOND_ORDER_EDGES)
def test_edges_second_order(case):
    name, reference, params, inputs = _edge(case)
    module = module_of(name, hessian=True)
    assert_second_order_agrees(module, reference, params, inputs, scaled=True)


def test_ewald_beyond_underflow_is_exactly_the_self_term():
    """alpha r >= 30 for every pair: erfc underflows, so the energy is exactly the
    self term -alpha / sqrt(pi) sum q^2, the forces exactly 0, dE/dq = -2 alpha q /
    sqrt(pi) and dE/dalpha = -sum q^2 / sqrt(pi), with no NumPy warning."""
    _, _, params, inputs = _edge("ewald_alpha_r_30")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        energy, grads = module_of("ewald_real_space").value_and_grad(params, inputs)
    q, alpha = params["q"], float(params["alpha"])
    assert energy == pytest.approx(-alpha / math.sqrt(math.pi) * np.sum(q**2), 1e-15)
    assert np.array_equal(grads["pos"], np.zeros((3, 3)))
    assert rel(grads["q"], -2 * alpha * q / math.sqrt(math.pi)) <= 1e-15
    assert rel(grads["alpha"], -np.sum(q**2) / math.sqrt(math.pi)) <= 1e-15


def test_switch_and_shifted_force_vanish_at_the_cutoff():
    """At r = rc exactly the switched Morse energy and force are 0 (S(rc) = S'(rc) =
    0); the shifted-force Coulomb of a lone pair just inside rc tends to 0 with its
    force (BKS's Buckingham part does not: it is only truncated)."""
    _, _, params, inputs = _edge("morse_pair_at_rc")
    outputs, _ = module_of("morse_switched").forward(params, inputs)
    assert outputs["pair_energy"][0] == 0.0
    m = sg.Model("coulomb_sf")
    pos = m.param("pos", ("N", 3))
    i, j = m.input("i", ("P",), **I64), m.input("j", ("P",), **I64)
    r, rc = pair_r(sg, pos, i, j), 5.5
    m.loss(sg.sum(sg.where(r < rc, 1 / r - 1 / rc + (r - rc) / rc**2, 0.0)))
    module = compile_module(m)
    for gap in (1e-2, 1e-4):
        p = {"pos": np.array([[0.0, 0, 0], [rc - gap, 0, 0]])}
        energy, grads = module.value_and_grad(p, all_pairs(2))
        # E = (rc - r)^2 / (r rc^2) and F = (1 / r^2 - 1 / rc^2) exactly
        r_ = rc - gap
        assert energy == pytest.approx(gap**2 / (r_ * rc**2), rel=1e-6)
        assert grads["pos"][1, 0] == pytest.approx(1 / rc**2 - 1 / r_**2, rel=1e-6)


def test_a_numpy_constant_pair_index_equals_the_int64_input():
    """pos[np.triu_indices(n, 1)[0]] (a NumPy constant, N fixed) works as an index
    and gives the same energy and forces as int64 pair inputs."""
    m = sg.Model("morse_constant_pairs")
    pos = m.param("pos", (8, 3))
    i, j = np.triu_indices(8, 1)
    m.loss(sg.sum(_morse(sg, sg.norm(pos[i] - pos[j], axis=-1))))
    _, _, params, inputs = FAMILIES["morse_switched"]()
    e1, g1 = compile_module(m).value_and_grad(params, {})
    e2, g2 = module_of("morse_switched").value_and_grad(params, inputs)
    assert rel(e1, e2) <= 1e-14 and rel(g1["pos"], g2["pos"]) <= 1e-12


# ================================================ 5. bug: a lifted diagonal loses digits


@pytest.mark.xfail(strict=True, reason=LIFT_BUG + ", ~1e-4 relative error at r = 1e-6")
def test_lifting_the_diagonal_before_the_sqrt_keeps_small_distances():
    """The all-pairs idiom sqrt(sum(d^2) + (1 - mask)) (the diagonal lifted to 1 so
    sqrt(0) is never differentiated; torch users write + (1 - mask) or + eye): off
    the diagonal 1 - mask is exactly 0, so r must be |d|. symgrad's generated code
    computes np.sqrt(1.0 + t5 - mask): SymPy flattened the user's grouping into one
    Add, and (1 + 1e-12) - 1 keeps only 4 digits of r^2. Two atoms 1e-6 apart come out
    1.0000444e-06 apart (torch: 1.0000000e-06), the forces off by 4e-5."""
    m = sg.Model("lifted_diagonal")
    pos = m.param("pos", ("N", 3))
    mask = m.input("mask", ("N", "N"))
    d = pos[:, None, :] - pos[None, :, :]
    r = m.output("r", sg.sqrt(sg.sum(d**2, axis=-1) + (1 - mask)))
    m.loss(sg.sum(r))
    pos = np.array([[0.3, 0, 0], [0.3 + 1e-6, 0, 0]])
    outputs, _ = compile_module(m).forward({"pos": pos}, {"mask": 1 - np.eye(2)})
    exact = pos[1, 0] - pos[0, 0]
    assert rel(outputs["r"][0, 1], exact) <= 1e-12, (outputs["r"][0, 1], exact)


# ========================================================= 6. a new user's mistakes


def _cluster():
    m = sg.Model("mistakes")
    pos = m.param("pos", ("N", 3))
    i = m.input("i", ("P",), **I64)
    e = m.input("e", ("P",))
    return pos, i, e


CLEAR = {
    "torch.cdist": (lambda x, i, e: torch.cdist(x, x), TypeError, "sg.norm(a[:, None]"),
    "sg.cdist": (lambda x, i, e: sg.cdist(x, x), AttributeError, "sg.norm("),
    "x.scatter_add": (
        lambda x, i, e: x.scatter_add(0, i, x),
        AttributeError,
        "sg.segment_sum",
    ),
    "torch.zeros().scatter_add": (
        lambda x, i, e: torch.zeros(4, dtype=torch.float64).scatter_add(0, i, e),
        TypeError,
        "sg.segment_sum",
    ),
    "torch.zeros().index_add": (
        lambda x, i, e: torch.zeros(4, dtype=torch.float64).index_add(0, i, e),
        TypeError,
        "sg.segment_sum",
    ),
    "sg.scatter_add": (lambda x, i, e: sg.scatter_add(e, i), AttributeError, "segment"),
    "x[torch.triu_indices]": (
        lambda x, i, e: x[torch.triu_indices(4, 4, 1)[0]],
        sg.ShapeError,
        "int64 input",
    ),
    "torch.special.erfc": (
        lambda x, i, e: torch.special.erfc(x),
        TypeError,
        "sg.erfc",
    ),
    "x.erfc()": (lambda x, i, e: x.erfc(), AttributeError, "sg.erfc"),
    "torch.linalg.norm(dim=)": (
        lambda x, i, e: torch.linalg.norm(x, dim=-1),
        TypeError,
        "sg.norm",
    ),
    "torch.remainder": (
        lambda x, i, e: torch.remainder(x, 3.0),
        TypeError,
        "computed in NumPy",
    ),
    "x % L": (lambda x, i, e: x % 3.0, TypeError, "computed in NumPy"),
    "torch.where": (lambda x, i, e: torch.where(x > 1, x, 0.0), TypeError, "sg.where"),
    "x.sum(dim=)": (lambda x, i, e: x.sum(dim=-1), TypeError, "axis="),
}

ROUND_HINT = "computed in NumPy"
UNCLEAR = {
    # "use sg's functions" / bare errors: the minimum image's round has no recipe,
    # where % and torch.remainder name "x - c * k with k computed in NumPy"
    "torch.round": (lambda x, i, e: torch.round(x / 3.0), TypeError, ROUND_HINT),
    "np.round": (lambda x, i, e: np.round(x / 3.0), TypeError, ROUND_HINT),
    "np.rint": (lambda x, i, e: np.rint(x / 3.0), TypeError, ROUND_HINT),
    "round(x)": (lambda x, i, e: round(x / 3.0), TypeError, ROUND_HINT),
    "sg.round": (lambda x, i, e: sg.round(x / 3.0), AttributeError, ROUND_HINT),
    "sg.floor": (lambda x, i, e: sg.floor(x / 3.0), AttributeError, ROUND_HINT),
    "sg.rint": (lambda x, i, e: sg.rint(x / 3.0), AttributeError, ROUND_HINT),
    # F.pdist: "use sg's functions" (torch.cdist names sg.norm); sg.pdist bare
    "F.pdist": (lambda x, i, e: F.pdist(x), TypeError, "sg.norm"),
    "sg.pdist": (lambda x, i, e: sg.pdist(x), AttributeError, "sg.norm"),
    # torch_scatter's keyword: a bare "unexpected keyword argument 'dim_size'"
    "sg.segment_sum(dim_size=)": (
        lambda x, i, e: sg.segment_sum(e, i, dim_size=4),
        TypeError,
        "num_segments",
    ),
}


@pytest.mark.parametrize("case", list(CLEAR))
def test_clear_messages_for_simulation_porting_mistakes(case):
    fn, error, hint = CLEAR[case]
    with pytest.raises(error, match=re.escape(hint)):
        fn(*_cluster())


@pytest.mark.parametrize("case", list(UNCLEAR))
def test_unclear_messages_for_simulation_porting_mistakes(case):
    """Were strict xfails: the messages named no fix (symgrad/model.py's porting table
    now has round/rint/floor and pdist; segment_sum's dim_size= names num_segments)."""
    fn, error, hint = UNCLEAR[case]
    with pytest.raises(error, match=re.escape(hint)):
        fn(*_cluster())
