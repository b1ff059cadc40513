"""Round 47 of new-user models: recent deep-learning papers' losses and layers,
written from the paper by a PyTorch user, with torch 2.13 CPU float64 autograd and
central finite differences as the judges (closed forms where they exist).

Families not covered before: conservative DPO (label-smoothed log-sigmoid of beta
times the difference of policy / reference log-ratios, token log-probs gathered by
sg.take_along_axis of a log_softmax under bool response masks; torch: gather,
F.logsigmoid); GRPO (group-normalised advantages by sg.std(ddof=1), the PPO-clipped
ratio by sg.minimum / sg.clip, the k3 KL estimator against a reference policy,
per-sequence token means); LoRA on one layer and DoRA on the next (W + s B A; the
magnitude times V / |V| per row with the norm under sg.stop_gradient as the DoRA paper
trains it; torch: .detach()); SigLIP's pairwise sigmoid loss with learned temperature
and bias over a symbolic batch (labels 2 sg.eye(N) - 1); the Differential Transformer's
attention (two causal softmax maps subtracted with the re-parameterised lambda, a
per-head RMS norm and (1 - lambda_init)); Performer FAVOR+ attention by positive random
features (projections as an input); RWKV-4's WKV recurrence in the numerically stable
form of its reference kernel (running max by sg.maximum, unrolled over T = 4), also
against the paper's naive formula; Soft MoE (softmaxes of one logit tensor over tokens
and over slots, l2-normalised tokens and a scaled normalised Phi, expert MLPs by
einsum); the EDM preconditioned denoiser loss (c_skip, c_out, c_in, c_noise and the
loss weight from per-sample sigma); MAE's normalised-pixel loss on masked patches
(patchify by reshape + einsum "nchpwq->nhwpqc", unbiased per-patch variance);
a tied-embedding LM head with Gemma-2's tanh logit soft-cap, label-smoothed cross
entropy with ignore_index = -100 (safe labels as an input, the mask by y != -100),
Poly-1 and PaLM's z-loss (torch: F.cross_entropy(ignore_index, label_smoothing)).
Also: all eleven Hessians and hvps against torch's, all eleven unrolled at the data's
sizes, edges first and second order and unrolled (saturated DPO margins and
5000-nat reference gaps, an empty response, chosen == rejected, GRPO's ratio exactly at
both clip edges (clip 0, W = 0), equal rewards (zero advantages), LoRA's B = 0 init,
SigLIP at a saturated temperature, RWKV keys of 1000, Soft MoE with identical tokens,
EDM sigma from 1e-4 to 80, a constant patch and all patches masked in MAE, logits
past the soft cap), sizes of one, closed forms (DPO at chosen == rejected is log 2
with zero gradient; GRPO with equal rewards is beta times the KL; LoRA's A gets zero
gradient at B = 0; RWKV's stable kernel is the paper's sum; Soft MoE with one token
returns the experts' mix of it), and porting spellings met on the way.

Found: (1) an unclear message: torch's in-place methods on an expression
(x.clamp_(0, 1), x.masked_fill_(m, v), x.mul_(2), W.fill_diagonal_(0)) are answered
"use x.clamp(...), sg.clamp(x, ...) or an operator", naming methods and functions
that do not exist (x.clamp is itself refused with "use x.clip"); the generic
trailing-underscore branch of Expr.__getattr__ (symgrad/model.py) strips the "_"
without checking the name, where it could reuse TORCH_SPELLINGS' hint of the
out-of-place name. (2) Messages that name no fix: y.ne(-100) / y.eq(k) and
x.new_zeros(n) are bare "'Expr' object has no attribute" errors; F.linear,
F.cosine_similarity and torch.randn_like say only "use sg's functions" (no recipe:
x @ W.T + b, the normalised dot product, noise as an input; F.glu, F.dropout and
torch.baddbmm say the same, not pinned); a torch tensor operand
(torch.tril(torch.ones(T, T)) * s) says "expected an sg expression or a real number,
got tensor(...)" where a NumPy array's message says to declare it with m.input. No wrong numbers found. All fixed
since (symgrad/model.py: the in-place branch looks the name up in TORCH_SPELLINGS and
names only methods and functions that exist; entries for eq/ne/lt/le/gt/ge, new_*,
fill_diagonal, copy, linear, cosine_similarity, the random draws, dropout, glu and
baddbmm; _number names any array-like's shape, and takes a 0-d tensor as a number).
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


# ===================================================================== 1. model families
# Each family: (hessian=False) -> (model, torch twin, params, inputs).


def _token_logp_sg(h, y, W, b):
    """Each position's log-probability of its token under softmax(h W^T + b)."""
    lp = sg.log_softmax(h @ W.T + b, axis=-1)
    return sg.take_along_axis(lp, y[..., None], axis=-1)[..., 0]


def _token_logp_torch(h, y, W, b):
    lp = torch.log_softmax(h @ W.T + b, dim=-1)
    return lp.gather(-1, y[..., None]).squeeze(-1)


DPO_BETA, DPO_EPS = 0.1, 0.1


def _dpo_reference(p, i):
    W, b = p["W"], p["b"]
    pc = (_token_logp_torch(i["hc"], i["yc"], W, b) * i["mc"]).sum(-1)
    pr = (_token_logp_torch(i["hr"], i["yr"], W, b) * i["mr"]).sum(-1)
    z = DPO_BETA * ((pc - i["refc"]) - (pr - i["refr"]))
    loss = -(1 - DPO_EPS) * F.logsigmoid(z) - DPO_EPS * F.logsigmoid(-z)
    return loss.mean(), {"margin": z}


@family
def dpo_conservative(hessian=False):
    """Conservative DPO (Mitchell's cDPO, label smoothing eps): token log-probs of a
    linear LM head gathered at the chosen and rejected responses' tokens, summed
    under bool response masks, the reference policy's sums as inputs; the margin
    z = beta ((pi_c - ref_c) - (pi_r - ref_r)) is an output. torch: gather,
    F.logsigmoid."""
    m = sg.Model("dpo_conservative", hessian=hessian)
    D, V = 3, 5
    hc, hr = m.input("hc", ("B", "T", D)), m.input("hr", ("B", "T", D))
    yc = m.input("yc", ("B", "T"), dtype="int64")
    yr = m.input("yr", ("B", "T"), dtype="int64")
    mc, mr = m.input("mc", ("B", "T"), dtype="bool"), m.input(
        "mr", ("B", "T"), dtype="bool"
    )
    refc, refr = m.input("refc", ("B",)), m.input("refr", ("B",))
    W, b = m.param("W", (V, D)), m.param("b", (V,))
    pc = sg.sum(sg.where(mc, _token_logp_sg(hc, yc, W, b), 0.0), axis=-1)
    pr = sg.sum(sg.where(mr, _token_logp_sg(hr, yr, W, b), 0.0), axis=-1)
    z = m.output("margin", DPO_BETA * ((pc - refc) - (pr - refr)))
    m.loss(sg.mean((1 - DPO_EPS) * sg.softplus(-z) + DPO_EPS * sg.softplus(z)))
    rng = np.random.default_rng(1)
    B, T = 2, 3
    mc_ = np.ones((B, T), bool)
    mc_[0, 2] = False
    mr_ = np.ones((B, T), bool)
    mr_[1, 1:] = False
    inputs = {
        "hc": normal(rng, B, T, D),
        "hr": normal(rng, B, T, D),
        "yc": rng.integers(0, V, (B, T)),
        "yr": rng.integers(0, V, (B, T)),
        "mc": mc_,
        "mr": mr_,
        "refc": normal(rng, B) - 5.0,
        "refr": normal(rng, B) - 5.0,
    }
    params = {"W": normal(rng, V, D), "b": normal(rng, V, scale=0.3)}
    return m, _dpo_reference, params, inputs


GRPO_BETA = 0.04


def _grpo_reference_for(clip):
    def reference(p, i):
        tok = _token_logp_torch(i["h"], i["y"], p["W"], p["b"])
        r = i["r"]
        A = ((r - r.mean()) / (r.std() + 1e-4))[:, None]
        ratio = torch.exp(tok - i["old"])
        surr = torch.min(ratio * A, torch.clamp(ratio, 1 - clip, 1 + clip) * A)
        d = i["ref"] - tok
        kl = torch.exp(d) - d - 1
        per = -(surr - GRPO_BETA * kl)
        mask = i["mask"].double()
        loss = ((per * mask).sum(-1) / mask.sum(-1)).mean()
        return loss, {"ratio": ratio}

    return reference


def _grpo_model(hessian, clip):
    m = sg.Model(f"grpo_clip_{int(round(100 * clip))}", hessian=hessian)
    D, V = 3, 4
    h = m.input("h", ("G", "T", D))
    y = m.input("y", ("G", "T"), dtype="int64")
    mask = m.input("mask", ("G", "T"), dtype="bool")
    r, old, ref = (
        m.input("r", ("G",)),
        m.input("old", ("G", "T")),
        m.input("ref", ("G", "T")),
    )
    W, b = m.param("W", (V, D)), m.param("b", (V,))
    tok = _token_logp_sg(h, y, W, b)
    A = ((r - sg.mean(r)) / (sg.std(r, ddof=1) + 1e-4))[:, None]
    ratio = m.output("ratio", sg.exp(tok - old))
    surr = sg.minimum(ratio * A, sg.clip(ratio, 1 - clip, 1 + clip) * A)
    d = ref - tok
    kl = sg.exp(d) - d - 1
    per = -(surr - GRPO_BETA * kl)
    maskf = sg.where(mask, 1.0, 0.0)
    m.loss(sg.mean(sg.sum(per * maskf, axis=-1) / sg.sum(maskf, axis=-1)))
    return m


def _grpo_data(seed=2):
    rng = np.random.default_rng(seed)
    G, T, D, V = 4, 3, 3, 4
    params = {"W": normal(rng, V, D), "b": normal(rng, V, scale=0.3)}
    inputs = {"h": normal(rng, G, T, D), "y": rng.integers(0, V, (G, T))}
    tok = _token_logp_torch(
        torch.tensor(inputs["h"]),
        torch.tensor(inputs["y"]),
        torch.tensor(params["W"]),
        torch.tensor(params["b"]),
    ).numpy()
    mask = np.ones((G, T), bool)
    mask[1, 2] = mask[3, 1:] = False
    inputs.update(
        mask=mask,
        r=np.array([1.0, 0.0, 0.5, 0.0]),
        # old policy within and beyond the clip range; the reference further off
        old=tok + normal(rng, G, T, scale=0.3),
        ref=tok + normal(rng, G, T, scale=0.5),
    )
    return params, inputs


@family
def grpo(hessian=False):
    """GRPO (DeepSeekMath): a group of G completions of one prompt, advantages
    (r - mean r) / (std r + 1e-4) with torch's unbiased std (sg.std(ddof=1)), the
    PPO-clipped surrogate min(ratio A, clip(ratio, 0.8, 1.2) A) of the token ratio to
    the old policy, the k3 estimator exp(d) - d - 1 of the KL to a reference policy,
    token means per sequence under a bool mask. torch: torch.min, clamp, r.std()."""
    params, inputs = _grpo_data()
    return _grpo_model(hessian, 0.2), _grpo_reference_for(0.2), params, inputs


LORA_SCALE = 2.0  # alpha / r = 4 / 2


def _lora_reference_for(detach):
    def reference(p, i):
        W0 = i["W0"] + LORA_SCALE * p["B0"] @ p["A0"]
        h = F.silu(F.linear(i["x"], W0, i["b0"]))
        V = i["W1"] + LORA_SCALE * p["B1"] @ p["A1"]
        norm = V.norm(dim=1, keepdim=True)
        Wd = p["mag"][:, None] * V / (norm.detach() if detach else norm)
        y = F.linear(h, Wd)
        return F.mse_loss(y, i["target"]), {"y": y}

    return reference


@family
def lora_dora(hessian=False, detach=True):
    """LoRA on the first layer (frozen W0 + (alpha / r) B0 A0, W0 an input) and DoRA on
    the second: mag * V / |V| per output row of V = W1 + s B1 A1, the norm under
    sg.stop_gradient as the DoRA paper trains it (torch: .detach()), SiLU between,
    MSE. torch: F.linear, Tensor.norm(dim=, keepdim=)."""
    m = sg.Model("lora_dora" if detach else "dora_full", hessian=hessian)
    x, t = m.input("x", ("B", 4)), m.input("target", ("B", 2))
    W0, b0, W1 = m.input("W0", (3, 4)), m.input("b0", (3,)), m.input("W1", (2, 3))
    A0, B0 = m.param("A0", (2, 4)), m.param("B0", (3, 2))
    A1, B1 = m.param("A1", (2, 3)), m.param("B1", (2, 2))
    mag = m.param("mag", (2,))
    h = sg.silu(x @ (W0 + LORA_SCALE * B0 @ A0).T + b0)
    V = W1 + LORA_SCALE * B1 @ A1
    norm = sg.norm(V, axis=1, keepdims=True)
    Wd = mag[:, None] * V / (sg.stop_gradient(norm) if detach else norm)
    y = m.output("y", h @ Wd.T)
    m.loss(sg.mean((y - t) ** 2))
    rng = np.random.default_rng(3)
    W1_ = normal(rng, 2, 3)
    inputs = {
        "x": normal(rng, 5, 4),
        "target": normal(rng, 5, 2),
        "W0": normal(rng, 3, 4, scale=0.5),
        "b0": normal(rng, 3, scale=0.1),
        "W1": W1_,
    }
    params = {
        "A0": normal(rng, 2, 4, scale=0.5),
        "B0": normal(rng, 3, 2, scale=0.3),
        "A1": normal(rng, 2, 3, scale=0.5),
        "B1": normal(rng, 2, 2, scale=0.3),
        "mag": np.linalg.norm(W1_, axis=1) * 1.1,
    }
    return m, _lora_reference_for(detach), params, inputs


def _siglip_reference(p, i):
    zi = F.normalize(i["img"] @ p["Wi"].T, dim=-1)
    zt = F.normalize(i["txt"] @ p["Wt"].T, dim=-1)
    logits = zi @ zt.T * p["t"].exp() + p["b"]
    n = logits.shape[0]
    labels = 2 * torch.eye(n, dtype=torch.float64) - 1
    return -F.logsigmoid(labels * logits).sum() / n, {"logits": logits}


@family
def siglip(hessian=False):
    """SigLIP's pairwise sigmoid loss: l2-normalised image and text projections,
    logits = zi zt^T exp(t') + b with a learned log-temperature and bias (initialised
    log 10 and -10 as in the paper), labels 2 I - 1 by sg.eye of the symbolic batch,
    -sum log sigmoid(labels logits) / N. torch: F.normalize, F.logsigmoid."""
    m = sg.Model("siglip", hessian=hessian)
    img, txt = m.input("img", ("N", 3)), m.input("txt", ("N", 4))
    Wi, Wt = m.param("Wi", (3, 3)), m.param("Wt", (3, 4))
    t, b = m.param("t", ()), m.param("b", ())
    u, v = img @ Wi.T, txt @ Wt.T
    zi = u / sg.norm(u, axis=-1, keepdims=True)
    zt = v / sg.norm(v, axis=-1, keepdims=True)
    logits = m.output("logits", zi @ zt.T * sg.exp(t) + b)
    labels = 2 * sg.eye(img.shape[0]) - 1
    m.loss(sg.sum(sg.softplus(-labels * logits)) / img.shape[0])
    rng = np.random.default_rng(4)
    params = {
        "Wi": normal(rng, 3, 3),
        "Wt": normal(rng, 3, 4),
        "t": np.array(math.log(10.0)),
        "b": np.array(-10.0),
    }
    img_ = normal(rng, 4, 3)
    txt_ = np.concatenate([img_, normal(rng, 4, 1)], axis=1) + normal(
        rng, 4, 4, scale=0.3
    )
    return m, _siglip_reference, params, {"img": img_, "txt": txt_}


DIFF_H, DIFF_D = 2, 2  # heads, half head dim
DIFF_LAMBDA_INIT = 0.8 - 0.6 * math.exp(-0.3 * 0)  # layer 1


def _diff_attn_reference(p, i):
    x = i["x"]
    B, T, _ = x.shape
    H, d = DIFF_H, DIFF_D
    q = (x @ p["Wq"].T).view(B, T, H, 2, d).permute(0, 2, 3, 1, 4)
    k = (x @ p["Wk"].T).view(B, T, H, 2, d).permute(0, 2, 3, 1, 4)
    v = (x @ p["Wv"].T).view(B, T, H, 2 * d).transpose(1, 2)
    s = q @ k.transpose(-2, -1) / math.sqrt(d)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    a = torch.softmax(s.masked_fill(~causal, -math.inf), dim=-1)
    lam = (
        torch.exp(torch.dot(p["lq1"], p["lk1"]))
        - torch.exp(torch.dot(p["lq2"], p["lk2"]))
        + DIFF_LAMBDA_INIT
    )
    o = (a[:, :, 0] - lam * a[:, :, 1]) @ v
    o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + 1e-5) * (1 - DIFF_LAMBDA_INIT)
    out = o.transpose(1, 2).reshape(B, T, H * 2 * d) @ p["Wo"].T
    return F.mse_loss(out, i["target"]), {"out": out}


@family
def diff_attention(hessian=False):
    """The Differential Transformer's attention: per head two query / key halves,
    (softmax(Q1 K1^T / sqrt d) - lambda softmax(Q2 K2^T / sqrt d)) V with lambda =
    exp(lq1 . lk1) - exp(lq2 . lk2) + lambda_init, causal (a bool input), a per-head
    RMS norm times (1 - lambda_init), an output projection. torch: view / permute,
    masked_fill(-inf), torch.rsqrt."""
    m = sg.Model("diff_attention", hessian=hessian)
    H, d, Dm = DIFF_H, DIFF_D, 4
    x, target = m.input("x", ("B", 3, Dm)), m.input("target", ("B", 3, Dm))
    causal = m.input("causal", (3, 3), dtype="bool")
    Wq, Wk = m.param("Wq", (2 * H * d, Dm)), m.param("Wk", (2 * H * d, Dm))
    Wv, Wo = m.param("Wv", (2 * H * d, Dm)), m.param("Wo", (Dm, 2 * H * d))
    lq1, lk1 = m.param("lq1", (d,)), m.param("lk1", (d,))
    lq2, lk2 = m.param("lq2", (d,)), m.param("lk2", (d,))
    B, T = x.shape[0], 3
    q = sg.transpose((x @ Wq.T).reshape(B, T, H, 2, d), (0, 2, 3, 1, 4))
    k = sg.transpose((x @ Wk.T).reshape(B, T, H, 2, d), (0, 2, 3, 1, 4))
    v = (x @ Wv.T).reshape(B, T, H, 2 * d).swapaxes(1, 2)
    s = q @ k.swapaxes(-2, -1) / math.sqrt(d)
    a = sg.softmax(sg.where(causal, s, -1e30), axis=-1)
    lam = sg.exp(sg.sum(lq1 * lk1)) - sg.exp(sg.sum(lq2 * lk2)) + DIFF_LAMBDA_INIT
    o = (a[:, :, 0] - lam * a[:, :, 1]) @ v
    o = (
        o
        / sg.sqrt(sg.mean(o * o, axis=-1, keepdims=True) + 1e-5)
        * (1 - DIFF_LAMBDA_INIT)
    )
    out = m.output("out", o.swapaxes(1, 2).reshape(B, T, H * 2 * d) @ Wo.T)
    m.loss(sg.mean((out - target) ** 2))
    rng = np.random.default_rng(5)
    params = {
        "Wq": normal(rng, 8, Dm, scale=0.5),
        "Wk": normal(rng, 8, Dm, scale=0.5),
        "Wv": normal(rng, 8, Dm, scale=0.5),
        "Wo": normal(rng, Dm, 8, scale=0.5),
        "lq1": normal(rng, d, scale=0.3),
        "lk1": normal(rng, d, scale=0.3),
        "lq2": normal(rng, d, scale=0.3),
        "lk2": normal(rng, d, scale=0.3),
    }
    inputs = {
        "x": normal(rng, 1, 3, Dm),
        "target": normal(rng, 1, 3, Dm),
        "causal": np.tril(np.ones((3, 3), bool)),
    }
    return m, _diff_attn_reference, params, inputs


def _favor_features_torch(u, omega):
    return torch.exp(u @ omega.T - (u**2).sum(-1, keepdim=True) / 2) / math.sqrt(
        omega.shape[0]
    )


def _performer_reference(p, i):
    d = p["Wq"].shape[0]
    q = i["x"] @ p["Wq"].T / d**0.25
    k = i["x"] @ p["Wk"].T / d**0.25
    v = i["x"] @ p["Wv"].T
    fq, fk = _favor_features_torch(q, i["omega"]), _favor_features_torch(k, i["omega"])
    num = fq @ (fk.transpose(-2, -1) @ v)
    den = fq @ fk.sum(-2)[..., None]
    out = num / den
    return F.mse_loss(out, i["target"]), {"out": out}


def _favor_features_sg(u, omega):
    M = omega.shape[0]
    return sg.exp(u @ omega.T - sg.sum(u**2, axis=-1, keepdims=True) / 2) / M**0.5


@family
def performer_favor(hessian=False):
    """Performer's FAVOR+ bidirectional attention: positive random features
    exp(w . u - |u|^2 / 2) / sqrt(M) of queries and keys scaled by d^-1/4 (the
    projections w an input, M symbolic), out = phi(Q) (phi(K)^T V) / phi(Q) phi(K)^T 1,
    MSE to a target."""
    m = sg.Model("performer_favor", hessian=hessian)
    x, target = m.input("x", ("B", "T", 3)), m.input("target", ("B", "T", 2))
    omega = m.input("omega", ("M", 2))
    Wq, Wk, Wv = m.param("Wq", (2, 3)), m.param("Wk", (2, 3)), m.param("Wv", (2, 3))
    q, k, v = x @ Wq.T / 2**0.25, x @ Wk.T / 2**0.25, x @ Wv.T
    fq, fk = _favor_features_sg(q, omega), _favor_features_sg(k, omega)
    num = fq @ (fk.swapaxes(-2, -1) @ v)
    den = fq @ sg.sum(fk, axis=-2)[..., None]
    out = m.output("out", num / den)
    m.loss(sg.mean((out - target) ** 2))
    rng = np.random.default_rng(6)
    params = {k_: normal(rng, 2, 3, scale=0.6) for k_ in ("Wq", "Wk", "Wv")}
    inputs = {
        "x": normal(rng, 1, 3, 3),
        "target": normal(rng, 1, 3, 2),
        "omega": normal(rng, 3, 2),
    }
    return m, _performer_reference, params, inputs


RWKV_T = 4


def _rwkv_reference(p, i):
    """RWKV-4's WKV in the stable form of its reference kernel (RWKV_in_150_lines)."""
    x = i["x"]
    k, v = x @ p["Wk"].T, x @ p["Wv"].T
    r = torch.sigmoid(x @ p["Wr"].T)
    w, u = -torch.exp(p["decay"]), p["first"]
    aa = torch.zeros_like(k[:, 0])
    bb = torch.zeros_like(k[:, 0])
    pp = torch.full_like(k[:, 0], -1e38)
    outs = []
    for t in range(RWKV_T):
        kt, vt = k[:, t], v[:, t]
        ww = u + kt
        q = torch.maximum(pp, ww)
        e1, e2 = torch.exp(pp - q), torch.exp(ww - q)
        outs.append((e1 * aa + e2 * vt) / (e1 * bb + e2))
        ww = w + pp
        q = torch.maximum(ww, kt)
        e1, e2 = torch.exp(ww - q), torch.exp(kt - q)
        aa, bb, pp = e1 * aa + e2 * vt, e1 * bb + e2, q
    out = r * torch.stack(outs, dim=1)
    return F.mse_loss(out, i["target"]), {"out": out}


def _rwkv_naive_torch(p, i):
    """The paper's formula: wkv_t = (sum_{j<t} e^{-(t-1-j) w + k_j} v_j + e^{u + k_t} v_t)
    / (the same without v), w = exp(decay)."""
    x = i["x"]
    k, v = x @ p["Wk"].T, x @ p["Wv"].T
    r = torch.sigmoid(x @ p["Wr"].T)
    w, u = torch.exp(p["decay"]), p["first"]
    outs = []
    for t in range(RWKV_T):
        num = torch.exp(u + k[:, t]) * v[:, t]
        den = torch.exp(u + k[:, t])
        for j in range(t):
            e = torch.exp(-(t - 1 - j) * w + k[:, j])
            num, den = num + e * v[:, j], den + e
        outs.append(num / den)
    out = r * torch.stack(outs, dim=1)
    return F.mse_loss(out, i["target"]), {"out": out}


@family
def rwkv4_wkv(hessian=False):
    """RWKV-4's time mixing: k, v, receptance r = sigmoid(x Wr^T), the WKV recurrence
    with per-channel decay w = -exp(decay) and bonus u, written as its reference
    kernel writes it (running exponent pp, sg.maximum, e1 / e2 rescaling), unrolled
    over T = 4 steps of a symbolic batch; out = r * wkv, MSE. torch: the same kernel
    (torch.maximum, full_like(-1e38))."""
    m = sg.Model("rwkv4_wkv", hessian=hessian)
    C = 2
    x, target = m.input("x", ("B", RWKV_T, C)), m.input("target", ("B", RWKV_T, C))
    Wk, Wv, Wr = m.param("Wk", (C, C)), m.param("Wv", (C, C)), m.param("Wr", (C, C))
    decay, first = m.param("decay", (C,)), m.param("first", (C,))
    k, v, r = x @ Wk.T, x @ Wv.T, sg.sigmoid(x @ Wr.T)
    w, u = -sg.exp(decay), first
    aa = sg.zeros_like(k[:, 0])
    bb = sg.zeros_like(k[:, 0])
    pp = sg.full_like(k[:, 0], -1e38)
    outs = []
    for t in range(RWKV_T):
        kt, vt = k[:, t], v[:, t]
        ww = u + kt
        q = sg.maximum(pp, ww)
        e1, e2 = sg.exp(pp - q), sg.exp(ww - q)
        outs.append((e1 * aa + e2 * vt) / (e1 * bb + e2))
        ww = w + pp
        q = sg.maximum(ww, kt)
        e1, e2 = sg.exp(ww - q), sg.exp(kt - q)
        aa, bb, pp = e1 * aa + e2 * vt, e1 * bb + e2, q
    out = m.output("out", r * sg.stack(outs, axis=1))
    m.loss(sg.mean((out - target) ** 2))
    rng = np.random.default_rng(7)
    params = {
        "Wk": normal(rng, C, C),
        "Wv": normal(rng, C, C),
        "Wr": normal(rng, C, C),
        "decay": normal(rng, C, scale=0.5),
        "first": normal(rng, C, scale=0.5),
    }
    inputs = {"x": normal(rng, 2, RWKV_T, C), "target": normal(rng, 2, RWKV_T, C)}
    return m, _rwkv_reference, params, inputs


def _soft_moe_reference(p, i):
    x = i["x"]
    xn = F.normalize(x, dim=-1)
    phi = p["scale"] * F.normalize(p["Phi"], dim=0)
    logits = xn @ phi
    dispatch, combine = logits.softmax(dim=1), logits.softmax(dim=2)
    slots = torch.einsum("bns,bnd->bsd", dispatch, x)
    hid = F.gelu(torch.einsum("bed,edh->beh", slots, p["W1"]))
    ys = torch.einsum("beh,ehd->bed", hid, p["W2"])
    out = torch.einsum("bns,bsd->bnd", combine, ys)
    return F.mse_loss(out, i["target"]), {"out": out}


@family
def soft_moe(hessian=False):
    """Soft MoE (Puigcerver et al.): one logit tensor from l2-normalised tokens and a
    learned-scale normalised Phi, dispatch weights softmax over tokens, combine weights
    softmax over slots, one slot per expert, expert MLPs (exact GELU) by einsum, over a
    symbolic number of tokens n. torch: F.normalize, einsum, F.gelu."""
    m = sg.Model("soft_moe", hessian=hessian)
    D, E, H = 3, 2, 3
    x, target = m.input("x", ("B", "n", D)), m.input("target", ("B", "n", D))
    Phi, scale = m.param("Phi", (D, E)), m.param("scale", ())
    W1, W2 = m.param("W1", (E, D, H)), m.param("W2", (E, H, D))
    xn = x / sg.norm(x, axis=-1, keepdims=True)
    phi = scale * Phi / sg.norm(Phi, axis=0, keepdims=True)
    logits = xn @ phi
    dispatch, combine = sg.softmax(logits, axis=1), sg.softmax(logits, axis=2)
    slots = sg.einsum("bns,bnd->bsd", dispatch, x)
    hid = sg.gelu(sg.einsum("bed,edh->beh", slots, W1))
    ys = sg.einsum("beh,ehd->bed", hid, W2)
    out = m.output("out", sg.einsum("bns,bsd->bnd", combine, ys))
    m.loss(sg.mean((out - target) ** 2))
    rng = np.random.default_rng(8)
    params = {
        "Phi": normal(rng, D, E),
        "scale": np.array(2.0),
        "W1": normal(rng, E, D, H, scale=0.6),
        "W2": normal(rng, E, H, D, scale=0.6),
    }
    inputs = {"x": normal(rng, 2, 4, D), "target": normal(rng, 2, 4, D)}
    return m, _soft_moe_reference, params, inputs


EDM_SD = 0.5


def _edm_reference(p, i):
    sigma = i["sigma"]
    s2 = sigma**2 + EDM_SD**2
    c_skip, c_out = EDM_SD**2 / s2, sigma * EDM_SD / s2.sqrt()
    c_in, c_noise = 1 / s2.sqrt(), sigma.log() / 4
    x = i["x0"] + sigma[:, None] * i["noise"]
    inp = torch.cat([c_in[:, None] * x, c_noise[:, None]], dim=1)
    Fx = torch.tanh(inp @ p["W1"].T + p["b1"]) @ p["W2"].T + p["b2"]
    den = c_skip[:, None] * x + c_out[:, None] * Fx
    lam = s2 / (sigma * EDM_SD) ** 2
    return (lam * ((den - i["x0"]) ** 2).mean(1)).mean(), {"denoised": den}


@family
def edm_denoiser(hessian=False):
    """Karras et al.'s EDM training loss: the preconditioned denoiser c_skip x +
    c_out F(c_in x, c_noise) of x = x0 + sigma n (sigma per sample, an input),
    weighted by lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2, F a tanh MLP with
    c_noise = log(sigma) / 4 concatenated to its input. torch: torch.cat."""
    m = sg.Model("edm_denoiser", hessian=hessian)
    x0, noise = m.input("x0", ("B", 2)), m.input("noise", ("B", 2))
    sigma = m.input("sigma", ("B",))
    W1, b1 = m.param("W1", (4, 3)), m.param("b1", (4,))
    W2, b2 = m.param("W2", (2, 4)), m.param("b2", (2,))
    s2 = sigma**2 + EDM_SD**2
    c_skip, c_out = EDM_SD**2 / s2, sigma * EDM_SD / sg.sqrt(s2)
    c_in, c_noise = 1 / sg.sqrt(s2), sg.log(sigma) / 4
    x = x0 + sigma[:, None] * noise
    inp = sg.concatenate([c_in[:, None] * x, c_noise[:, None]], axis=1)
    Fx = sg.tanh(inp @ W1.T + b1) @ W2.T + b2
    den = m.output("denoised", c_skip[:, None] * x + c_out[:, None] * Fx)
    lam = s2 / (sigma * EDM_SD) ** 2
    m.loss(sg.mean(lam * sg.mean((den - x0) ** 2, axis=1)))
    rng = np.random.default_rng(9)
    params = {
        "W1": normal(rng, 4, 3),
        "b1": normal(rng, 4, scale=0.1),
        "W2": normal(rng, 2, 4, scale=0.5),
        "b2": normal(rng, 2, scale=0.1),
    }
    inputs = {
        "x0": normal(rng, 4, 2, scale=0.5),
        "noise": normal(rng, 4, 2),
        "sigma": np.exp(-1.2 + 1.2 * normal(rng, 4)),
    }
    return m, _edm_reference, params, inputs


def _mae_reference(p, i):
    imgs = i["imgs"]
    N, C, Hh, Ww = imgs.shape
    x = imgs.reshape(N, C, Hh // 2, 2, Ww // 2, 2)
    x = torch.einsum("nchpwq->nhwpqc", x).reshape(N, (Hh // 2) * (Ww // 2), 4 * C)
    mask = i["mask"].double()
    visible = x * (1 - mask)[..., None]
    enc = F.gelu(visible @ p["We"].T + p["be"])
    pred = (enc + enc.mean(1, keepdim=True)) @ p["Wd"].T + p["bd"]
    mean, var = x.mean(-1, keepdim=True), x.var(-1, keepdim=True)
    target = (x - mean) / (var + 1e-6) ** 0.5
    loss = ((pred - target) ** 2).mean(-1)
    return (loss * mask).sum() / mask.sum(), {"pred": pred}


@family
def mae_norm_pix(hessian=False):
    """MAE's loss with norm_pix_loss: 4x4 one-channel images patchified by reshape +
    einsum "nchpwq->nhwpqc" (the MAE code's), masked patches zeroed before a toy
    encoder (GELU, a token-mean context) and a linear decoder, the target each patch
    normalised by its mean and unbiased variance (+1e-6), the MSE only over masked
    patches (a bool input). torch: the MAE reference code's forward_loss."""
    m = sg.Model("mae_norm_pix", hessian=hessian)
    imgs = m.input("imgs", ("N", 1, 4, 4))
    mask = m.input("mask", ("N", 4), dtype="bool")
    We, be = m.param("We", (3, 4)), m.param("be", (3,))
    Wd, bd = m.param("Wd", (4, 3)), m.param("bd", (4,))
    N = imgs.shape[0]
    x = sg.einsum("nchpwq->nhwpqc", imgs.reshape(N, 1, 2, 2, 2, 2)).reshape(N, 4, 4)
    visible = sg.where(mask[..., None], 0.0, x)
    enc = sg.gelu(visible @ We.T + be)
    pred = m.output("pred", (enc + sg.mean(enc, axis=1, keepdims=True)) @ Wd.T + bd)
    mean = sg.mean(x, axis=-1, keepdims=True)
    var = sg.var(x, axis=-1, keepdims=True, ddof=1)
    target = (x - mean) / (var + 1e-6) ** 0.5
    per = sg.mean((pred - target) ** 2, axis=-1)
    maskf = sg.where(mask, 1.0, 0.0)
    m.loss(sg.sum(per * maskf) / sg.sum(maskf))
    rng = np.random.default_rng(10)
    mask_ = np.array([[True, False, True, True]])
    params = {
        "We": normal(rng, 3, 4, scale=0.5),
        "be": normal(rng, 3, scale=0.1),
        "Wd": normal(rng, 4, 3, scale=0.5),
        "bd": normal(rng, 4, scale=0.1),
    }
    return m, _mae_reference, params, {"imgs": normal(rng, 1, 1, 4, 4), "mask": mask_}


LM_CAP, LM_SMOOTH, LM_POLY, LM_Z = 30.0, 0.1, 1.0, 1e-4


def _lm_reference(p, i):
    E = p["E"]
    logits = LM_CAP * torch.tanh(i["h"] @ E.T / LM_CAP)
    y = i["y"]
    ce = F.cross_entropy(logits, y, ignore_index=-100, label_smoothing=LM_SMOOTH)
    valid = (y != -100).double()
    n = valid.sum()
    pt = torch.softmax(logits, -1).gather(-1, i["ysafe"][:, None])[:, 0]
    poly = (LM_POLY * (1 - pt) * valid).sum() / n
    z = (LM_Z * torch.logsumexp(logits, -1) ** 2 * valid).sum() / n
    return ce + poly + z, {"logits": logits}


@family
def lm_head_poly_z(hessian=False):
    """A tied-embedding LM head with Gemma-2's logit soft-cap 30 tanh(z / 30),
    label-smoothed (0.1) cross-entropy with ignore_index = -100 written as sg's
    message says (safe labels as a second int64 input, the mask y != -100), Poly-1's
    eps (1 - p_t) and PaLM's z-loss 1e-4 logsumexp^2, all means over the valid
    tokens. torch: F.cross_entropy(ignore_index=-100, label_smoothing=0.1)."""
    m = sg.Model("lm_head_poly_z", hessian=hessian)
    V, D = 5, 3
    h = m.input("h", ("N", D))
    y = m.input("y", ("N",), dtype="int64")
    ysafe = m.input("ysafe", ("N",), dtype="int64")
    E = m.param("E", (V, D))
    logits = m.output("logits", LM_CAP * sg.tanh(h @ E.T / LM_CAP))
    lp = sg.log_softmax(logits, axis=-1)
    nll = -sg.take_along_axis(lp, ysafe[:, None], axis=-1)[:, 0]
    smooth = -sg.mean(lp, axis=-1)
    pt = sg.exp(-nll)
    per = (1 - LM_SMOOTH) * nll + LM_SMOOTH * smooth + LM_POLY * (1 - pt)
    per = per + LM_Z * sg.logsumexp(logits, axis=-1) ** 2
    valid = y != -100
    n = sg.sum(sg.where(valid, 1.0, 0.0))
    m.loss(sg.sum(sg.where(valid, per, 0.0)) / n)
    rng = np.random.default_rng(11)
    y_ = np.array([2, -100, 0, 4, -100, 1])
    inputs = {
        "h": normal(rng, 6, D, scale=2.0),
        "y": y_,
        "ysafe": np.where(y_ < 0, 0, y_),
    }
    return m, _lm_reference, {"E": normal(rng, V, D)}, inputs


# ============================================================= 2. first and second order


STOPPED = {"lora_dora"}  # a stop_gradient: the gradient is not the loss's derivative


@pytest.mark.parametrize("name", sorted(set(FAMILIES) - STOPPED))
def test_family_agrees_with_pytorch_and_central_differences(name):
    FAMILIES.assert_agrees(name)


def test_dora_detached_norm_against_torch_and_the_full_gradient_by_differences():
    """DoRA as trained (the norm detached) against torch's .detach(); the full DoRA
    (the norm differentiated) against torch and central differences; the two
    gradients agree for the LoRA factors of the first layer, which the norm does not see, and not for the second layer's B1.
    """
    _, reference, params, inputs = lora_dora()
    detached = module_of("lora_dora")
    check(detached, reference, params, inputs)
    m_full, ref_full, _, _ = lora_dora(detach=False)
    full = compile_module(m_full)
    check(full, ref_full, params, inputs)
    assert_matches_central_differences(full, params, inputs)
    g_det = detached.value_and_grad(params, inputs)[1]
    g_full = full.value_and_grad(params, inputs)[1]
    for k in ("A0", "B0"):
        assert rel(g_det[k], g_full[k]) < 1e-12, k
    assert rel(g_det["B1"], g_full["B1"]) > 1e-3


@pytest.mark.parametrize("name", list(FAMILIES))
def test_hessian_and_hvp_agree_with_pytorch(name):
    FAMILIES.assert_second_order_agrees(name)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_unrolled_at_the_datas_sizes_agrees_with_pytorch(name):
    FAMILIES.assert_unrolled_agrees(name)


# ================================================================== 3. edges and sizes


def _params(**values):
    return lambda p, i: (
        {**p, **{k: np.asarray(v, float) for k, v in values.items()}},
        i,
    )


def _inputs(**changes):
    return lambda p, i: (p, {**i, **{k: f(i[k]) for k, f in changes.items()}})


def _scaled(key, factor):
    return lambda p, i: ({**p, key: p[key] * factor}, i)


def _row_false(row):
    def change(a):
        a = np.array(a)
        a[row] = False
        return a

    return change


def _constant_patch(a):
    a = np.array(a)
    a[0, 0, :2, :2] = 0.7  # patch 0 of image 0 (masked): zero variance
    return a


EDGES = {
    "dpo_logits_x20": ("dpo_conservative", _scaled("W", 20.0), True),
    "dpo_reference_gap_5000_nats": (
        "dpo_conservative",
        _inputs(refc=lambda a: a + np.array([5000.0, -5000.0])),
        True,
    ),
    "dpo_empty_chosen_response": ("dpo_conservative", _inputs(mc=_row_false(1)), True),
    "grpo_equal_rewards": ("grpo", _inputs(r=np.ones_like), True),
    "grpo_far_off_reference": ("grpo", _inputs(ref=lambda a: a + 30.0), True),
    "lora_B_zero_init": (
        "lora_dora",
        _params(B0=np.zeros((3, 2)), B1=np.zeros((2, 2))),
        True,
    ),
    "siglip_saturated_temperature": ("siglip", _params(t=10.0, b=0.0), False),
    "diff_attention_lambda_large": (
        "diff_attention",
        _params(lq1=[1.0, 1.0], lk1=[1.0, 0.5]),
        False,
    ),
    "rwkv_keys_of_1000": ("rwkv4_wkv", _inputs(x=lambda a: 400.0 * a), False),
    "rwkv_fast_decay": ("rwkv4_wkv", _params(decay=[5.0, -4.0]), False),
    "soft_moe_identical_tokens": (
        "soft_moe",
        _inputs(x=lambda a: np.broadcast_to(a[:, :1], a.shape).copy()),
        False,
    ),
    "edm_sigma_1e-4_to_80": (
        "edm_denoiser",
        _inputs(sigma=lambda a: np.array([1e-4, 2e-3, 5.0, 80.0])),
        False,
    ),
    "mae_constant_patch": ("mae_norm_pix", _inputs(imgs=_constant_patch), False),
    "mae_everything_masked": ("mae_norm_pix", _inputs(mask=np.ones_like), False),
    "lm_logits_past_the_soft_cap": ("lm_head_poly_z", _scaled("E", 300.0), False),
    "performer_large_features": ("performer_favor", _scaled("Wq", 3.0), False),
}


@pytest.mark.parametrize("case", list(EDGES))
def test_edges_first_and_second_order(case):
    """Each edge against torch, first order (both module paths) and second order; the
    cheap ones through the unrolled code too."""
    name, change, unrolled = EDGES[case]
    _, reference, params, inputs = FAMILIES[name]()
    params, inputs = change(params, inputs)
    check(module_of(name), reference, params, inputs)
    assert_second_order_agrees(
        module_of(name, hessian=True), reference, params, inputs, scaled=True
    )
    if unrolled:
        check_unrolled(module_of(name, unroll=True), reference, params, inputs)


def _first(n, *keys):
    return lambda p, i: (p, {**i, **{k: i[k][:n] for k in keys}})


SMALLER = {
    "dpo_one_pair_one_token": (
        "dpo_conservative",
        lambda p, i: (
            p,
            {
                k: v[:1, :1] if v.ndim == 3 or v.ndim == 2 else v[:1]
                for k, v in i.items()
            },
        ),
    ),
    "grpo_group_of_two_one_token": (
        "grpo",
        lambda p, i: (
            p,
            {k: v[:2, :1] if v.ndim >= 2 else v[:2] for k, v in i.items()},
        ),
    ),
    "lora_one_row": ("lora_dora", _first(1, "x", "target")),
    "siglip_batch_of_one": ("siglip", _first(1, "img", "txt")),
    "performer_one_feature_one_token": (
        "performer_favor",
        lambda p, i: (
            p,
            {"x": i["x"][:, :1], "target": i["target"][:, :1], "omega": i["omega"][:1]},
        ),
    ),
    "rwkv_batch_of_one": ("rwkv4_wkv", _first(1, "x", "target")),
    "soft_moe_one_token": (
        "soft_moe",
        lambda p, i: (p, {"x": i["x"][:, :1], "target": i["target"][:, :1]}),
    ),
    "edm_batch_of_one": ("edm_denoiser", _first(1, "x0", "noise", "sigma")),
    "lm_one_valid_token": ("lm_head_poly_z", _first(1, "h", "y", "ysafe")),
}


@pytest.mark.parametrize("case", list(SMALLER))
def test_sizes_of_one_first_and_second_order(case):
    """Sizes of 1 (a batch of one, one token, one random feature, one slot of data):
    the vectorized code, first and second order, against torch."""
    name, change = SMALLER[case]
    _, reference, params, inputs = FAMILIES[name]()
    params, inputs = change(params, inputs)
    check(module_of(name), reference, params, inputs)
    if name not in STOPPED:
        assert_matches_central_differences(module_of(name), params, inputs)
    assert_second_order_agrees(
        module_of(name, hessian=True), reference, params, inputs, scaled=True
    )


# ===================================================================== 4. closed forms


def test_dpo_with_chosen_equal_to_rejected_is_log_2_with_zero_gradient():
    """z = 0 for every pair: the loss is log 2 whatever eps, the margin 0 and the
    gradient 0 (the two log-prob sums cancel), up to round-off."""
    _, _, params, inputs = dpo_conservative()
    same = {
        **inputs,
        "hr": inputs["hc"],
        "yr": inputs["yc"],
        "mr": inputs["mc"],
        "refr": inputs["refc"],
    }
    module = module_of("dpo_conservative")
    loss, grads = module.value_and_grad(params, same)
    assert abs(loss - math.log(2.0)) < 1e-15
    # zero up to the reassociation of (pc - refc) - (pr - refr)
    assert np.max(np.abs(module.forward(params, same)[0]["margin"])) < 1e-15
    for g in grads.values():
        assert np.max(np.abs(g)) < 1e-14


def test_grpo_with_equal_rewards_is_beta_times_the_k3_kl():
    """Equal rewards: every advantage is 0 / (0 + 1e-4) = 0, so the loss is beta times
    the masked mean of exp(d) - d - 1 (NumPy's own), whatever the old policy."""
    _, _, params, inputs = grpo()
    inputs = {**inputs, "r": np.full(4, 0.3)}
    h, y, W, b = inputs["h"], inputs["y"], params["W"], params["b"]
    z = h @ W.T + b
    lp = z - z.max(-1, keepdims=True)
    lp = lp - np.log(np.exp(lp).sum(-1, keepdims=True))
    tok = np.take_along_axis(lp, y[..., None], -1)[..., 0]
    d = inputs["ref"] - tok
    kl = np.exp(d) - d - 1
    mask = inputs["mask"]
    expected = GRPO_BETA * np.mean((kl * mask).sum(-1) / mask.sum(-1))
    loss, _ = module_of("grpo").value_and_grad(params, inputs)
    assert abs(loss - expected) < 1e-13 * abs(expected)
    old_moved = {**inputs, "old": inputs["old"] + 3.0}
    assert module_of("grpo").value_and_grad(params, old_moved)[0] == loss


def test_grpo_ratio_exactly_at_both_clip_edges():
    """clip = 0 and a zero policy head: every token's log-prob is -log 4 exactly, the
    old policy's too, so ratio = 1 sits on both clip edges and the min is a tie.
    torch's clamp passes the gradient at its bounds and its min splits ties, so the
    surrogate's gradient is A's in full: symgrad must agree, first and second order
    and unrolled."""
    model = _grpo_model(False, 0.0)
    reference = _grpo_reference_for(0.0)
    params, inputs = _grpo_data()
    params = {"W": np.zeros_like(params["W"]), "b": np.zeros_like(params["b"])}
    inputs = {**inputs, "old": np.full((4, 3), -math.log(4.0))}
    module = compile_module(model)
    outputs, _ = module.forward(params, inputs)
    assert np.all(outputs["ratio"] == 1.0)
    check(module, reference, params, inputs)  # (a kink: no central differences)
    hmodel = _grpo_model(True, 0.0)
    assert_second_order_agrees(compile_module(hmodel), reference, params, inputs)


def test_lora_A_has_exactly_zero_gradient_at_the_B_zero_init():
    """LoRA's init (B = 0): dL/dA = s B^T (...) is exactly 0, dL/dB is not."""
    _, _, params, inputs = lora_dora()
    params = {**params, "B0": np.zeros((3, 2)), "B1": np.zeros((2, 2))}
    _, grads = module_of("lora_dora").value_and_grad(params, inputs)
    assert np.all(grads["A0"] == 0.0) and np.all(grads["A1"] == 0.0)
    assert np.max(np.abs(grads["B0"])) > 1e-3 and np.max(np.abs(grads["B1"])) > 1e-3


def test_rwkv_stable_kernel_is_the_papers_sum():
    """At moderate values the generated forward and gradient equal torch's naive
    formula from the paper (no running max), the WKV the reference kernel rescales."""
    _, _, params, inputs = rwkv4_wkv()
    check(module_of("rwkv4_wkv"), _rwkv_naive_torch, params, inputs)


def test_soft_moe_with_one_token_mixes_the_experts_outputs_of_it():
    """n = 1: dispatch softmaxes over one token are 1, so every slot is the token and
    the output is the combine-weighted sum of the experts' MLPs of it (NumPy)."""
    erf = np.vectorize(math.erf)  # (SciPy is not a test dependency)

    _, _, params, inputs = soft_moe()
    x = inputs["x"][:, :1]
    one = {"x": x, "target": inputs["target"][:, :1]}
    out = module_of("soft_moe").forward(params, one)[0]["out"]
    phi = params["scale"] * params["Phi"] / np.linalg.norm(params["Phi"], axis=0)
    logits = (x / np.linalg.norm(x, axis=-1, keepdims=True)) @ phi
    c = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    pre = np.einsum("bnd,edh->bneh", x, params["W1"])
    hid = 0.5 * pre * (1 + erf(pre / math.sqrt(2)))
    ys = np.einsum("bneh,ehd->bned", hid, params["W2"])
    assert rel(out, np.einsum("bne,bned->bnd", c, ys)) < 1e-13


# ======================================================== 5. porting mistakes, messages


def _porting_model():
    m = sg.Model("porting_round47")
    x = m.input("x", ("B", 4))
    y = m.input("y", ("B",), dtype="int64")
    W = m.param("W", (4, 4))
    return m, x, y, W


NAMED_FIXES = {
    "F.logsigmoid": (lambda x, y, W: F.logsigmoid(x), "-sg.softplus(-x)"),
    "sg.logsigmoid": (lambda x, y, W: sg.logsigmoid(x), "-sg.softplus(-x)"),
    "torch.clamp": (lambda x, y, W: torch.clamp(x, 0.8, 1.2), "x.clip"),
    "x.clamp": (lambda x, y, W: x.clamp(0.8, 1.2), "x.clip"),
    "x.chunk": (lambda x, y, W: x.chunk(2, dim=-1), "sg.split"),
    "sg.split(dim=)": (lambda x, y, W: sg.split(x, 2, dim=-1), "axis="),
    "x.gather": (lambda x, y, W: x.gather(-1, y[:, None]), "sg.take_along_axis"),
    "sg.std(unbiased=)": (lambda x, y, W: sg.std(x, axis=0, unbiased=True), "ddof=1"),
    "F.cross_entropy": (lambda x, y, W: F.cross_entropy(x, y), "ignore_index"),
    "F.normalize": (lambda x, y, W: F.normalize(x, dim=-1), "sg.norm"),
    "F.rms_norm": (lambda x, y, W: F.rms_norm(x, (4,)), "sg.mean(x * x"),
    "x.masked_fill": (lambda x, y, W: x.masked_fill(x > 0, 0.0), "sg.where"),
    "x.mT": (lambda x, y, W: W.mT, "swapaxes"),
    "torch.rsqrt": (lambda x, y, W: torch.rsqrt(x), "1 / sg.sqrt"),
    "x.detach": (lambda x, y, W: x.detach(), "sg.stop_gradient"),
    "sdpa": (lambda x, y, W: F.scaled_dot_product_attention(x, x, x), "sg.softmax"),
    "sg.softplus(beta=)": (lambda x, y, W: sg.softplus(x, beta=2.0), "beta * x"),
}


@pytest.mark.parametrize("case", list(NAMED_FIXES))
def test_porting_spellings_name_the_fix(case):
    _, x, y, W = _porting_model()
    fn, fix = NAMED_FIXES[case]
    with pytest.raises((TypeError, AttributeError, sg.ShapeError)) as info:
        fn(x, y, W)
    assert fix in str(info.value), str(info.value)


def test_where_on_int64_labels_names_the_safe_label_recipe():
    """torch's ignore_index port picks labels with where: refused, naming the recipe
    lm_head_poly_z follows."""
    _, x, y, W = _porting_model()
    with pytest.raises(sg.ModelError, match="y != -100"):
        sg.where(y >= 0, y, 0)


UNNAMED_FIXES = {
    "x.clamp_": (
        lambda x, y, W: x.clamp_(0.0, 1.0),
        "x.clip",
        "torch's in-place x.clamp_(0, 1) is answered 'use x.clamp(...), sg.clamp(x, ...) "
        "or an operator': neither exists (x.clamp is refused, naming x.clip); the "
        "trailing-underscore branch of Expr.__getattr__ (symgrad/model.py) strips '_' "
        "without looking the name up in TORCH_SPELLINGS",
    ),
    "x.masked_fill_": (
        lambda x, y, W: x.masked_fill_(x > 0, 0.0),
        "sg.where",
        "x.masked_fill_(mask, v) names x.masked_fill(...) and sg.masked_fill, which do "
        "not exist, not sg.where (Expr.__getattr__'s in-place branch, symgrad/model.py)",
    ),
    "W.fill_diagonal_": (
        lambda x, y, W: W.fill_diagonal_(0.0),
        "sg.eye",
        "W.fill_diagonal_(0) (SimCLR's masked diagonal) names x.fill_diagonal(...) and "
        "sg.fill_diagonal, which do not exist; the recipe is sg.where / sg.eye "
        "(Expr.__getattr__'s in-place branch, symgrad/model.py)",
    ),
    "y.ne": (
        lambda x, y, W: y.ne(-100),
        "!=",
        "torch's labels.ne(-100) (ignore_index masks) is a bare \"'Expr' object has no "
        "attribute 'ne'\" where x.not_equal names !=: no 'ne' / 'eq' / 'lt' ... in "
        "TORCH_SPELLINGS (symgrad/model.py)",
    ),
    "x.new_zeros": (
        lambda x, y, W: x.new_zeros(3),
        "zeros_like",
        "x.new_zeros(n) is a bare AttributeError: no TORCH_SPELLINGS entry "
        "(symgrad/model.py) for new_zeros / new_ones / new_full",
    ),
    "F.linear": (
        lambda x, y, W: F.linear(x, W),
        "W.T",
        'F.linear(x, W, b) (every LoRA port) says only "use sg\'s functions": no '
        "recipe x @ W.T + b in TORCH_SPELLINGS (symgrad/model.py)",
    ),
    "F.cosine_similarity": (
        lambda x, y, W: F.cosine_similarity(x, x, dim=-1),
        "sg.norm",
        'F.cosine_similarity says only "use sg\'s functions" where F.normalize names '
        "the sg.norm recipe (TORCH_SPELLINGS, symgrad/model.py)",
    ),
    "torch.randn_like": (
        lambda x, y, W: torch.randn_like(x),
        "input",
        'torch.randn_like(x) (EDM / flow-matching noise) says "use sg\'s functions": '
        "it could say noise is data, drawn in NumPy and passed as an m.input",
    ),
    "torch tensor operand": (
        lambda x, y, W: torch.tril(torch.ones(4, 4, dtype=torch.float64)) * W,
        "m.input",
        "a torch tensor operand (a causal mask torch.tril(torch.ones(T, T)) * s) says "
        '"expected an sg expression or a real number, got tensor(...)" where a NumPy '
        "array's message says to declare it with m.input (symgrad/model.py, the "
        "operand check)",
    ),
}


@pytest.mark.parametrize("case", list(UNNAMED_FIXES))
def test_spellings_whose_message_named_no_fix(case):
    """Each was a strict xfail (its reason says what the message said and where)."""
    _, x, y, W = _porting_model()
    fn, fix, _ = UNNAMED_FIXES[case]
    with pytest.raises((TypeError, AttributeError, ValueError)) as info:
        fn(x, y, W)
    assert fix in str(info.value), str(info.value)
