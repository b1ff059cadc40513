"""Round 31 of new-user models: structured prediction, ranking, embeddings,
probabilistic heads and simulators, with PyTorch (float64) and central finite
differences as the judges. Families: a structured SVM (max-margin Markov network) by a
loss-augmented Viterbi DP with sg.max (torch: amax; gold transitions by A[y[:, :-1]] and
take_along_axis), sparsemax with its loss (-sg.sort(-z), cumsum, a support mask and its
count; torch: sort(descending, stable) and arange), the Lovasz hinge (argsort of the
errors, take_along_axis of a float label input, the Jaccard gradient by cumsum and
sg.diff), NeuralSort's relaxed permutation matrix with a learned temperature (ranks as
sg.cumsum(sg.ones_like(s))), a soft odd-even sorting network of sigmoid swaps, word2vec
CBOW with a hierarchical softmax (int64 path gathers, +-1 codes, a bool path mask),
RotatE with self-adversarial negatives (sg.norm of stacked (re, im), stop_gradient
weights), prototypical networks (prototypes by sg.segment_sum over int64 labels), deep
embedded clustering (a Student-t kernel with a learned degree of freedom, a
stop_gradient target, KL), Graves' bivariate mixture density head (sg.split at cut
points, tanh correlations), PixelCNN++'s discretized logistic mixture (edge bins, the
far-tail branch, log scales clipped at -7), deep evidential regression (the NIG NLL
through sg.lgamma), a kernel Stein discrepancy whose scores come from sg.grad of a
Gaussian-mixture log density, Titsias' sparse GP bound (sg.solve, sg.slogdet, a trace
by einsum("ii")), a Mamba-style selective scan, 1-D full-waveform inversion by leapfrog
steps of the wave equation, an SIR epidemic by RK4 with a Poisson likelihood, inverse
conductivity by P1 finite elements (stiffness assembled from sg.eye(n, k=+-1), then
sg.solve; also over a symbolic number of nodes) and a Catmull-Rom spline located by
(x >= s) & (x < s + 1) masks (torch: floor and gathers). Also: every family's Hessian
and hvp against torch's, other (size-1) symbolic sizes, unrolled code (and the
automatic unrolling of the small fixed-size simulators), compile times, and edge cases:
Viterbi with every path tied and with forbidden transitions masked at -1e30, sparsemax
ties and exactly one-hot outputs, Lovasz ties and single-class label maps, NeuralSort
ties at a cold temperature, a saturated sorting network, path scores of +-1000, RotatE
at an exactly zero distance (torch's Hessian is nan there, symgrad's finite and equal
elsewhere), a query on a one-shot prototype, the PixelCNN++ tail branch with clipped
scales, an exact evidential fit, vanishing and huge SSM step sizes, an inducing point
on a data point, a thousandfold conductivity contrast, spline points on every knot,
zero epidemic counts; and the errors these users meet.

Every family agrees with torch to ~1e-9, first and second order, vectorized and
unrolled, and with central differences (so do integer-valued, tie-heavy data for the
Viterbi, sparsemax, Lovasz and NeuralSort families, and lgamma/digamma/trigamma at
negative, tiny and huge arguments, also tested here). Found and fixed, all error
messages that did not name the fix: torch's F.logsigmoid, x.gather, F.one_hot,
torch.cdist, diag and F.softplus(beta=) got a bare AttributeError/TypeError (now in
model.TORCH_SPELLINGS and the keyword hints); a CRF's A[y[:, :-1], y[:, 1:]] is refused
naming sg.take_along_axis; `(x >= s) and (x < s + 1)` and the chained `s <= x < s + 1`
name the `&` that combines conditions; and a comparison given to m.output names
sg.where instead of printing an object repr.
"""

from __future__ import annotations

import math
import re
import time

import numpy as np
import pytest
from helpers import (
    Families,
    assert_matches_central_differences,
    check,
    check_unrolled,
    compile_module,
    normal,
    rel,
    torch_hessian,
)

import symgrad as sg

torch = pytest.importorskip("torch")
F = torch.nn.functional

# ===================================================================== 1. model families

FAMILIES = Families()
family = FAMILIES.add
module_of = FAMILIES.module
f64 = torch.float64


def _onehot_sg(labels, K):
    """One-hot rows of an int64 array (a user's F.one_hot), from == conditions."""
    return sg.stack([sg.where(labels == k, 1.0, 0.0) for k in range(K)], axis=-1)


# ------------------------------------------------------------ structured prediction


@family
def structured_svm_viterbi(hessian=False):
    """A max-margin Markov network (structured SVM) over tag sequences: emissions
    X W^T, a transition matrix A, the loss-augmented Viterbi score (Hamming cost added
    to the emissions, max-product DP by sg.max over the previous tag) minus the gold
    path's score (emissions by take_along_axis, transitions by A[y[:, :-1]] then
    take_along_axis), plus an L2 term. torch: the same DP with amax (ties split as
    sg.max's), gold score by advanced indexing A[y[:, :-1], y[:, 1:]]."""
    rng = np.random.default_rng(0)
    K, d, T = 3, 4, 5
    m = sg.Model("structured_svm_viterbi", hessian=hessian)
    X, y = m.input("X", ("B", T, d)), m.input("y", ("B", T), dtype="int64")
    W, A = m.param("W", (K, d)), m.param("A", (K, K))
    em = m.let("em", X @ W.T)
    aug = em + 1.0 - _onehot_sg(y, K)
    delta = aug[:, 0, :]
    for t in range(1, T):
        delta = sg.max(delta[:, :, None] + A[None, :, :], axis=1) + aug[:, t, :]
    best = m.output("best", sg.max(delta, axis=1))
    gold_em = sg.sum(sg.take_along_axis(em, y[:, :, None], axis=2)[:, :, 0], axis=1)
    gold_tr = sg.take_along_axis(A[y[:, :-1]], y[:, 1:, None], axis=2)[:, :, 0]
    gold = gold_em + sg.sum(gold_tr, axis=1)
    m.loss(sg.mean(best - gold) + 0.01 * (sg.sum(W**2) + sg.sum(A**2)))

    def reference(p, i):
        em = i["X"] @ p["W"].T
        aug = em + 1.0 - F.one_hot(i["y"], K).double()
        delta = aug[:, 0]
        for t in range(1, T):
            delta = torch.amax(delta[:, :, None] + p["A"], dim=1) + aug[:, t]
        best = torch.amax(delta, dim=1)
        y = i["y"]
        gold = em.gather(2, y[..., None])[..., 0].sum(1)
        gold = gold + p["A"][y[:, :-1], y[:, 1:]].sum(1)
        loss = (best - gold).mean() + 0.01 * ((p["W"] ** 2).sum() + (p["A"] ** 2).sum())
        return loss, {"best": best}

    params = {"W": normal(rng, K, d), "A": normal(rng, K, K, scale=0.5)}
    inputs = {"X": normal(rng, 3, T, d), "y": rng.integers(0, K, (3, T))}
    return m, reference, params, inputs


@family
def sparsemax_classifier(hessian=False):
    """Sparsemax (Martins & Astudillo) over K = 4 classes: z sorted descending by
    -sg.sort(-z), its cumsum, the support 1 + k z_(k) > cumsum (the ranks k an input:
    a model cannot hold a NumPy arange), tau from the support's sum and count, p =
    relu(z - tau); the sparsemax loss -z_y + (sum_S z^2 - tau^2 |S|) / 2 + 1/2 on int64
    labels. torch: the same algorithm with torch.sort(descending=True) and arange."""
    rng = np.random.default_rng(1)
    K, d = 4, 3
    m = sg.Model("sparsemax_classifier", hessian=hessian)
    x, labels = m.input("x", ("B", d)), m.input("labels", ("B",), dtype="int64")
    ranks = m.input("ranks", (K,))
    W, b = m.param("W", (K, d)), m.param("b", (K,))
    z = m.let("z", x @ W.T + b)
    zs = -sg.sort(-z, axis=1)
    support = 1.0 + ranks * zs > sg.cumsum(zs, axis=1)
    size = sg.sum(sg.where(support, 1.0, 0.0), axis=1)
    tau = (sg.sum(sg.where(support, zs, 0.0), axis=1) - 1.0) / size
    m.output("p", sg.relu(z - tau[:, None]))
    zy = sg.take_along_axis(z, labels[:, None], axis=1)[:, 0]
    sq = sg.sum(sg.where(support, zs**2, 0.0), axis=1)
    m.loss(sg.mean(-zy + 0.5 * (sq - tau**2 * size) + 0.5))

    def reference(p, i):
        z = i["x"] @ p["W"].T + p["b"]
        zs, _ = torch.sort(z, dim=1, descending=True, stable=True)
        k = torch.arange(1, K + 1, dtype=f64)
        support = 1 + k * zs > zs.cumsum(1)
        size = support.sum(1)
        tau = ((zs * support).sum(1) - 1) / size
        prob = F.relu(z - tau[:, None])
        zy = z.gather(1, i["labels"][:, None])[:, 0]
        sq = (zs**2 * support).sum(1)
        return (-zy + 0.5 * (sq - tau**2 * size) + 0.5).mean(), {"p": prob}

    params = {"W": normal(rng, K, d), "b": normal(rng, K, scale=0.3)}
    inputs = {
        "x": normal(rng, 5, d),
        "labels": rng.integers(0, K, 5),
        "ranks": np.arange(1.0, K + 1),
    }
    return m, reference, params, inputs


@family
def lovasz_hinge_segmentation(hessian=False):
    """The Lovasz hinge (Berman et al.) of a per-pixel binary classifier: hinge errors
    1 - s * logit sorted descending by sg.argsort(-errors) and sg.take_along_axis, the
    labels permuted alike, the Lovasz extension's gradient of the Jaccard loss from
    cumsums of the sorted labels (its first difference by sg.diff and sg.concatenate),
    loss = relu(errors_sorted) . grad. torch: the authors' lovasz_grad with
    torch.sort(descending=True, stable=True)."""
    rng = np.random.default_rng(2)
    d = 3
    m = sg.Model("lovasz_hinge_segmentation", hessian=hessian)
    x, gt = m.input("x", ("P", d)), m.input("gt", ("P",))
    w, b = m.param("w", (d,)), m.param("b", ())
    logits = m.output("logits", x @ w + b)
    errors = 1.0 - logits * (2.0 * gt - 1.0)
    perm = sg.argsort(-errors)
    errors_sorted = sg.take_along_axis(errors, perm, axis=0)
    gt_sorted = sg.take_along_axis(gt, perm, axis=0)
    gts = sg.sum(gt)
    inter = gts - sg.cumsum(gt_sorted)
    union = gts + sg.cumsum(1.0 - gt_sorted)
    jac = 1.0 - inter / union
    grad = sg.concatenate([jac[:1], sg.diff(jac)])
    m.loss(sg.sum(sg.relu(errors_sorted) * grad))

    def reference(p, i):
        logits = i["x"] @ p["w"] + p["b"]
        errors = 1.0 - logits * (2.0 * i["gt"] - 1.0)
        errors_sorted, perm = torch.sort(errors, descending=True, stable=True)
        gt_sorted = i["gt"][perm]
        gts = gt_sorted.sum()
        inter = gts - gt_sorted.cumsum(0)
        union = gts + (1 - gt_sorted).cumsum(0)
        jac = 1.0 - inter / union
        jac = torch.cat([jac[:1], jac[1:] - jac[:-1]])
        return torch.dot(F.relu(errors_sorted), jac), {"logits": logits}

    params = {"w": normal(rng, d), "b": np.array(0.1)}
    inputs = {"x": normal(rng, 8, d), "gt": (rng.uniform(size=8) < 0.5).astype(float)}
    return m, reference, params, inputs


@family
def neuralsort_ranking(hessian=False):
    """NeuralSort (Grover et al.): the relaxed permutation matrix softmax(((n + 1 -
    2i) s_j - sum_k |s_j - s_k|) / tau) of scores s = X w, the ranks i as
    sg.cumsum(sg.ones_like(s)) (no arange needed), a learned temperature; loss: the
    relaxed sort of the relevance labels against their true descending order. torch:
    the paper's code (A_s @ 1, arange scaling)."""
    rng = np.random.default_rng(3)
    n, d = 5, 3
    m = sg.Model("neuralsort_ranking", hessian=hessian)
    X, rel_ = m.input("X", ("Q", n, d)), m.input("rel", ("Q", n))
    target = m.input("target", ("Q", n))
    w, log_tau = m.param("w", (d,)), m.param("log_tau", ())
    s = X @ w
    A = sg.abs(s[:, :, None] - s[:, None, :])
    Bsum = sg.sum(A, axis=2)
    i = sg.cumsum(sg.ones_like(s[0]))
    scaling = n + 1.0 - 2.0 * i
    Pmax = scaling[None, :, None] * s[:, None, :] - Bsum[:, None, :]
    P = m.output("P", sg.softmax(Pmax / sg.exp(log_tau), axis=-1))
    sorted_rel = sg.einsum("qij,qj->qi", P, rel_)
    m.loss(sg.mean((sorted_rel - target) ** 2))

    def reference(p, i):
        s = i["X"] @ p["w"]
        A = (s[:, :, None] - s[:, None, :]).abs()
        Bsum = A @ torch.ones(n, 1, dtype=f64)
        scaling = (n + 1 - 2 * (torch.arange(n, dtype=f64) + 1)).reshape(-1, 1)
        C = s[:, None, :] * scaling
        Pmax = C - Bsum.transpose(1, 2)
        P = torch.softmax(Pmax / p["log_tau"].exp(), dim=-1)
        sorted_rel = (P @ i["rel"][..., None])[..., 0]
        return ((sorted_rel - i["target"]) ** 2).mean(), {"P": P}

    rel_ = rng.integers(0, 4, (2, n)).astype(float)
    params = {"w": normal(rng, d), "log_tau": np.array(-0.5)}
    inputs = {"X": normal(rng, 2, n, d), "rel": rel_, "target": -np.sort(-rel_, 1)}
    return m, reference, params, inputs


def _soft_swap_sg(a, b, beta):
    """(soft min, soft max) of a pair by a sigmoid of the difference."""
    g = sg.sigmoid(beta * (b - a))
    return g * a + (1 - g) * b, (1 - g) * a + g * b


@family
def soft_sorting_network(hessian=False):
    """A differentiable odd-even transposition sorting network (Petersen et al.'s
    relaxation) over n = 4 values per row: n rounds of compare-and-swap where each
    swap is a sigmoid-weighted mix at a learned steepness exp(log_beta); columns kept
    as a Python list and restacked. Loss: the soft-sorted predictions against the
    sorted targets. torch: the same network by index writes into a cloned tensor."""
    rng = np.random.default_rng(4)
    n, d = 4, 3
    m = sg.Model("soft_sorting_network", hessian=hessian)
    x, target = m.input("x", ("B", n, d)), m.input("target", ("B", n))
    w, log_beta = m.param("w", (d,)), m.param("log_beta", ())
    v = x @ w
    beta = sg.exp(log_beta)
    cols = [v[:, j] for j in range(n)]
    for r in range(n):
        for j in range(r % 2, n - 1, 2):
            cols[j], cols[j + 1] = _soft_swap_sg(cols[j], cols[j + 1], beta)
    out = m.output("soft_sorted", sg.stack(cols, axis=1))
    m.loss(sg.mean((out - target) ** 2))

    def reference(p, i):
        v = i["x"] @ p["w"]
        beta = p["log_beta"].exp()
        for r in range(n):
            v = v.clone()
            for j in range(r % 2, n - 1, 2):
                a, b = v[:, j].clone(), v[:, j + 1].clone()
                g = torch.sigmoid(beta * (b - a))
                v[:, j] = g * a + (1 - g) * b
                v[:, j + 1] = (1 - g) * a + g * b
        return ((v - i["target"]) ** 2).mean(), {"soft_sorted": v}

    x = normal(rng, 3, n, d)
    params = {"w": normal(rng, d), "log_beta": np.array(1.0)}
    inputs = {"x": x, "target": np.sort(x @ np.array([1.0, -0.5, 0.3]), axis=1)}
    return m, reference, params, inputs


# ------------------------------------------------------------ embeddings and metric


@family
def hierarchical_softmax_cbow(hessian=False):
    """word2vec CBOW with a hierarchical softmax: the context words' embeddings
    (int64 (B, C) gather) averaged, a path of inner-node vectors per target word (int64
    (B, D) gather) with +-1 codes, a bool mask for paths shorter than D, and the loss
    -sum log sigmoid(code h . v_node) written as -softplus(-.) over the real steps.
    torch: F.logsigmoid and a float mask."""
    rng = np.random.default_rng(5)
    V, nodes, e, D = 7, 6, 3, 3
    m = sg.Model("hierarchical_softmax_cbow", hessian=hessian)
    ctx = m.input("ctx", ("B", 2), dtype="int64")
    path = m.input("path", ("B", D), dtype="int64")
    code, mask = m.input("code", ("B", D)), m.input("mask", ("B", D), dtype="bool")
    emb, node_vec = m.param("emb", (V, e)), m.param("node_vec", (nodes, e))
    h = sg.mean(emb[ctx], axis=1)
    score = sg.sum(h[:, None, :] * node_vec[path], axis=-1)
    logp = -sg.softplus(-code * score)
    m.output("logp_word", sg.sum(sg.where(mask, logp, 0.0), axis=1))
    m.loss(-sg.mean(sg.sum(sg.where(mask, logp, 0.0), axis=1)))

    def reference(p, i):
        h = p["emb"][i["ctx"]].mean(1)
        score = (h[:, None, :] * p["node_vec"][i["path"]]).sum(-1)
        logp = F.logsigmoid(i["code"] * score) * i["mask"].double()
        return -logp.sum(1).mean(), {"logp_word": logp.sum(1)}

    params = {"emb": normal(rng, V, e), "node_vec": normal(rng, nodes, e, scale=0.5)}
    B = 4
    mask = np.array([[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1]], dtype=bool)
    inputs = {
        "ctx": rng.integers(0, V, (B, 2)),
        "path": rng.integers(0, nodes, (B, D)),
        "code": rng.choice([-1.0, 1.0], (B, D)),
        "mask": mask,
    }
    return m, reference, params, inputs


@family
def rotate_knowledge_graph(hessian=False):
    """RotatE (Sun et al.): entities as complex vectors in real arithmetic (re, im
    halves of one (E, 2k) table), relations as phases, the tail distance
    sum_k |h o r - t|_k (sg.norm over a stacked (re, im) axis), a margin gamma, and
    self-adversarial negative sampling: softmax(alpha * score) of the negatives under
    sg.stop_gradient weighting log sigmoid(d_neg - gamma). torch: the authors' form
    with torch.stack([re, im]).norm(dim=0) and .detach()."""
    rng = np.random.default_rng(6)
    E, R, k, gamma, alpha = 6, 2, 3, 2.0, 0.5
    m = sg.Model("rotate_knowledge_graph", hessian=hessian)
    h, r = m.input("h", ("B",), dtype="int64"), m.input("r", ("B",), dtype="int64")
    t, neg = m.input("t", ("B",), dtype="int64"), m.input("neg", ("B", 3), "int64")
    ent, phase = m.param("ent", (E, 2 * k)), m.param("phase", (R, k))

    def dist(head, ph, tail):
        hr, hi = head[..., :k], head[..., k:]
        tr, ti = tail[..., :k], tail[..., k:]
        c, s = sg.cos(ph), sg.sin(ph)
        re_, im_ = hr * c - hi * s - tr, hr * s + hi * c - ti
        return sg.sum(sg.norm(sg.stack([re_, im_], axis=0), axis=0), axis=-1)

    ph = phase[r]
    d_pos = m.output("d_pos", dist(ent[h], ph, ent[t]))
    d_neg = dist(ent[h][:, None, :], ph[:, None, :], ent[neg])
    wts = sg.stop_gradient(sg.softmax(alpha * (gamma - d_neg), axis=1))
    pos = -sg.softplus(-(gamma - d_pos))
    negl = sg.sum(wts * -sg.softplus(-(d_neg - gamma)), axis=1)
    m.loss(-sg.mean(pos) / 2 - sg.mean(negl) / 2)

    def reference(p, i):
        def dist(head, ph, tail):
            hr, hi = head[..., :k], head[..., k:]
            tr, ti = tail[..., :k], tail[..., k:]
            re_ = hr * ph.cos() - hi * ph.sin() - tr
            im_ = hr * ph.sin() + hi * ph.cos() - ti
            return torch.stack([re_, im_], 0).norm(dim=0).sum(-1)

        ent, ph = p["ent"], p["phase"][i["r"]]
        d_pos = dist(ent[i["h"]], ph, ent[i["t"]])
        d_neg = dist(ent[i["h"]][:, None], ph[:, None], ent[i["neg"]])
        wts = torch.softmax(alpha * (gamma - d_neg), 1).detach()
        negl = (wts * F.logsigmoid(d_neg - gamma)).sum(1)
        loss = -F.logsigmoid(gamma - d_pos).mean() / 2 - negl.mean() / 2
        return loss, {"d_pos": d_pos}

    params = {"ent": normal(rng, E, 2 * k, scale=0.7), "phase": normal(rng, R, k)}
    B = 4
    inputs = {
        "h": rng.integers(0, E, B),
        "r": rng.integers(0, R, B),
        "t": rng.integers(0, E, B),
        "neg": rng.integers(0, E, (B, 3)),
    }
    inputs["t"][0] = (inputs["h"][0] + 1) % E  # (no h == t by chance: see section 3)
    return m, reference, params, inputs


@family
def prototypical_networks(hessian=False):
    """Few-shot prototypical networks (Snell et al.): a tanh embedding of support and
    query points, class prototypes as per-class means by sg.segment_sum of the support
    embeddings over int64 labels (counts by segment_sum of ones), squared distances of
    queries to prototypes and cross-entropy of -distance logits (log_softmax +
    take_along_axis). torch: index_add_ and F.cross_entropy."""
    rng = np.random.default_rng(7)
    C, d, e = 3, 4, 3
    m = sg.Model("prototypical_networks", hessian=hessian)
    xs, ys = m.input("xs", ("S", d)), m.input("ys", ("S",), dtype="int64")
    xq, yq = m.input("xq", ("Q", d)), m.input("yq", ("Q",), dtype="int64")
    W, b = m.param("W", (e, d)), m.param("b", (e,))
    es, eq = sg.tanh(xs @ W.T + b), sg.tanh(xq @ W.T + b)
    counts = sg.segment_sum(sg.ones_like(es[:, :1]), ys, C)
    protos = m.output("protos", sg.segment_sum(es, ys, C) / counts)
    dists = sg.sum((eq[:, None, :] - protos[None, :, :]) ** 2, axis=-1)
    logp = sg.log_softmax(-dists, axis=1)
    m.loss(-sg.mean(sg.take_along_axis(logp, yq[:, None], axis=1)))

    def reference(p, i):
        es = torch.tanh(F.linear(i["xs"], p["W"], p["b"]))
        eq = torch.tanh(F.linear(i["xq"], p["W"], p["b"]))
        sums = torch.zeros(C, e, dtype=f64).index_add(0, i["ys"], es)
        counts = torch.zeros(C, dtype=f64).index_add(
            0, i["ys"], torch.ones(len(es), dtype=f64)
        )
        protos = sums / counts[:, None]
        dists = ((eq[:, None, :] - protos[None, :, :]) ** 2).sum(-1)
        return F.cross_entropy(-dists, i["yq"]), {"protos": protos}

    params = {"W": normal(rng, e, d), "b": normal(rng, e, scale=0.2)}
    inputs = {
        "xs": normal(rng, 7, d),
        "ys": np.array([0, 1, 2, 0, 1, 2, 2]),
        "xq": normal(rng, 5, d),
        "yq": rng.integers(0, C, 5),
    }
    return m, reference, params, inputs


@family
def deep_embedded_clustering(hessian=False):
    """Deep embedded clustering (Xie et al.): a linear encoder, the Student-t soft
    assignment q_ij ~ (1 + |z_i - mu_j|^2 / a)^(-(a + 1) / 2) with a learned degree of
    freedom a = exp(log_a) (an expression exponent), the sharpened target p = q^2 / f
    renormalised under sg.stop_gradient, and KL(P || Q) by batch mean. torch:
    F.kl_div(q.log(), p.detach(), reduction='batchmean')."""
    rng = np.random.default_rng(8)
    K, d, e = 3, 4, 2
    m = sg.Model("deep_embedded_clustering", hessian=hessian)
    x = m.input("x", ("n", d))
    W, mu, log_a = m.param("W", (e, d)), m.param("mu", (K, e)), m.param("log_a", ())
    z = x @ W.T
    a = sg.exp(log_a)
    dist2 = sg.sum((z[:, None, :] - mu[None, :, :]) ** 2, axis=-1)
    q = (1.0 + dist2 / a) ** (-(a + 1.0) / 2.0)
    q = m.output("q", q / sg.sum(q, axis=1, keepdims=True))
    weight = q**2 / sg.sum(q, axis=0)
    target = sg.stop_gradient(weight / sg.sum(weight, axis=1, keepdims=True))
    m.loss(sg.sum(target * (sg.log(target) - sg.log(q))) / x.shape[0])

    def reference(p, i):
        z = i["x"] @ p["W"].T
        a = p["log_a"].exp()
        dist2 = ((z[:, None] - p["mu"][None]) ** 2).sum(-1)
        q = (1 + dist2 / a) ** (-(a + 1) / 2)
        q = q / q.sum(1, keepdim=True)
        weight = q**2 / q.sum(0)
        target = (weight / weight.sum(1, keepdim=True)).detach()
        return F.kl_div(q.log(), target, reduction="batchmean"), {"q": q}

    params = {
        "W": normal(rng, e, d, scale=0.7),
        "mu": normal(rng, K, e),
        "log_a": np.array(0.2),
    }
    return m, reference, params, {"x": normal(rng, 6, d)}


# ------------------------------------------------------------ probabilistic heads


@family
def graves_bivariate_mdn(hessian=False):
    """Graves' handwriting mixture density head: a linear layer of features giving K
    mixture logits, 2-D means, log standard deviations and tanh correlations (split
    at cut points by sg.split) plus an end-of-stroke logit; the NLL of pen offsets as
    -logsumexp(log pi + log N2(x; mu, sigma, rho)) and a BCE-with-logits stroke term
    (eos a float input). torch: the textbook density in probability space, logged."""
    rng = np.random.default_rng(9)
    K, H = 3, 4
    m = sg.Model("graves_bivariate_mdn", hessian=hessian)
    feat, x = m.input("feat", ("B", H)), m.input("x", ("B", 2))
    eos = m.input("eos", ("B",))
    W, b = m.param("W", (6 * K + 1, H)), m.param("b", (6 * K + 1,))
    out = feat @ W.T + b
    logit_pi, mu1, mu2, ls1, ls2, rho_raw, e = sg.split(
        out, [K, 2 * K, 3 * K, 4 * K, 5 * K, 6 * K], axis=1
    )
    rho = sg.tanh(rho_raw)
    z1 = (x[:, :1] - mu1) / sg.exp(ls1)
    z2 = (x[:, 1:] - mu2) / sg.exp(ls2)
    Z = z1**2 + z2**2 - 2 * rho * z1 * z2
    one_m = 1 - rho**2
    logN = -Z / (2 * one_m) - math.log(2 * math.pi) - ls1 - ls2 - 0.5 * sg.log(one_m)
    nll = -sg.logsumexp(sg.log_softmax(logit_pi, axis=1) + logN, axis=1)
    e = e[:, 0]
    bce = sg.softplus(e) - eos * e
    m.output("rho", rho)
    m.loss(sg.mean(nll + bce))

    def reference(p, i):
        out = F.linear(i["feat"], p["W"], p["b"])
        pi = torch.softmax(out[:, :K], 1)
        mu1, mu2 = out[:, K : 2 * K], out[:, 2 * K : 3 * K]
        s1, s2 = out[:, 3 * K : 4 * K].exp(), out[:, 4 * K : 5 * K].exp()
        rho = torch.tanh(out[:, 5 * K : 6 * K])
        x1, x2 = i["x"][:, :1], i["x"][:, 1:]
        z = ((x1 - mu1) / s1) ** 2 + ((x2 - mu2) / s2) ** 2
        z = z - 2 * rho * (x1 - mu1) * (x2 - mu2) / (s1 * s2)
        dens = torch.exp(-z / (2 * (1 - rho**2)))
        dens = dens / (2 * math.pi * s1 * s2 * torch.sqrt(1 - rho**2))
        nll = -torch.log((pi * dens).sum(1))
        bce = F.binary_cross_entropy_with_logits(out[:, -1], i["eos"], reduction="none")
        return (nll + bce).mean(), {"rho": rho}

    params = {"W": normal(rng, 6 * K + 1, H, scale=0.4), "b": normal(rng, 6 * K + 1)}
    inputs = {
        "feat": normal(rng, 5, H),
        "x": normal(rng, 5, 2),
        "eos": np.array([0.0, 1.0, 0.0, 0.0, 1.0]),
    }
    return m, reference, params, inputs


def _dlogistic_sg(x, logit_probs, means, log_scales):
    """PixelCNN++'s discretized logistic mixture log-likelihood of x in [-1, 1]
    (256 bins), x (B, 1) against K components (B, K)."""
    log_scales = sg.clip(log_scales, -7.0, None)
    centered = x - means
    inv_s = sg.exp(-log_scales)
    plus_in = inv_s * (centered + 1.0 / 255.0)
    min_in = inv_s * (centered - 1.0 / 255.0)
    cdf_delta = sg.sigmoid(plus_in) - sg.sigmoid(min_in)
    log_cdf_plus = plus_in - sg.softplus(plus_in)
    log_one_minus_cdf_min = -sg.softplus(min_in)
    mid_in = inv_s * centered
    log_pdf_mid = mid_in - log_scales - 2.0 * sg.softplus(mid_in)
    inner = sg.where(
        cdf_delta > 1e-5,
        sg.log(sg.clip(cdf_delta, 1e-12, None)),
        log_pdf_mid - math.log(127.5),
    )
    log_probs = sg.where(
        x < -0.999, log_cdf_plus, sg.where(x > 0.999, log_one_minus_cdf_min, inner)
    )
    return sg.logsumexp(log_probs + sg.log_softmax(logit_probs, axis=1), axis=1)


def _dlogistic_torch(x, logit_probs, means, log_scales):
    log_scales = torch.clamp(log_scales, min=-7.0)
    centered = x - means
    inv_s = torch.exp(-log_scales)
    plus_in = inv_s * (centered + 1.0 / 255.0)
    cdf_plus = torch.sigmoid(plus_in)
    min_in = inv_s * (centered - 1.0 / 255.0)
    cdf_min = torch.sigmoid(min_in)
    log_cdf_plus = plus_in - F.softplus(plus_in)
    log_one_minus_cdf_min = -F.softplus(min_in)
    cdf_delta = cdf_plus - cdf_min
    mid_in = inv_s * centered
    log_pdf_mid = mid_in - log_scales - 2.0 * F.softplus(mid_in)
    log_probs = torch.where(
        x < -0.999,
        log_cdf_plus,
        torch.where(
            x > 0.999,
            log_one_minus_cdf_min,
            torch.where(
                cdf_delta > 1e-5,
                torch.log(torch.clamp(cdf_delta, min=1e-12)),
                log_pdf_mid - np.log(127.5),
            ),
        ),
    )
    return torch.logsumexp(log_probs + torch.log_softmax(logit_probs, 1), 1)


@family
def discretized_logistic_mixture(hessian=False):
    """PixelCNN++'s discretized mixture of logistics over 8-bit intensities scaled to
    [-1, 1]: the edge bins -1 and 1 by the logistic CDF, interior bins by CDF
    differences, and the rare far-tail bins by the density at the bin centre, three
    nested sg.where's; log scales clipped at -7; parameters from a linear layer of
    features. torch: the authors' discretized_mix_logistic_loss (one channel)."""
    rng = np.random.default_rng(10)
    K, H = 3, 4
    m = sg.Model("discretized_logistic_mixture", hessian=hessian)
    feat, x = m.input("feat", ("B", H)), m.input("x", ("B", 1))
    W, b = m.param("W", (3 * K, H)), m.param("b", (3 * K,))
    out = feat @ W.T + b
    ll = _dlogistic_sg(x, out[:, :K], out[:, K : 2 * K], out[:, 2 * K :])
    m.output("ll", ll)
    m.loss(-sg.mean(ll))

    def reference(p, i):
        out = F.linear(i["feat"], p["W"], p["b"])
        ll = _dlogistic_torch(i["x"], out[:, :K], out[:, K : 2 * K], out[:, 2 * K :])
        return -ll.mean(), {"ll": ll}

    params = {"W": normal(rng, 3 * K, H, scale=0.5), "b": normal(rng, 3 * K)}
    params["b"][2 * K :] = -2.0  # small scales: sharp components
    pixels = np.array([0, 255, 17, 128, 200, 91])  # the two edge bins included
    inputs = {"feat": normal(rng, 6, H), "x": (pixels / 127.5 - 1.0)[:, None]}
    return m, reference, params, inputs


@family
def evidential_regression_nig(hessian=False):
    """Deep evidential regression (Amini et al.): a linear head gives the
    Normal-Inverse-Gamma (gamma, nu, alpha, beta) with softplus constraints, the
    Student-t marginal NLL through sg.lgamma, and the evidence regulariser
    |y - gamma| (2 nu + alpha). torch: the authors' NIG_NLL with torch.lgamma."""
    rng = np.random.default_rng(11)
    H = 3
    m = sg.Model("evidential_regression_nig", hessian=hessian)
    feat, y = m.input("feat", ("B", H)), m.input("y", ("B",))
    W, b = m.param("W", (4, H)), m.param("b", (4,))
    out = feat @ W.T + b
    gam = out[:, 0]
    nu, alpha = sg.softplus(out[:, 1]), sg.softplus(out[:, 2]) + 1.0
    beta = sg.softplus(out[:, 3])
    omega = 2.0 * beta * (1.0 + nu)
    nll = (
        0.5 * sg.log(math.pi / nu)
        - alpha * sg.log(omega)
        + (alpha + 0.5) * sg.log(nu * (y - gam) ** 2 + omega)
        + sg.lgamma(alpha)
        - sg.lgamma(alpha + 0.5)
    )
    reg = sg.abs(y - gam) * (2.0 * nu + alpha)
    m.output("aleatoric", beta / (alpha - 1.0))
    m.loss(sg.mean(nll + 0.01 * reg))

    def reference(p, i):
        out = F.linear(i["feat"], p["W"], p["b"])
        gam, nu = out[:, 0], F.softplus(out[:, 1])
        alpha, beta = F.softplus(out[:, 2]) + 1, F.softplus(out[:, 3])
        y = i["y"]
        omega = 2 * beta * (1 + nu)
        nll = (
            0.5 * torch.log(np.pi / nu)
            - alpha * torch.log(omega)
            + (alpha + 0.5) * torch.log(nu * (y - gam) ** 2 + omega)
            + torch.lgamma(alpha)
            - torch.lgamma(alpha + 0.5)
        )
        reg = (y - gam).abs() * (2 * nu + alpha)
        return (nll + 0.01 * reg).mean(), {"aleatoric": beta / (alpha - 1)}

    params = {"W": normal(rng, 4, H, scale=0.5), "b": normal(rng, 4, scale=0.3)}
    return m, reference, params, {"feat": normal(rng, 5, H), "y": normal(rng, 5)}


@family
def kernel_stein_discrepancy(hessian=False):
    """Fitting a 2-D Gaussian mixture density by the kernel Stein discrepancy of
    fixed samples: the score grad_x log p (sg.grad of a logsumexp density w.r.t. the
    sample input), the RBF Stein kernel s_i.s_j k + s_i.grad_j k + grad_i k.s_j +
    tr(grad_i grad_j k) written out, and its V-statistic mean. torch:
    autograd.grad(create_graph=True) and the same kernel terms."""
    rng = np.random.default_rng(12)
    K, h2 = 2, 1.0
    m = sg.Model("kernel_stein_discrepancy", hessian=hessian)
    x = m.input("x", ("n", 2))
    mu, log_s, wl = m.param("mu", (K, 2)), m.param("log_s", (K,)), m.param("wl", (K,))
    s2 = sg.exp(2 * log_s)
    sq = sg.sum((x[:, None, :] - mu[None, :, :]) ** 2, axis=-1)
    logp = sg.logsumexp(sg.log_softmax(wl) - sq / (2 * s2) - 2 * log_s, axis=1)
    score = m.output("score", sg.grad(sg.sum(logp), x))
    diff = x[:, None, :] - x[None, :, :]
    r2 = sg.sum(diff**2, axis=-1)
    kern = sg.exp(-r2 / (2 * h2))
    ss = score @ score.T
    t2 = sg.sum(score[:, None, :] * diff, axis=-1) / h2  # s_i . grad_{x_j} k / k
    t3 = -sg.sum(diff * score[None, :, :], axis=-1) / h2  # grad_{x_i} k . s_j / k
    tr = 2 / h2 - r2 / h2**2
    m.loss(sg.mean(kern * (ss + t2 + t3 + tr)))

    def reference(p, i):
        x = i["x"].clone().requires_grad_()
        s2 = torch.exp(2 * p["log_s"])
        sq = ((x[:, None] - p["mu"][None]) ** 2).sum(-1)
        logp = torch.logsumexp(
            torch.log_softmax(p["wl"], 0) - sq / (2 * s2) - 2 * p["log_s"], 1
        )
        (score,) = torch.autograd.grad(logp.sum(), x, create_graph=True)
        xd = x.detach()
        diff = xd[:, None] - xd[None]
        r2 = (diff**2).sum(-1)
        kern = torch.exp(-r2 / (2 * h2))
        u = score @ score.T + (score[:, None] * diff).sum(-1) / h2
        u = u - (diff * score[None]).sum(-1) / h2 + 2 / h2 - r2 / h2**2
        return (kern * u).mean(), {"score": score}

    params = {
        "mu": normal(rng, K, 2),
        "log_s": np.array([0.1, -0.2]),
        "wl": normal(rng, K, scale=0.3),
    }
    return m, reference, params, {"x": normal(rng, 6, 2)}


@family
def sparse_gp_titsias(hessian=False):
    """Sparse GP regression by Titsias' collapsed variational bound: an RBF kernel
    with learned lengthscale, signal and noise, m = 3 learned inducing inputs,
    Q = K_nm K_mm^-1 K_mn by sg.solve, the Gaussian log-density of y under Q + s^2 I by
    sg.solve and sg.slogdet, minus tr(K_nn - Q) / 2 s^2. torch: MultivariateNormal and
    linalg.solve."""
    rng = np.random.default_rng(13)
    M = 3
    m = sg.Model("sparse_gp_titsias", hessian=hessian)
    X, y = m.input("X", ("n", 1)), m.input("y", ("n",))
    Z = m.param("Z", (M, 1))
    log_ls, log_sf, log_sn = (m.param(k, ()) for k in ("log_ls", "log_sf", "log_sn"))

    def rbf(a, b):
        d2 = (a[:, None, 0] - b[None, :, 0]) ** 2
        return sg.exp(2 * log_sf - 0.5 * d2 / sg.exp(2 * log_ls))

    Kmm = rbf(Z, Z) + 1e-6 * sg.eye(M)
    Kmn = rbf(Z, X)
    Q = Kmn.T @ sg.solve(Kmm, Kmn)
    noise = sg.exp(2 * log_sn)
    C = Q + noise * sg.eye(X.shape[0])
    n = X.shape[0]
    quad = sg.sum(y * sg.solve(C, y))
    logdet = sg.slogdet(C)[1]
    trace = (n * sg.exp(2 * log_sf) - sg.einsum("ii", Q)) / (2 * noise)
    bound = -0.5 * quad - 0.5 * logdet - 0.5 * n * math.log(2 * math.pi) - trace
    m.loss(-bound)

    def reference(p, i):
        def rbf(a, b):
            d2 = (a[:, None, 0] - b[None, :, 0]) ** 2
            return torch.exp(2 * p["log_sf"] - 0.5 * d2 / torch.exp(2 * p["log_ls"]))

        X, y = i["X"], i["y"]
        n = X.shape[0]
        Kmm = rbf(p["Z"], p["Z"]) + 1e-6 * torch.eye(M, dtype=f64)
        Kmn = rbf(p["Z"], X)
        Q = Kmn.T @ torch.linalg.solve(Kmm, Kmn)
        noise = torch.exp(2 * p["log_sn"])
        C = Q + noise * torch.eye(n, dtype=f64)
        mvn = torch.distributions.MultivariateNormal(torch.zeros(n, dtype=f64), C)
        trace = (n * torch.exp(2 * p["log_sf"]) - torch.trace(Q)) / (2 * noise)
        return -(mvn.log_prob(y) - trace), {}

    Xd = np.sort(rng.uniform(-2, 2, 7))[:, None]
    params = {
        "Z": np.array([[-1.2], [0.1], [1.3]]),
        "log_ls": np.array(-0.2),
        "log_sf": np.array(0.1),
        "log_sn": np.array(-1.0),
    }
    inputs = {"X": Xd, "y": np.sin(2 * Xd[:, 0]) + normal(rng, 7, scale=0.1)}
    return m, reference, params, inputs


# ------------------------------------------------------------ dynamics and physics


@family
def selective_scan_ssm(hessian=False):
    """A Mamba-style selective state-space layer unrolled over T = 4 steps: the step
    size dt = softplus(x W_dt^T + b_dt) per channel, A = -exp(A_log), the zero-order
    hold exp(dt A), input-dependent B_t and C_t, h <- exp(dt A) h + dt x B_t, y = C_t.h
    + D x; MSE. torch: the reference selective_scan_ref loop."""
    rng = np.random.default_rng(14)
    D, N, T = 2, 3, 4
    m = sg.Model("selective_scan_ssm", hessian=hessian)
    x, target = m.input("x", ("B", T, D)), m.input("target", ("B", T, D))
    W_dt, b_dt = m.param("W_dt", (D, D)), m.param("b_dt", (D,))
    A_log, W_B = m.param("A_log", (D, N)), m.param("W_B", (N, D))
    W_C, Dskip = m.param("W_C", (N, D)), m.param("Dskip", (D,))
    dt = sg.softplus(x @ W_dt.T + b_dt)
    A = -sg.exp(A_log)
    dA = sg.exp(dt[..., None] * A)
    Bt, Ct = x @ W_B.T, x @ W_C.T
    h = sg.zeros_like(dA[:, 0])
    ys = []
    for t in range(T):
        h = dA[:, t] * h + (dt[:, t] * x[:, t])[..., None] * Bt[:, t, None, :]
        ys.append(sg.sum(h * Ct[:, t, None, :], axis=-1) + Dskip * x[:, t])
    y = m.output("y", sg.stack(ys, axis=1))
    m.loss(sg.mean((y - target) ** 2))

    def reference(p, i):
        x = i["x"]
        dt = F.softplus(x @ p["W_dt"].T + p["b_dt"])
        A = -p["A_log"].exp()
        dA = torch.exp(torch.einsum("btd,dn->btdn", dt, A))
        dBx = torch.einsum("btd,btn,btd->btdn", dt, x @ p["W_B"].T, x)
        Ct = x @ p["W_C"].T
        h = torch.zeros(x.shape[0], D, N, dtype=f64)
        ys = []
        for t in range(T):
            h = dA[:, t] * h + dBx[:, t]
            ys.append(torch.einsum("bdn,bn->bd", h, Ct[:, t]))
        y = torch.stack(ys, 1) + x * p["Dskip"]
        return F.mse_loss(y, i["target"]), {"y": y}

    params = {
        "W_dt": normal(rng, D, D, scale=0.5),
        "b_dt": normal(rng, D, scale=0.3),
        "A_log": np.log(rng.uniform(0.5, 2, (D, N))),
        "W_B": normal(rng, N, D),
        "W_C": normal(rng, N, D),
        "Dskip": normal(rng, D),
    }
    inputs = {"x": normal(rng, 3, T, D), "target": normal(rng, 3, T, D, scale=0.5)}
    return m, reference, params, inputs


@family
def wave_equation_inversion(hessian=False):
    """Full-waveform inversion in 1-D: u_tt = c(x)^2 u_xx on 8 grid points with zero
    Dirichlet ends (sg.pad), leapfrog time stepping over 10 steps from an initial
    pulse at rest, the speed profile c = softplus(theta) learned from the trace
    recorded at one receiver; MSE plus a smoothness penalty by sg.diff. torch: the
    same stencil with F.pad and torch.diff."""
    rng = np.random.default_rng(15)
    nx, nt, r = 8, 10, 2.0 / 8 * 0.5  # r = dt / dx (CFL-stable for c < 2)
    m = sg.Model("wave_equation_inversion", hessian=hessian)
    u0, trace = m.input("u0", (nx,)), m.input("trace", (nt,))
    theta = m.param("theta", (nx,))
    c2 = sg.softplus(theta) ** 2
    u_prev, u = u0, u0
    rec = []
    for _ in range(nt):
        padded = sg.pad(u, (1, 1))
        lap = padded[2:] - 2 * u + padded[:-2]
        u_prev, u = u, 2 * u - u_prev + r**2 * c2 * lap
        rec.append(u[5])
    rec = m.output("rec", sg.stack(rec))
    m.loss(sg.mean((rec - trace) ** 2) + 1e-3 * sg.sum(sg.diff(theta) ** 2))

    def reference(p, i):
        c2 = F.softplus(p["theta"]) ** 2
        u_prev = u = i["u0"]
        rec = []
        for _ in range(nt):
            padded = F.pad(u, (1, 1))
            lap = padded[2:] - 2 * u + padded[:-2]
            u_prev, u = u, 2 * u - u_prev + r**2 * c2 * lap
            rec.append(u[5])
        rec = torch.stack(rec)
        loss = ((rec - i["trace"]) ** 2).mean() + 1e-3 * (
            torch.diff(p["theta"]) ** 2
        ).sum()
        return loss, {"rec": rec}

    xs = np.arange(nx)
    inputs = {
        "u0": np.exp(-0.5 * (xs - 2.5) ** 2),
        "trace": 0.3 * np.sin(np.linspace(0, 3, nt)),
    }
    return m, reference, {"theta": 1.0 + normal(rng, nx, scale=0.2)}, inputs


def _sir_rhs(s, i, beta, gamma):
    return -beta * s * i, beta * s * i - gamma * i


@family
def sir_epidemic_rk4(hessian=False):
    """An SIR epidemic fit to daily case counts: S and I as 0-d values stepped by
    classical RK4 (two steps a day), incidence = population x (S_day - S_next), and
    the Poisson log-likelihood of the counts with its lgamma(k + 1) of the data;
    parameters log beta, log gamma and logit of the initial infected fraction. torch:
    torch.distributions.Poisson.log_prob."""
    days, sub, pop = 6, 2, 1000.0
    m = sg.Model("sir_epidemic_rk4", hessian=hessian)
    counts = m.input("counts", (days,))
    log_beta, log_gamma, logit_i0 = (
        m.param(k, ()) for k in ("log_beta", "log_gamma", "logit_i0")
    )
    beta, gamma = sg.exp(log_beta), sg.exp(log_gamma)
    i = sg.sigmoid(logit_i0)
    s = 1.0 - i
    h = 1.0 / sub
    inc = []
    for _ in range(days):
        s_day = s
        for _ in range(sub):
            k1 = _sir_rhs(s, i, beta, gamma)
            k2 = _sir_rhs(s + h / 2 * k1[0], i + h / 2 * k1[1], beta, gamma)
            k3 = _sir_rhs(s + h / 2 * k2[0], i + h / 2 * k2[1], beta, gamma)
            k4 = _sir_rhs(s + h * k3[0], i + h * k3[1], beta, gamma)
            s = s + h / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
            i = i + h / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
        inc.append(pop * (s_day - s))
    rate = m.output("rate", sg.stack(inc))
    m.loss(-sg.sum(counts * sg.log(rate) - rate - sg.lgamma(counts + 1.0)))

    def reference(p, inp):
        beta, gamma = p["log_beta"].exp(), p["log_gamma"].exp()
        i = torch.sigmoid(p["logit_i0"])
        s = 1 - i
        h = 1.0 / sub
        inc = []
        for _ in range(days):
            s_day = s
            for _ in range(sub):
                k1 = _sir_rhs(s, i, beta, gamma)
                k2 = _sir_rhs(s + h / 2 * k1[0], i + h / 2 * k1[1], beta, gamma)
                k3 = _sir_rhs(s + h / 2 * k2[0], i + h / 2 * k2[1], beta, gamma)
                k4 = _sir_rhs(s + h * k3[0], i + h * k3[1], beta, gamma)
                s = s + h / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
                i = i + h / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
            inc.append(pop * (s_day - s))
        rate = torch.stack(inc)
        ll = torch.distributions.Poisson(rate).log_prob(inp["counts"]).sum()
        return -ll, {"rate": rate}

    params = {
        "log_beta": np.array(np.log(0.9)),
        "log_gamma": np.array(np.log(0.3)),
        "logit_i0": np.array(-4.0),
    }
    return m, reference, params, {"counts": np.array([12.0, 20, 31, 38, 60, 71])}


@family
def fem_poisson_inverse(hessian=False):
    """Inverse conductivity for -(k u')' = f on (0, 1) with P1 finite elements: 6
    elements of learned log conductivity, the 5x5 stiffness matrix assembled from
    sg.eye(5) (diagonal), sg.eye(5, k=1) and sg.eye(5, k=-1) (off-diagonals) times the
    element conductivities, u = sg.solve(K, f h), an MSE to measured nodal values and a
    smoothness prior. torch: torch.diag and linalg.solve."""
    rng = np.random.default_rng(16)
    ne = 6
    n, hx = ne - 1, 1.0 / ne
    m = sg.Model("fem_poisson_inverse", hessian=hessian)
    f, u_obs = m.input("f", (n,)), m.input("u_obs", (n,))
    log_k = m.param("log_k", (ne,))
    k = sg.exp(log_k)
    diag = (k[:-1] + k[1:]) / hx
    Kmat = (
        sg.eye(n) * diag[None, :]
        - sg.eye(n, k=1) * k[None, :-1] / hx
        - sg.eye(n, k=-1) * k[None, 1:] / hx
    )
    u = m.output("u", sg.solve(Kmat, f * hx))
    m.loss(sg.sum((u - u_obs) ** 2) + 1e-3 * sg.sum(sg.diff(log_k) ** 2))

    def reference(p, i):
        k = p["log_k"].exp()
        Kmat = (
            torch.diag((k[:-1] + k[1:]) / hx)
            - torch.diag(k[1:-1] / hx, 1)
            - torch.diag(k[1:-1] / hx, -1)
        )
        u = torch.linalg.solve(Kmat, i["f"] * hx)
        loss = ((u - i["u_obs"]) ** 2).sum() + 1e-3 * (
            torch.diff(p["log_k"]) ** 2
        ).sum()
        return loss, {"u": u}

    params = {"log_k": normal(rng, ne, scale=0.3)}
    inputs = {"f": np.ones(n), "u_obs": 0.1 * np.sin(np.pi * np.arange(1, 6) / 6)}
    return m, reference, params, inputs


def _catmull_rom_sg(c, x, K):
    """A uniform Catmull-Rom spline through control values c at knots 0..K-1,
    evaluated at x in [1, K - 2) by masks per segment (a searchsorted by hand)."""
    y = sg.zeros_like(x)
    for s in range(1, K - 2):
        u = x - s
        p0, p1, p2, p3 = c[s - 1], c[s], c[s + 1], c[s + 2]
        val = 0.5 * (
            2 * p1
            + (-p0 + p2) * u
            + (2 * p0 - 5 * p1 + 4 * p2 - p3) * u**2
            + (-p0 + 3 * p1 - 3 * p2 + p3) * u**3
        )
        y = sg.where((x >= s) & (x < s + 1), val, y)
    return y


def _catmull_rom_torch(c, x):
    s = torch.floor(x).long()
    u = x - s
    p0, p1, p2, p3 = c[s - 1], c[s], c[s + 1], c[s + 2]
    return 0.5 * (
        2 * p1
        + (-p0 + p2) * u
        + (2 * p0 - 5 * p1 + 4 * p2 - p3) * u**2
        + (-p0 + 3 * p1 - 3 * p2 + p3) * u**3
    )


@family
def catmull_rom_spline_fit(hessian=False):
    """A Catmull-Rom spline regression: K = 7 learned control values at integer knots,
    data points located in their segment by (x >= s) & (x < s + 1) masks (nested
    sg.where over the segments), the cubic Hermite form per segment, MSE plus a
    second-difference roughness penalty (sg.diff(c, n=2)). torch: torch.floor, long
    indices and gathers."""
    rng = np.random.default_rng(17)
    K = 7
    m = sg.Model("catmull_rom_spline_fit", hessian=hessian)
    x, y = m.input("x", ("n",)), m.input("y", ("n",))
    c = m.param("c", (K,))
    pred = m.output("pred", _catmull_rom_sg(c, x, K))
    m.loss(sg.mean((pred - y) ** 2) + 0.01 * sg.sum(sg.diff(c, n=2) ** 2))

    def reference(p, i):
        pred = _catmull_rom_torch(p["c"], i["x"])
        loss = ((pred - i["y"]) ** 2).mean() + 0.01 * (
            torch.diff(p["c"], n=2) ** 2
        ).sum()
        return loss, {"pred": pred}

    xd = np.concatenate([rng.uniform(1, K - 2, 6), [2.0, 3.0]])  # two exactly at knots
    inputs = {"x": xd, "y": np.sin(xd) + normal(rng, 8, scale=0.05)}
    return m, reference, {"c": normal(rng, K)}, inputs


# ===================================================================== 2. against torch

BUILD_SECONDS: dict[str, float] = {}


STOPPED = {  # families whose loss holds an sg.stop_gradient: finite differences see
    # the derivative it stops (as torch's gradcheck would), so torch alone judges
    "rotate_knowledge_graph",
    "deep_embedded_clustering",
}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_agrees_with_pytorch_and_central_differences(name):
    start = time.perf_counter()
    module_of(name)
    BUILD_SECONDS.setdefault(name, time.perf_counter() - start)
    if name in STOPPED:
        _, reference, params, inputs = FAMILIES[name]()
        check(module_of(name), reference, params, inputs)
    else:
        FAMILIES.assert_agrees(name)


HESSIAN_FAMILIES = list(FAMILIES)


@pytest.mark.parametrize("name", HESSIAN_FAMILIES)
def test_hessian_and_hvp_agree_with_pytorch(name):
    start = time.perf_counter()
    module_of(name, hessian=True)
    BUILD_SECONDS.setdefault(name + " (hessian)", time.perf_counter() - start)
    FAMILIES.assert_second_order_agrees(name)


def _first(inputs, n, *keys):
    """The inputs with the first n entries (along axis 0) of ``keys``."""
    return {**inputs, **{k: inputs[k][:n] for k in keys}}


SIZES = {  # family -> inputs at other sizes of its symbolic dims (size 1 included)
    "structured_svm_viterbi": [lambda i: _first(i, 1, *i)],
    "sparsemax_classifier": [lambda i: _first(i, 1, "x", "labels")],
    "lovasz_hinge_segmentation": [
        lambda i: _first(i, 1, *i),
        lambda i: _first(i, 3, *i),
    ],
    "neuralsort_ranking": [lambda i: _first(i, 1, *i)],
    "soft_sorting_network": [lambda i: _first(i, 1, *i)],
    "hierarchical_softmax_cbow": [lambda i: _first(i, 1, *i)],
    "rotate_knowledge_graph": [lambda i: _first(i, 1, *i)],
    "prototypical_networks": [
        lambda i: _first(i, 1, "xq", "yq"),
        lambda i: {**i, "xs": i["xs"][:3], "ys": i["ys"][:3]},  # one shot
    ],
    "deep_embedded_clustering": [lambda i: _first(i, 2, *i)],  # (n = 1: p = q)
    "graves_bivariate_mdn": [lambda i: _first(i, 1, *i)],
    "discretized_logistic_mixture": [lambda i: _first(i, 2, *i)],  # two edge bins
    "evidential_regression_nig": [lambda i: _first(i, 1, *i)],
    "kernel_stein_discrepancy": [lambda i: _first(i, 1, *i)],
    "sparse_gp_titsias": [lambda i: _first(i, 1, *i)],
    "selective_scan_ssm": [lambda i: _first(i, 1, *i)],
    "catmull_rom_spline_fit": [lambda i: _first(i, 1, *i)],
}


@pytest.mark.parametrize(
    "name, k", [(name, k) for name, cuts in SIZES.items() for k in range(len(cuts))]
)
def test_other_sizes_of_the_symbolic_dims_agree_with_pytorch(name, k):
    _, reference, params, inputs = FAMILIES[name]()
    inputs = SIZES[name][k](inputs)
    check(module_of(name), reference, params, inputs)
    if name not in STOPPED:
        assert_matches_central_differences(module_of(name), params, inputs)


UNROLLED = [
    "structured_svm_viterbi",
    "neuralsort_ranking",
    "soft_sorting_network",
    "hierarchical_softmax_cbow",
    "rotate_knowledge_graph",
    "prototypical_networks",
    "deep_embedded_clustering",
    "graves_bivariate_mdn",
    "discretized_logistic_mixture",
    "evidential_regression_nig",
    "kernel_stein_discrepancy",
    "selective_scan_ssm",
    "catmull_rom_spline_fit",
]


@pytest.mark.parametrize("name", UNROLLED)
def test_unrolled_at_the_datas_sizes_agrees_with_pytorch(name):
    start = time.perf_counter()
    module_of(name, unroll=True)
    BUILD_SECONDS.setdefault(name + " (unrolled)", time.perf_counter() - start)
    FAMILIES.assert_unrolled_agrees(name)


@pytest.mark.parametrize("name", ["wave_equation_inversion", "sir_epidemic_rk4"])
def test_small_fixed_size_families_run_unrolled_by_default(name):
    """No symbolic dims and no array over 32 elements: unrolled automatically, and the
    unrolled function is what runs (no silent fallback to NumPy)."""
    _, reference, params, inputs = FAMILIES[name]()
    module = module_of(name)
    assert any(k.startswith("_value_and_grad_") for k in vars(module))
    check_unrolled(module, reference, params, inputs)


# ===================================================================== 3. edge cases


def test_viterbi_with_every_path_tied_splits_like_torch_amax():
    """All-zero emissions and a constant transition matrix: every path ties at every
    step, sg.max shares the gradient equally, as torch's amax does (torch.max(dim)
    would give it all to one index)."""
    _, reference, params, inputs = FAMILIES["structured_svm_viterbi"]()
    inputs = {**inputs, "X": np.zeros_like(inputs["X"])}
    params = {**params, "A": np.full((3, 3), 0.25)}
    module = module_of("structured_svm_viterbi")
    check(module, reference, params, inputs)
    out, _ = module.forward(params, inputs)
    assert np.allclose(out["best"], 4 * 0.25 + 5 * 1.0)  # a cost-1 tag at each step


def test_viterbi_with_forbidden_transitions_masked_by_a_bool_input():
    """BIO-style constraints: a bool (K, K) input of allowed transitions, the
    forbidden ones masked with -1e30 (torch: masked_fill with -inf), the gold paths
    allowed; the masked entries get no gradient."""
    K, T = 3, 5
    m = sg.Model("viterbi_constrained")
    em, y = m.input("em", ("B", T, K)), m.input("y", ("B", T), dtype="int64")
    allowed = m.input("allowed", (K, K), dtype="bool")
    A = m.param("A", (K, K))
    At = sg.where(allowed, A, -1e30)
    delta = em[:, 0]
    for t in range(1, T):
        delta = sg.max(delta[:, :, None] + At[None], axis=1) + em[:, t]
    gold_tr = sg.take_along_axis(At[y[:, :-1]], y[:, 1:, None], axis=2)[:, :, 0]
    m.loss(sg.mean(sg.max(delta, axis=1) - sg.sum(gold_tr, axis=1)))

    def reference(p, i):
        At = p["A"].masked_fill(~i["allowed"], float("-inf"))
        delta = i["em"][:, 0]
        for t in range(1, T):
            delta = torch.amax(delta[:, :, None] + At, dim=1) + i["em"][:, t]
        y = i["y"]
        gold = At[y[:, :-1], y[:, 1:]].sum(1)
        return (delta.amax(1) - gold).mean(), {}

    rng = np.random.default_rng(20)
    allowed = np.array([[1, 1, 0], [1, 1, 1], [0, 1, 1]], dtype=bool)  # no 0 <-> 2
    inputs = {
        "em": normal(rng, 2, T, K),
        "y": np.array([[0, 0, 1, 2, 2], [1, 1, 0, 1, 2]]),
        "allowed": allowed,
    }
    params = {"A": normal(rng, K, K)}
    module = compile_module(m)
    check(module, reference, params, inputs)
    _, grads = module.value_and_grad(params, inputs)
    assert np.all(grads["A"][~allowed] == 0.0)


def _ints(rng, *shape):
    return rng.integers(-1, 2, shape).astype(float)


@pytest.mark.parametrize("seed", range(4))
def test_integer_valued_data_full_of_ties_in_the_sorting_and_max_families(seed):
    """Weights and features in {-1, 0, 1}: ties in the Viterbi maxima (vectorized and
    unrolled), in sparsemax's sort and support, in Lovasz's errors and in NeuralSort's
    scores; torch (amax, stable sorts) agrees."""
    rng = np.random.default_rng(100 + seed)
    cases = {
        "structured_svm_viterbi": (
            {"W": _ints(rng, 3, 4), "A": _ints(rng, 3, 3)},
            {"X": _ints(rng, 3, 5, 4)},
        ),
        "sparsemax_classifier": (
            {"W": _ints(rng, 4, 3), "b": _ints(rng, 4)},
            {"x": _ints(rng, 5, 3)},
        ),
        "lovasz_hinge_segmentation": (
            {"w": _ints(rng, 3), "b": _ints(rng)},
            {"x": _ints(rng, 8, 3)},
        ),
        "neuralsort_ranking": ({"w": _ints(rng, 3)}, {"X": _ints(rng, 2, 5, 3)}),
    }
    for name, (p, i) in cases.items():
        _, reference, params, inputs = FAMILIES[name]()
        params, inputs = {**params, **p}, {**inputs, **i}
        check(module_of(name), reference, params, inputs)
    _, reference, params, inputs = FAMILIES["structured_svm_viterbi"]()
    p, i = cases["structured_svm_viterbi"]
    check_unrolled(
        module_of("structured_svm_viterbi", unroll=True), reference, p, {**inputs, **i}
    )


def test_lgamma_and_its_derivatives_at_negative_tiny_and_huge_arguments():
    """log|Gamma| (torch's lgamma), digamma as an output and the Hessian (trigamma)
    at arguments between poles, near them, tiny and huge."""
    m = sg.Model("lgamma_range", hessian=True)
    x, a = m.input("x", ("n",)), m.param("a", ())
    m.output("dg", sg.digamma(x * a))
    m.loss(sg.sum(sg.lgamma(x * a)))

    def reference(p, i):
        z = i["x"] * p["a"]
        return torch.lgamma(z).sum(), {"dg": torch.digamma(z)}

    module = compile_module(m)
    for xs in (
        [-2.5, -0.3, -7.7, -20.5, -50.3, -100.25],
        [1e-8, 3e-5, 0.5, 1e6, 3e7, 12.0],
        [171.5, 200.0, 1e15, -3.0000001, -0.999999, 2.0],
    ):
        params, inputs = {"a": np.array(1.0)}, {"x": np.array(xs)}
        check(module, reference, params, inputs)
        H = module.hessian(params, inputs)
        assert rel(H, torch_hessian(reference, params, inputs)) <= 1e-8


def test_sparsemax_with_tied_logits_and_a_one_hot_output():
    """Tied logits (zero features: z = b with b[0] == b[1]) and a row whose sparsemax
    is exactly one-hot (a dominant logit): supports of size 2 and 1."""
    _, reference, params, inputs = FAMILIES["sparsemax_classifier"]()
    params = {**params, "b": np.array([0.5, 0.5, -1.0, -0.2])}
    x = inputs["x"].copy()
    x[0] = 0.0
    x[1] = 0.0
    params["W"] = params["W"].copy()
    params["W"][2] = [30.0, 0.0, 0.0]
    x[1, 0] = 1.0  # row 1: z_2 = 29, the rest far below
    inputs = {**inputs, "x": x}
    module = module_of("sparsemax_classifier")
    check(module, reference, params, inputs)
    out, _ = module.forward(params, inputs)
    assert np.allclose(out["p"][0], [0.5, 0.5, 0.0, 0.0])
    assert np.array_equal(out["p"][1], [0.0, 0.0, 1.0, 0.0])
    assert np.allclose(out["p"].sum(1), 1.0)


def test_lovasz_hinge_with_tied_errors_and_single_class_labels():
    """Duplicated pixels with opposite labels (tied errors: the stable order decides
    which label comes first, as torch's stable sort), and all-foreground and
    all-background label maps (the Jaccard denominators at their extremes)."""
    _, reference, params, inputs = FAMILIES["lovasz_hinge_segmentation"]()
    module = module_of("lovasz_hinge_segmentation")
    x = inputs["x"].copy()
    x[3] = x[1]
    gt = inputs["gt"].copy()
    gt[1], gt[3] = 1.0, 0.0
    params0 = {"w": np.zeros(3), "b": np.array(0.0)}  # every error exactly 1
    for p, g in (
        (params, gt),
        (params0, gt),
        (params, np.ones(8)),
        (params, np.zeros(8)),
    ):
        check(module, reference, p, {"x": x, "gt": g})


def test_neuralsort_with_tied_scores_and_a_cold_temperature():
    """Two identical items (|s_i - s_j| = 0 off the diagonal: abs'(0) = 0 as torch's)
    and tau = e^-6 (softmax logits in the hundreds)."""
    _, reference, params, inputs = FAMILIES["neuralsort_ranking"]()
    X = inputs["X"].copy()
    X[0, 2] = X[0, 0]
    module = module_of("neuralsort_ranking")
    for p in (params, {**params, "log_tau": np.array(-6.0)}):
        check(module, reference, p, {**inputs, "X": X})


def test_soft_sorting_network_saturated_and_tied():
    """beta = e^7 (~1100): the sigmoids saturate to exact 0 and 1 for well separated
    values (a hard sort, finite gradients, no warnings); tied values swap half and
    half."""
    _, reference, params, inputs = FAMILIES["soft_sorting_network"]()
    module = module_of("soft_sorting_network")
    hard = {**params, "log_beta": np.array(7.0)}
    check(module, reference, hard, inputs)
    out, _ = module.forward(hard, inputs)
    v = inputs["x"] @ params["w"]
    assert np.allclose(out["soft_sorted"], np.sort(v, axis=1), atol=1e-6)
    x = inputs["x"].copy()
    x[:, 1] = x[:, 0]
    check(module, reference, params, {**inputs, "x": x})


def test_hierarchical_softmax_with_huge_scores_and_a_one_step_path():
    """Embeddings scaled so the path scores reach +-1000 (softplus stays finite) and
    paths of length 1 only."""
    _, reference, params, inputs = FAMILIES["hierarchical_softmax_cbow"]()
    module = module_of("hierarchical_softmax_cbow")
    big = {k: 25.0 * v for k, v in params.items()}
    check(module, reference, big, inputs)
    loss, _ = module.value_and_grad(big, inputs)
    assert loss > 100.0
    mask = np.zeros_like(inputs["mask"])
    mask[:, 0] = True
    check(module, reference, params, {**inputs, "mask": mask})


def test_rotate_distance_zero_when_the_relation_maps_head_onto_tail():
    """h == t with a zero phase: the complex modulus |h o r - t| is exactly 0 in every
    dimension, sg.norm's gradient there is 0, as torch's norm."""
    _, reference, params, inputs = FAMILIES["rotate_knowledge_graph"]()
    phase = params["phase"].copy()
    phase[inputs["r"][1]] = 0.0
    inputs = {**inputs, "t": inputs["t"].copy()}
    inputs["t"][1] = inputs["h"][1]
    module = module_of("rotate_knowledge_graph")
    params = {**params, "phase": phase}
    check(module, reference, params, inputs)
    out, _ = module.forward(params, inputs)
    assert out["d_pos"][1] == 0.0


def test_prototypes_with_a_query_on_a_one_shot_prototype():
    """A class with a single support example whose query is that example (distance
    exactly 0 to its prototype)."""
    _, reference, params, inputs = FAMILIES["prototypical_networks"]()
    inputs = {**inputs, "ys": np.array([0, 1, 2, 0, 1, 0, 1])}  # class 2: one shot
    xq = inputs["xq"].copy()
    xq[0] = inputs["xs"][2]
    inputs = {**inputs, "xq": xq, "yq": np.array([2, 0, 1, 1, 0])}
    module = module_of("prototypical_networks")
    check(module, reference, params, inputs)
    assert_matches_central_differences(module, params, inputs)


def test_discretized_logistic_far_tail_branch_and_clipped_scales():
    """Log scales below the -7 clip (the clip's gradient is 0, as torch's clamp) and
    a pixel 60 bins from every mean at a tiny scale: its CDF difference underflows
    below 1e-5, so the density at the bin centre is used."""
    _, reference, params, inputs = FAMILIES["discretized_logistic_mixture"]()
    K = 3
    W = params["W"].copy()
    W[2 * K :] = 0.0
    b = params["b"].copy()
    b[2 * K :] = [-9.0, -5.0, -7.5]
    W[K : 2 * K] = 0.0
    b[K : 2 * K] = [0.2, 0.21, 0.22]
    params = {"W": W, "b": b}
    x = inputs["x"].copy()
    x[2, 0] = 0.2 - 60 / 127.5
    module = module_of("discretized_logistic_mixture")
    check(module, reference, params, {**inputs, "x": x})
    s = np.exp(-5.0)
    cdf = lambda v: 1 / (1 + np.exp(-(v - 0.21) / s))  # noqa: E731
    assert cdf(x[2, 0] + 1 / 255) - cdf(x[2, 0] - 1 / 255) < 1e-5  # the tail branch
    _, grads = module.value_and_grad(params, {**inputs, "x": x})
    assert np.all(np.isfinite(grads["W"])) and np.all(np.isfinite(grads["b"]))


def test_evidential_regression_at_an_exact_fit():
    """y == gamma exactly (zero features: gamma = b[0]): |y - gamma|' = 0, as torch's
    abs; and a huge evidence (softplus near 800)."""
    _, reference, params, inputs = FAMILIES["evidential_regression_nig"]()
    feat = inputs["feat"].copy()
    feat[0] = 0.0
    y = inputs["y"].copy()
    y[0] = params["b"][0]
    module = module_of("evidential_regression_nig")
    check(module, reference, params, {"feat": feat, "y": y})
    b = params["b"].copy()
    b[1:] = [800.0, 3.0, 800.0]
    check(module, reference, {**params, "b": b}, {"feat": feat, "y": y})


def test_selective_scan_with_vanishing_and_huge_step_sizes():
    """b_dt = -800: softplus underflows to dt = 0 (the state never moves, its
    gradient 0); b_dt = 60: exp(dt A) underflows to ~0 (the state forgets at once)."""
    _, reference, params, inputs = FAMILIES["selective_scan_ssm"]()
    module = module_of("selective_scan_ssm")
    for b in (-800.0, 60.0):
        check(module, reference, {**params, "b_dt": np.full(2, b)}, inputs)


def test_sparse_gp_with_an_inducing_point_on_a_data_point_and_tiny_noise():
    _, reference, params, inputs = FAMILIES["sparse_gp_titsias"]()
    Z = params["Z"].copy()
    Z[1, 0] = inputs["X"][3, 0]
    params = {**params, "Z": Z, "log_sn": np.array(-3.0)}
    module = module_of("sparse_gp_titsias")
    check(module, reference, params, inputs, tol=1e-8)
    assert_matches_central_differences(module, params, inputs)


def test_fem_with_a_thousandfold_conductivity_contrast():
    _, reference, params, inputs = FAMILIES["fem_poisson_inverse"]()
    log_k = np.array([0.0, 0.0, 7.0, 7.0, -0.5, 0.0])
    module = module_of("fem_poisson_inverse")
    check(module, reference, {"log_k": log_k}, inputs)
    out, _ = module.forward({"log_k": log_k}, inputs)
    k = np.exp(log_k)
    h = 1 / 6
    Kmat = np.diag((k[:-1] + k[1:]) / h) - np.diag(k[1:-1] / h, 1)
    Kmat = Kmat - np.diag(k[1:-1] / h, -1)
    assert np.allclose(out["u"], np.linalg.solve(Kmat, np.full(5, h)))


def test_catmull_rom_at_every_knot_and_the_left_end():
    """Points exactly on knots 1..4 (each belongs to the segment it starts, as floor
    assigns it) and the spline's value there is the control value."""
    _, reference, params, _ = FAMILIES["catmull_rom_spline_fit"]()
    x = np.array([1.0, 2.0, 3.0, 4.0, 4.999999])
    inputs = {"x": x, "y": np.zeros(5)}
    module = module_of("catmull_rom_spline_fit")
    check(module, reference, params, inputs)
    out, _ = module.forward(params, inputs)
    assert np.allclose(out["pred"][:4], params["c"][1:5])


def test_sir_with_zero_counts_and_a_tiny_initial_outbreak():
    _, reference, params, inputs = FAMILIES["sir_epidemic_rk4"]()
    module = module_of("sir_epidemic_rk4")
    params = {**params, "logit_i0": np.array(-12.0)}
    check(module, reference, params, {"counts": np.array([0.0, 0, 1, 0, 0, 2])})


def test_rotate_hessian_at_a_zero_distance_is_finite_where_torchs_is_nan():
    """The second derivative of |v| at v = 0 is undefined: torch's double backward of
    norm gives nan there, symgrad finite values (the first-order convention of a 0
    gradient, differentiated again). Wherever torch's Hessian is finite, they agree."""
    _, reference, params, inputs = FAMILIES["rotate_knowledge_graph"]()
    phase = params["phase"].copy()
    phase[inputs["r"][1]] = 0.0
    params = {**params, "phase": phase}
    inputs = {**inputs, "t": inputs["t"].copy()}
    inputs["t"][1] = inputs["h"][1]
    expected = torch_hessian(reference, params, inputs)
    H = module_of("rotate_knowledge_graph", hessian=True).hessian(params, inputs)
    finite = np.isfinite(expected)
    assert not finite.all() and np.isfinite(H).all()
    assert rel(H[finite], expected[finite]) <= 1e-9


def test_fem_over_a_symbolic_number_of_nodes():
    """The same assembly over a mesh of any size N of interior nodes: sg.eye(n, k=+-1)
    of n = f.shape[0], the conductivity a learned profile exp(a + b x) at the
    midpoints of each node's left and right elements (two (N,) inputs: symgrad cannot
    know that an (N + 1,) array of elements is one longer than f)."""
    m = sg.Model("fem_symbolic_nodes")
    xl, xr = m.input("xl", ("N",)), m.input("xr", ("N",))
    f, u_obs = m.input("f", ("N",)), m.input("u_obs", ("N",))
    a, b = m.param("a", ()), m.param("b", ())
    kl, kr = sg.exp(a + b * xl), sg.exp(a + b * xr)
    n = f.shape[0]
    hx = 1.0 / (n + 1)
    Kmat = (
        sg.eye(n) * ((kl + kr) / hx)[None, :]
        - sg.eye(n, k=1) * kl[None, :] / hx
        - sg.eye(n, k=-1) * kr[None, :] / hx
    )
    u = m.output("u", sg.solve(Kmat, f * hx))
    m.loss(sg.sum((u - u_obs) ** 2))

    def reference(p, i):
        n = len(i["f"])
        xe = (torch.arange(n + 1, dtype=f64) + 0.5) / (n + 1)
        k = torch.exp(p["a"] + p["b"] * xe)
        hx = 1.0 / (n + 1)
        Kmat = (
            torch.diag((k[:-1] + k[1:]) / hx)
            - torch.diag(k[1:-1] / hx, 1)
            - torch.diag(k[1:-1] / hx, -1)
        )
        u = torch.linalg.solve(Kmat, i["f"] * hx)
        return ((u - i["u_obs"]) ** 2).sum(), {"u": u}

    module = compile_module(m)
    params = {"a": np.array(0.2), "b": np.array(-0.7)}
    for ne in (2, 4, 9):  # one interior node, then more
        xe = (np.arange(ne) + 0.5) / ne
        nodes = np.arange(1, ne) / ne
        inputs = {
            "xl": xe[:-1],
            "xr": xe[1:],
            "f": np.ones(ne - 1),
            "u_obs": 0.1 * np.sin(np.pi * nodes),
        }
        check(module, reference, params, inputs)
        assert_matches_central_differences(module, params, inputs)


@pytest.mark.parametrize("name", ["sparsemax_classifier", "lovasz_hinge_segmentation"])
def test_unrolling_a_family_that_sorts_is_refused_by_name(name):
    model = FAMILIES[name]()[0]
    with pytest.raises(Exception, match=r"\(a sort\) has no scalar"):
        model.unroll(**({"B": 5} if name == "sparsemax_classifier" else {"P": 8}))
        compile_module(model)


def test_no_family_takes_more_than_twenty_seconds_to_build():
    """Compile times (each family's plain build, measured where it first compiled): a
    guard against compile times that blow up, not a speed target (the machines are
    shared)."""
    for name in FAMILIES:
        if name not in BUILD_SECONDS:
            start = time.perf_counter()
            module_of(name)
            BUILD_SECONDS[name] = time.perf_counter() - start
    slow = {k: round(v, 2) for k, v in BUILD_SECONDS.items() if v > 20.0}
    assert not slow, slow


# ===================================================================== 4. user mistakes


def _declared():
    m = sg.Model("mistakes")
    z = m.input("z", ("B", 4))
    y = m.input("y", ("B", 5), dtype="int64")
    A, C = m.param("A", (3, 3)), m.param("C", (5, 5))
    return m, z, y, A, C


@pytest.mark.parametrize(
    "mistake, error, words",
    [
        (  # sparsemax's ranks as a NumPy constant
            lambda m, z, y, A, C: z * np.arange(1.0, 5.0),
            TypeError,
            "declare array data with m.input(name, shape)",
        ),
        (  # the soft sort's output named as Python's builtin
            lambda m, z, y, A, C: m.output("sorted", sg.sort(z, axis=1)),
            sg.ModelError,
            "would shadow a name the generated module uses",
        ),
        (  # SIR counts declared as int64 and then computed with
            lambda m, z, y, A, C: sg.lgamma(y + 1.0),
            sg.ModelError,
            "declare it with dtype='float64' instead",
        ),
        (  # prototypes summed over float labels
            lambda m, z, y, A, C: sg.segment_sum(z, z[:, 0], 3),
            sg.ShapeError,
            "must be an int64 input",
        ),
        (  # a FEM load vector one node too long
            lambda m, z, y, A, C: sg.solve(C, z[0]),
            sg.ShapeError,
            "C of shape (5, 5) does not match",
        ),
        (  # a float mask in a hierarchical softmax
            lambda m, z, y, A, C: sg.where(z, z, 0.0),
            TypeError,
            "needs a comparison of expressions (x > 0) or a bool input",
        ),
        (  # PixelCNN++'s clamp
            lambda m, z, y, A, C: z.clamp(min=-7.0),
            AttributeError,
            "x.clip(a_min, a_max)",
        ),
        (  # DEC's target.detach()
            lambda m, z, y, A, C: z.detach(),
            AttributeError,
            "sg.stop_gradient(x)",
        ),
        (  # a masked log-likelihood with -inf
            lambda m, z, y, A, C: sg.where(z > 0, z, -math.inf),
            sg.ModelError,
            "use a large finite value such as -1e30",
        ),
        (  # sparse GP's torch.logdet and torch.trace
            lambda m, z, y, A, C: sg.logdet(C),
            AttributeError,
            "sg.slogdet(x)[1]",
        ),
        (
            lambda m, z, y, A, C: C.trace(),
            AttributeError,
            "sg.einsum('ii', x)",
        ),
        (  # Viterbi's max over the previous tag with torch's keywords
            lambda m, z, y, A, C: sg.max(A, dim=0, keepdim=True),
            TypeError,
            "NumPy's axis=, not torch's dim=",
        ),
        (  # NeuralSort's torch.sort(descending=True)
            lambda m, z, y, A, C: sg.sort(z, axis=1, descending=True),
            TypeError,
            "-sg.sort(-x)",
        ),
    ],
)
def test_typical_mistakes_raise_errors_that_say_what_is_wrong(mistake, error, words):
    with pytest.raises(error, match=re.escape(words)):
        mistake(*_declared())


def test_pair_indexing_of_a_transition_matrix_names_take_along_axis():
    """A CRF / structured-SVM user scores the gold transitions as torch does,
    A[y[:, :-1], y[:, 1:]]; symgrad gathers with one index array only (refused at
    declaration, a ShapeError), and should name the spelling that works (the one
    structured_svm_viterbi uses)."""
    m, z, y, A, C = _declared()
    with pytest.raises(sg.ShapeError, match="take_along_axis"):
        A[y[:, :-1], y[:, 1:]]


# ------------------------------------------- 4b. refusals that do not name the fix

_NO_HINT = "symgrad/__init__.py __getattr__ and Expr.__getattr__ (symgrad/model.py) "
_NO_HINT += "hint only names in model.TORCH_SPELLINGS, which lacks "


@pytest.mark.parametrize(
    "mistake, fix",
    [
        pytest.param(
            lambda m, z, y, A, C: sg.logsigmoid(z),
            r"softplus",
            id="F.logsigmoid",
        ),
        pytest.param(
            lambda m, z, y, A, C: z.gather(1, y),
            r"take_along_axis",
            id="x.gather",
        ),
        pytest.param(
            lambda m, z, y, A, C: sg.one_hot(y[:, 0], 3),
            r"sg\.where",
            id="F.one_hot",
        ),
        pytest.param(
            lambda m, z, y, A, C: sg.cdist(z, z),
            r"sg\.norm",
            id="torch.cdist",
        ),
        pytest.param(
            lambda m, z, y, A, C: sg.diag(z[0]),
            r"sg\.eye|einsum",
            id="diag",
        ),
        pytest.param(
            lambda m, z, y, A, C: sg.softplus(z, beta=10.0),
            r"beta \* x|/ beta",
            id="F.softplus(beta=)",
        ),
    ],
)
def test_torch_spellings_in_these_families_name_the_fix(mistake, fix):
    with pytest.raises((AttributeError, TypeError), match=fix):
        mistake(*_declared())


@pytest.mark.parametrize(
    "spelling",
    [
        lambda x: sg.where((x >= 1) and (x < 2), x, 0.0),
        lambda x: sg.where(1 <= x < 2, x, 0.0),
    ],
    ids=["and", "chained"],
)
def test_a_segment_mask_written_with_and_names_the_ampersand(spelling):
    m = sg.Model("segment_mask")
    x = m.input("x", ("n",))
    with pytest.raises(TypeError) as info:
        spelling(x)
    assert "&" in str(info.value), str(info.value)


def test_a_comparison_as_an_output_names_the_fix():
    m, z, y, A, C = _declared()
    with pytest.raises(TypeError) as info:
        m.output("support", 1.0 + z > sg.cumsum(z, axis=1))
    assert "sg.where" in str(info.value) and " object at 0x" not in str(info.value)
