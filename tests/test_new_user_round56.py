"""Round 56 of new-user models: audio and spectral users porting from PyTorch /
torchaudio-style code, with torch 2.13 CPU float64 autograd (torch.stft with
return_complex, .abs(), torch.angle, F.conv1d) and central finite differences as the
judges (closed forms where they exist).

Families not covered before (round 18 framed an STFT by sg.stack of slices, round 15
fitted a resonator biquad, round 44 an FIR against an rfft): spectrogram inversion
with the signal as the parameter, framed by sg.sliding_window_view with a hop
([..., ::hop, :]), Hann windowed, DFT by cos / sin matrices (inputs), power and
0.5 log(power + 1e-8) (torch: torch.stft(return_complex).abs() ** 2), also with frames
of one sample (n_fft = 1); the Parallel WaveGAN multi-resolution STFT loss (three
resolutions, spectral convergence by sg.norm, log-magnitude L1, magnitudes
sqrt(clamp(., 1e-7))); a learnable causal FIR equaliser (sg.pad + windows + einsum;
torch: F.conv1d) under log-mel L1 (an HTK mel filterbank matrix as torchaudio's
melscale_fbanks) and MFCC L2 (create_dct's orthonormal DCT-II); phase-aware losses
(sg.arctan2 phases, 1 - cos instantaneous phase, anti-wrapping |sin(d / 2)| of the
group delay and instantaneous frequency by sg.diff; torch: torch.angle); linear
prediction (an all-pole filter unrolled over 12 samples, normalised autocorrelations,
the covariance-method prediction error); SI-SDR and SDR with eps guards of a 3-tap
separation filter; the RBJ peaking-EQ biquad with learnable gain / f0 / Q unrolled;
A-weighted (a 4-tap FIR) framed RMS and loudness in dB, also with frames of one.
Checked: all nine against torch and central differences, five Hessians and hvps, three
unrolled; 27 edges (silent signals everywhere, a tone exactly on a bin, 1e6 and 1e-12
amplitudes, a perfect reconstruction, the DC bin on the arctan2 branch cut, s_hat = c s
exactly, a silent source, a flat 0 dB / a -60 dB / a high-Q near-Nyquist EQ, zero LPC
coefficients), six of them second order; closed forms (the Hann spectrum of a tone on
a bin is 1, 4, 1; a 0 dB peaking EQ is the identity; SI-SDR of an exact rescaling by
mpmath; one Newton step with the generated Hessian solves the LPC normal equations).

Found and fixed (were 4 strict xfails): the gradient of sg.abs(u) was nan at u = 0
whenever SymPy cannot prove u real (u = log S - log S_hat, log(p), sqrt(p) - 1):
symgrad/symbolic.py partial differentiated sp.Abs of a possibly complex argument, which
SymPy writes (re u re' u + im u im' u) / |u|, printed as (log(p / sign p) - log(q /
sign q)) sign(p)**2 sign(u) / (p u), 0/0 at u = 0, where torch gives abs'(0) = 0 (now
|u| and sign(u) are differentiated as real functions). The vocoder's log-magnitude L1
hit it at a perfect reconstruction and wherever both spectra are clamped to the same
floor (every bin of two quiet signals). Messages (10 cases): torch.stft, torch.istft,
torch.view_as_real and torch.angle said only "use sg's functions"; sg.stft, sg.angle,
sg.lfilter, x.angle(), x.real and sg.sliding_window_view(step=) were bare errors; now
they name the framing + DFT-matrix recipe, sg.arctan2(im, re), a Python loop, a slice
of the windows, as torch.fft.rfft, sg.rfft, F.conv1d, np.convolve, x.unfold, x.abs(),
torch.atan2 and sg.atan2 did (tested). Noted, not bugs: at a silent STFT torch's .abs() ** 2 twin has a zero
Hessian (the complex abs' sgn z has derivative 0 at 0) where the true one, symgrad's,
is ~2e8 (torch's view_as_real twin agrees with symgrad); at x_hat = x the phase losses
are 3.5e-17, not 0, since estimate and reference run through differently ordered
generated code, so |sin(d / 2)| takes a one-sided slope at its kink (torch: exactly
0); at empty bins (power 1e-32 against eps 1e-8) and at s_hat = c s round-off of the
FFT against the DFT matmuls is amplified by 1 / eps (agreement 1e-5 / 1e-6 there).
"""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
from helpers import (
    Families,
    assert_agrees_with_torch,
    assert_matches_central_differences,
    assert_second_order_agrees,
    check,
    compile_module,
    normal,
    rel,
    torch_hessian,
    torch_twin,
)

import symgrad as sg

torch = pytest.importorskip("torch")
F = torch.nn.functional

FAMILIES = Families()
family = FAMILIES.add
module_of = FAMILIES.module
EPS = 1e-8


# ============================================================ helpers (NumPy / torch)


def dft(n_fft):
    """cos / sin DFT matrices of the one-sided spectrum, (n_fft // 2 + 1, n_fft), with
    the exact zeros (DC and Nyquist sines) exactly 0, as a careful user builds them."""
    k = np.arange(n_fft // 2 + 1)[:, None]
    n = np.arange(n_fft)[None, :]
    angle = 2 * np.pi * ((k * n) % n_fft) / n_fft
    C, S = np.cos(angle), np.sin(angle)
    C[np.abs(C) < 1e-12] = 0.0
    S[np.abs(S) < 1e-12] = 0.0
    return C, S


def hann(n):
    """torch.hann_window(n) (periodic)."""
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)


def sg_stft(x, window, C, S, n_fft, hop):
    """(re, im), each (B, frames, bins): framing by sg.sliding_window_view with a
    hop, a window, then the DFT as two matmuls."""
    frames = sg.sliding_window_view(x, n_fft, axis=-1)[..., ::hop, :] * window
    return frames @ C.T, -(frames @ S.T)


def torch_stft(x, window, n_fft, hop):
    """torch.stft(center=False, return_complex=True), frames first: (B, frames, bins)."""
    spec = torch.stft(
        x, n_fft, hop_length=hop, window=window, center=False, return_complex=True
    )
    return spec.transpose(-1, -2)


def mel_filterbank(n_bins, n_mels, sr):
    """torchaudio.functional.melscale_fbanks(n_bins, 0, sr / 2, n_mels, sr, htk), as
    NumPy: (n_mels, n_bins) triangles on the HTK mel scale."""

    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    freqs = np.linspace(0, sr / 2, n_bins)
    pts = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sr / 2), n_mels + 2))
    diff = np.diff(pts)
    slopes = pts[None, :] - freqs[:, None]
    down = -slopes[:, :-2] / diff[:-1]
    up = slopes[:, 2:] / diff[1:]
    return np.maximum(0.0, np.minimum(down, up)).T


def dct_ortho(n_mfcc, n_mels):
    """torchaudio.functional.create_dct(n_mfcc, n_mels, 'ortho').T: (n_mfcc, n_mels)."""
    n = np.arange(n_mels)[None, :]
    k = np.arange(n_mfcc)[:, None]
    D = np.cos(np.pi / n_mels * (n + 0.5) * k) * math.sqrt(2.0 / n_mels)
    D[0] *= 1 / math.sqrt(2.0)
    return D


# ===================================================================== 1. model families
# Each family: (hessian=False) -> (model, torch twin, params, inputs).

STFT_T, STFT_N, STFT_HOP = 20, 8, 4


def _stft_reference(p, i, n_fft=STFT_N, hop=STFT_HOP):
    spec = torch_stft(p["x"], i["window"], n_fft, hop)
    power = spec.abs() ** 2
    logmag = 0.5 * torch.log(power + EPS)
    loss = ((logmag - i["target"]) ** 2).mean() + 1e-3 * (power**2).mean()
    return loss, {"power": power, "logmag": logmag}


def _stft_family(name, hessian, n_fft, hop, T):
    m = sg.Model(name, hessian=hessian)
    x = m.param("x", ("B", T))
    window = m.input("window", (n_fft,))
    bins = n_fft // 2 + 1
    C, S = m.input("C", (bins, n_fft)), m.input("S", (bins, n_fft))
    frames = (T - n_fft) // hop + 1
    target = m.input("target", ("B", frames, bins))
    re, im = sg_stft(x, window, C, S, n_fft, hop)
    power = m.output("power", re**2 + im**2)
    logmag = m.output("logmag", 0.5 * sg.log(power + EPS))
    m.loss(sg.mean((logmag - target) ** 2) + 1e-3 * sg.mean(power**2))
    rng = np.random.default_rng(0)
    C, S = dft(n_fft)
    inputs = {
        "window": hann(n_fft) if n_fft > 1 else np.ones(1),
        "C": C,
        "S": S,
        "target": normal(rng, 2, frames, bins, scale=0.5),
    }

    def reference(p, i):
        return _stft_reference(p, i, n_fft, hop)

    return m, reference, {"x": normal(rng, 2, T)}, inputs


@family
def stft_log_spectra(hessian=False):
    """Spectrogram inversion by gradient: the signal x (B, 20) itself is the
    parameter, framed by sg.sliding_window_view(x, 8)[..., ::4, :] (4 frames), Hann
    windowed, DFT by cos / sin matrices (inputs), power re^2 + im^2 and log-magnitude
    0.5 log(power + 1e-8) fitted to a target, plus a small power penalty. torch:
    torch.stft(center=False, return_complex=True).abs() ** 2."""
    return _stft_family("stft_log_spectra", hessian, STFT_N, STFT_HOP, STFT_T)


@family
def stft_frames_of_one(hessian=False):
    """The same with n_fft = 1, hop 1 (frames of one sample: the 'spectrum' is the
    sample; C = [[1]], S = [[0]]). torch: torch.stft(n_fft=1)."""
    return _stft_family("stft_frames_of_one", hessian, 1, 1, 6)


MR_T = 24
RESOLUTIONS = ((8, 2), (16, 4), (4, 1))


def _mag_sg(re, im):
    """ParallelWaveGAN's magnitude: sqrt(clamp(re^2 + im^2, min=1e-7))."""
    return sg.sqrt(sg.clip(re**2 + im**2, 1e-7, None))


def _mr_reference(p, i):
    loss, outs = 0.0, {}
    for n_fft, hop in RESOLUTIONS:
        w = i[f"window{n_fft}"]
        S_hat = torch.sqrt(
            torch.clamp(torch_stft(p["x_hat"], w, n_fft, hop).abs() ** 2, min=1e-7)
        )
        S = torch.sqrt(
            torch.clamp(torch_stft(i["x"], w, n_fft, hop).abs() ** 2, min=1e-7)
        )
        sc = torch.linalg.norm(S - S_hat) / torch.linalg.norm(S)
        mag = torch.mean(torch.abs(torch.log(S) - torch.log(S_hat)))
        outs[f"sc{n_fft}"], outs[f"mag{n_fft}"] = sc, mag
        loss = loss + (sc + mag) / len(RESOLUTIONS)
    return loss, outs


@family
def multires_stft_loss(hessian=False):
    """The multi-resolution STFT loss of Parallel WaveGAN / HiFi-GAN style vocoders:
    for (n_fft, hop) in (8, 2), (16, 4), (4, 1), spectral convergence ||S - S^||_F /
    ||S||_F (sg.norm of the whole array) plus the mean |log S - log S^|, magnitudes
    sqrt(clamp(re^2 + im^2, min=1e-7)), averaged over resolutions; the predicted
    waveform x_hat (B, 24) is the parameter. torch: torch.stft + .abs() + clamp +
    linalg.norm."""
    m = sg.Model("multires_stft_loss", hessian=hessian)
    x_hat = m.param("x_hat", ("B", MR_T))
    x = m.input("x", ("B", MR_T))
    loss = 0.0
    rng = np.random.default_rng(1)
    inputs = {"x": normal(rng, 2, MR_T)}
    for n_fft, hop in RESOLUTIONS:
        bins = n_fft // 2 + 1
        w = m.input(f"window{n_fft}", (n_fft,))
        C, S = m.input(f"C{n_fft}", (bins, n_fft)), m.input(f"S{n_fft}", (bins, n_fft))
        S_hat = _mag_sg(*sg_stft(x_hat, w, C, S, n_fft, hop))
        S_ref = _mag_sg(*sg_stft(x, w, C, S, n_fft, hop))
        sc = m.output(f"sc{n_fft}", sg.norm(S_ref - S_hat) / sg.norm(S_ref))
        mag = m.output(f"mag{n_fft}", sg.mean(sg.abs(sg.log(S_ref) - sg.log(S_hat))))
        loss = loss + (sc + mag) / len(RESOLUTIONS)
        inputs[f"window{n_fft}"] = hann(n_fft)
        inputs[f"C{n_fft}"], inputs[f"S{n_fft}"] = dft(n_fft)
    m.loss(loss)
    params = {"x_hat": inputs["x"] + normal(rng, 2, MR_T, scale=0.3)}
    return m, _mr_reference, params, inputs


MEL_T, MEL_N, MEL_HOP, N_MELS, N_MFCC, FIR_K = 28, 16, 4, 5, 4, 5


def _mel_reference(p, i):
    y = F.conv1d(F.pad(i["x"][:, None, :], (FIR_K - 1, 0)), p["h"].flip(0)[None, None])
    y = y[:, 0]
    power = torch_stft(y, i["window"], MEL_N, MEL_HOP).abs() ** 2
    logmel = torch.log(power @ i["mel"].T + 1e-6)
    mfcc = logmel @ i["dct"].T
    loss = torch.abs(logmel - i["logmel_t"]).mean()
    loss = loss + ((mfcc - i["mfcc_t"]) ** 2).mean()
    return loss, {"logmel": logmel, "mfcc": mfcc}


@family
def fir_eq_logmel_mfcc(hessian=False):
    """A learnable 5-tap causal FIR equaliser (sg.pad on the left, then
    sg.einsum('btk,k->bt') of sg.sliding_window_view, torch: F.conv1d of the flipped
    taps), then an STFT (16 / hop 4), a mel filterbank (5 HTK triangles, a matrix
    input as torchaudio's melscale_fbanks), log-mel with eps 1e-6 (L1 to a target)
    and MFCC by an orthonormal DCT-II matrix (create_dct, L2 to a target)."""
    m = sg.Model("fir_eq_logmel_mfcc", hessian=hessian)
    bins = MEL_N // 2 + 1
    frames = (MEL_T - MEL_N) // MEL_HOP + 1
    x = m.input("x", ("B", MEL_T))
    window = m.input("window", (MEL_N,))
    C, S = m.input("C", (bins, MEL_N)), m.input("S", (bins, MEL_N))
    mel = m.input("mel", (N_MELS, bins))
    dct = m.input("dct", (N_MFCC, N_MELS))
    logmel_t = m.input("logmel_t", ("B", frames, N_MELS))
    mfcc_t = m.input("mfcc_t", ("B", frames, N_MFCC))
    h = m.param("h", (FIR_K,))
    xp = sg.pad(x, ((0, 0), (FIR_K - 1, 0)))
    y = sg.einsum("btk,k->bt", sg.sliding_window_view(xp, FIR_K, axis=-1), h[::-1])
    re, im = sg_stft(y, window, C, S, MEL_N, MEL_HOP)
    logmel = m.output("logmel", sg.log((re**2 + im**2) @ mel.T + 1e-6))
    mfcc = m.output("mfcc", logmel @ dct.T)
    m.loss(sg.mean(sg.abs(logmel - logmel_t)) + sg.mean((mfcc - mfcc_t) ** 2))
    rng = np.random.default_rng(2)
    C, S = dft(MEL_N)
    inputs = {
        "x": normal(rng, 2, MEL_T),
        "window": hann(MEL_N),
        "C": C,
        "S": S,
        "mel": mel_filterbank(bins, N_MELS, 16000),
        "dct": dct_ortho(N_MFCC, N_MELS),
        "logmel_t": normal(rng, 2, frames, N_MELS),
        "mfcc_t": normal(rng, 2, frames, N_MFCC),
    }
    h = np.zeros(FIR_K)
    h[0] = 1.0
    return m, _mel_reference, {"h": h + normal(rng, FIR_K, scale=0.2)}, inputs


PH_T, PH_N, PH_HOP = 16, 8, 2


def _phase_reference(p, i):
    spec_hat = torch_stft(p["x_hat"], i["window"], PH_N, PH_HOP)
    spec = torch_stft(i["x"], i["window"], PH_N, PH_HOP)
    ph_hat, ph = torch.angle(spec_hat), torch.angle(spec)
    ip = torch.mean(1 - torch.cos(ph_hat - ph))
    gd = torch.mean(
        torch.abs(torch.sin((torch.diff(ph_hat, dim=-1) - torch.diff(ph, dim=-1)) / 2))
    )
    iaf = torch.mean(
        torch.abs(torch.sin((torch.diff(ph_hat, dim=-2) - torch.diff(ph, dim=-2)) / 2))
    )
    return ip + gd + iaf, {"ip": ip, "gd": gd, "iaf": iaf}


@family
def phase_losses(hessian=False):
    """Phase-aware losses of MP-SENet / APNet style: phases by sg.arctan2(im, re),
    the instantaneous-phase loss mean(1 - cos(phi^ - phi)), and the anti-wrapping
    |sin(d / 2)| of the group delay (sg.diff along frequency) and of the
    instantaneous frequency (sg.diff along time), so every term is 2 pi-periodic in
    the phases (either side of the branch cut gives the same loss). torch:
    torch.angle of torch.stft, torch.diff."""
    m = sg.Model("phase_losses", hessian=hessian)
    bins = PH_N // 2 + 1
    x_hat = m.param("x_hat", ("B", PH_T))
    x = m.input("x", ("B", PH_T))
    window = m.input("window", (PH_N,))
    C, S = m.input("C", (bins, PH_N)), m.input("S", (bins, PH_N))
    re_h, im_h = sg_stft(x_hat, window, C, S, PH_N, PH_HOP)
    re, im = sg_stft(x, window, C, S, PH_N, PH_HOP)
    ph_hat, ph = sg.arctan2(im_h, re_h), sg.arctan2(im, re)
    ip = m.output("ip", sg.mean(1 - sg.cos(ph_hat - ph)))
    d_gd = sg.diff(ph_hat, axis=-1) - sg.diff(ph, axis=-1)
    gd = m.output("gd", sg.mean(sg.abs(sg.sin(d_gd / 2))))
    d_iaf = sg.diff(ph_hat, axis=-2) - sg.diff(ph, axis=-2)
    iaf = m.output("iaf", sg.mean(sg.abs(sg.sin(d_iaf / 2))))
    m.loss(ip + gd + iaf)
    rng = np.random.default_rng(3)
    C, S = dft(PH_N)
    inputs = {"x": normal(rng, 2, PH_T), "window": hann(PH_N), "C": C, "S": S}
    params = {"x_hat": inputs["x"] + normal(rng, 2, PH_T, scale=0.5)}
    return m, _phase_reference, params, inputs


LPC_T, LPC_P = 12, 3


def _allpole_torch(a, gain, e):
    ys = []
    for t in range(e.shape[-1]):
        y = gain * e[..., t]
        for k in range(1, LPC_P + 1):
            if t - k >= 0:
                y = y - a[k - 1] * ys[t - k]
        ys.append(y)
    return torch.stack(ys, -1)


def _lpc_reference(p, i):
    s, e = i["s"], i["e"]
    y = _allpole_torch(p["a"], torch.exp(p["log_g"]), e)
    fit = ((y - s) ** 2).mean()
    r_y = torch.stack(
        [(y[..., : LPC_T - k] * y[..., k:]).sum(-1) for k in range(4)], -1
    )
    r_s = torch.stack(
        [(s[..., : LPC_T - k] * s[..., k:]).sum(-1) for k in range(4)], -1
    )
    nr_y = r_y / (r_y[..., :1] + 1e-9)
    nr_s = r_s / (r_s[..., :1] + 1e-9)
    ac = ((nr_y - nr_s) ** 2).sum()
    sp = s[..., LPC_P:].clone()
    res = sp + sum(p["a"][k - 1] * s[..., LPC_P - k : LPC_T - k] for k in range(1, 4))
    pred = (res**2).mean()
    return fit + ac + pred, {"y": y, "autocorr": r_y}


@family
def lpc_allpole(hessian=False):
    """Linear prediction, three ways at once: an all-pole filter 1 / A(z), A = 1 +
    a1 z^-1 + a2 z^-2 + a3 z^-3, unrolled over T = 12 samples from an excitation e
    with gain e^log_g, fitted to the signal s; the normalised autocorrelations r_k /
    (r_0 + 1e-9) (k = 0..3, by products of shifted slices) of its output matched to
    the signal's; and the forward prediction error s_t + sum a_k s_{t-k} (the
    covariance method: quadratic in a). torch: the same recursion, torch.stack."""
    m = sg.Model("lpc_allpole", hessian=hessian)
    s, e = m.input("s", ("B", LPC_T)), m.input("e", ("B", LPC_T))
    a, log_g = m.param("a", (LPC_P,)), m.param("log_g", ())
    gain = sg.exp(log_g)
    ys = []
    for t in range(LPC_T):
        y = gain * e[:, t]
        for k in range(1, LPC_P + 1):
            if t - k >= 0:
                y = y - a[k - 1] * ys[t - k]
        ys.append(y)
    y = m.output("y", sg.stack(ys, axis=-1))
    fit = sg.mean((y - s) ** 2)
    r_y = m.output(
        "autocorr",
        sg.stack([sg.sum(y[:, : LPC_T - k] * y[:, k:], axis=-1) for k in range(4)], -1),
    )
    r_s = sg.stack(
        [sg.sum(s[:, : LPC_T - k] * s[:, k:], axis=-1) for k in range(4)], -1
    )
    ac = sg.sum((r_y / (r_y[:, :1] + 1e-9) - r_s / (r_s[:, :1] + 1e-9)) ** 2)
    res = s[:, LPC_P:] + sum(
        a[k - 1] * s[:, LPC_P - k : LPC_T - k] for k in range(1, LPC_P + 1)
    )
    m.loss(fit + ac + sg.mean(res**2))
    rng = np.random.default_rng(4)
    e = normal(rng, 2, LPC_T)
    s = np.zeros((2, LPC_T))
    true_a = np.array([-0.9, 0.4, -0.1])
    for t in range(LPC_T):
        s[:, t] = 0.8 * e[:, t] - sum(
            true_a[k - 1] * s[:, t - k] for k in range(1, 4) if t - k >= 0
        )
    s += normal(rng, 2, LPC_T, scale=0.05)
    params = {"a": true_a + normal(rng, 3, scale=0.1), "log_g": np.array(-0.1)}
    return m, _lpc_reference, params, {"s": s, "e": e}


SDR_T, SDR_K = 16, 3


def _si_sdr_torch(s, s_hat):
    alpha = (s * s_hat).sum(-1, keepdim=True) / ((s * s).sum(-1, keepdim=True) + EPS)
    target = alpha * s
    noise = s_hat - target
    return 10 * torch.log10((target**2).sum(-1) / ((noise**2).sum(-1) + EPS) + EPS)


def _sdr_reference(p, i):
    s_hat = F.conv1d(
        F.pad(i["mix"][:, None], (SDR_K - 1, 0)), p["h"].flip(0)[None, None]
    )
    s_hat = s_hat[:, 0]
    si = _si_sdr_torch(i["s"], s_hat)
    sdr = 10 * torch.log10(
        (i["s"] ** 2).sum(-1) / (((i["s"] - s_hat) ** 2).sum(-1) + EPS) + EPS
    )
    return -si.mean() - 0.1 * sdr.mean(), {"si_sdr": si, "sdr": sdr, "s_hat": s_hat}


@family
def si_sdr_separation(hessian=False):
    """A source-separation loss: a learnable 3-tap causal FIR on the mixture gives
    s^ (sg.pad + sliding windows + einsum), scored by negative SI-SDR (alpha = <s, s^> /
    (||s||^2 + eps), target alpha s, noise s^ - alpha s, 10 log10(||target||^2 /
    (||noise||^2 + eps) + eps)) and 0.1 x the plain SDR. torch: F.conv1d, log10."""
    m = sg.Model("si_sdr_separation", hessian=hessian)
    mix, s = m.input("mix", ("B", SDR_T)), m.input("s", ("B", SDR_T))
    h = m.param("h", (SDR_K,))
    xp = sg.pad(mix, ((0, 0), (SDR_K - 1, 0)))
    s_hat = m.output(
        "s_hat",
        sg.einsum("btk,k->bt", sg.sliding_window_view(xp, SDR_K, axis=-1), h[::-1]),
    )
    alpha = sg.sum(s * s_hat, axis=-1, keepdims=True) / (
        sg.sum(s * s, axis=-1, keepdims=True) + EPS
    )
    target = alpha * s
    noise = s_hat - target
    si = m.output(
        "si_sdr",
        10
        * sg.log10(
            sg.sum(target**2, axis=-1) / (sg.sum(noise**2, axis=-1) + EPS) + EPS
        ),
    )
    sdr = m.output(
        "sdr",
        10
        * sg.log10(
            sg.sum(s**2, axis=-1) / (sg.sum((s - s_hat) ** 2, axis=-1) + EPS) + EPS
        ),
    )
    m.loss(-sg.mean(si) - 0.1 * sg.mean(sdr))
    rng = np.random.default_rng(5)
    s = normal(rng, 2, SDR_T)
    mix = s + normal(rng, 2, SDR_T, scale=0.5)
    return m, _sdr_reference, {"h": np.array([0.7, 0.1, -0.05])}, {"mix": mix, "s": s}


BQ_T, FS = 12, 8000.0


def _peaking_coeffs(gain_db, log_f0, log_q, lib):
    A = 10.0 ** (gain_db / 40.0)
    w0 = 2 * math.pi * lib.exp(log_f0) / FS
    alpha = lib.sin(w0) / (2 * lib.exp(log_q))
    cw = lib.cos(w0)
    a0 = 1 + alpha / A
    return (
        (1 + alpha * A) / a0,
        -2 * cw / a0,
        (1 - alpha * A) / a0,
        -2 * cw / a0,
        (1 - alpha / A) / a0,
    )


def _biquad_reference(p, i):
    b0, b1, b2, a1, a2 = _peaking_coeffs(p["gain_db"], p["log_f0"], p["log_q"], torch)
    x = i["x"]
    ys = []
    for t in range(BQ_T):
        y = b0 * x[:, t]
        if t >= 1:
            y = y + b1 * x[:, t - 1] - a1 * ys[t - 1]
        if t >= 2:
            y = y + b2 * x[:, t - 2] - a2 * ys[t - 2]
        ys.append(y)
    y = torch.stack(ys, 1)
    return ((y - i["target"]) ** 2).mean(), {"y": y}


@family
def biquad_peaking_eq(hessian=False):
    """A differentiable parametric EQ band: the RBJ cookbook peaking biquad
    (torchaudio.functional.equalizer_biquad) with learnable gain in dB, centre
    frequency e^log_f0 and Q = e^log_q (A = 10^(gain / 40), w0 = 2 pi f0 / fs,
    alpha = sin w0 / 2Q, all coefficients over a0), applied by the direct-form-I
    recursion unrolled over 12 samples, fitted to a target by MSE. torch: the same
    recursion (torchaudio's lfilter)."""
    m = sg.Model("biquad_peaking_eq", hessian=hessian)
    x, target = m.input("x", ("B", BQ_T)), m.input("target", ("B", BQ_T))
    gain_db, log_f0, log_q = (
        m.param("gain_db", ()),
        m.param("log_f0", ()),
        m.param("log_q", ()),
    )
    b0, b1, b2, a1, a2 = _peaking_coeffs(gain_db, log_f0, log_q, sg)
    ys = []
    for t in range(BQ_T):
        y = b0 * x[:, t]
        if t >= 1:
            y = y + b1 * x[:, t - 1] - a1 * ys[t - 1]
        if t >= 2:
            y = y + b2 * x[:, t - 2] - a2 * ys[t - 2]
        ys.append(y)
    y = m.output("y", sg.stack(ys, axis=1))
    m.loss(sg.mean((y - target) ** 2))
    rng = np.random.default_rng(6)
    params = {
        "gain_db": np.array(4.0),
        "log_f0": np.array(math.log(1000.0)),
        "log_q": np.array(0.2),
    }
    inputs = {"x": normal(rng, 2, BQ_T), "target": normal(rng, 2, BQ_T)}
    return m, _biquad_reference, params, inputs


LD_T, LD_FRAME, LD_HOP, AW_K = 24, 6, 3, 4
A_TAPS = np.array(
    [0.6, -0.8, 0.3, -0.1]
)  # a short high-pass standing in for A-weighting


def _loudness_reference(p, i, frame=LD_FRAME, hop=LD_HOP):
    xw = F.conv1d(F.pad(p["x"][:, None], (AW_K - 1, 0)), i["aw"].flip(0)[None, None])[
        :, 0
    ]
    fr = xw.unfold(-1, frame, hop)
    ms = (fr**2).mean(-1)
    rms = torch.sqrt(ms + EPS)
    loud = 10 * torch.log10(ms + EPS)
    loss = torch.abs(loud - i["loud_t"]).mean() + ((rms - i["rms_t"]) ** 2).mean()
    return loss, {"loudness": loud, "rms": rms}


def _loudness_family(name, hessian, frame, hop):
    m = sg.Model(name, hessian=hessian)
    frames = (LD_T - frame) // hop + 1
    x = m.param("x", ("B", LD_T))
    aw = m.input("aw", (AW_K,))
    loud_t, rms_t = m.input("loud_t", ("B", frames)), m.input("rms_t", ("B", frames))
    xp = sg.pad(x, ((0, 0), (AW_K - 1, 0)))
    xw = sg.einsum("btk,k->bt", sg.sliding_window_view(xp, AW_K, axis=-1), aw[::-1])
    fr = sg.sliding_window_view(xw, frame, axis=-1)[:, ::hop, :]
    ms = sg.mean(fr**2, axis=-1)
    rms = m.output("rms", sg.sqrt(ms + EPS))
    loud = m.output("loudness", 10 * sg.log10(ms + EPS))
    m.loss(sg.mean(sg.abs(loud - loud_t)) + sg.mean((rms - rms_t) ** 2))
    rng = np.random.default_rng(7)
    inputs = {
        "aw": A_TAPS,
        "loud_t": normal(rng, 2, frames, scale=3.0) - 6.0,
        "rms_t": np.abs(normal(rng, 2, frames)),
    }

    def reference(p, i):
        return _loudness_reference(p, i, frame, hop)

    return m, reference, {"x": normal(rng, 2, LD_T)}, inputs


@family
def loudness_envelope(hessian=False):
    """Loudness matching for a neural synth (DDSP style): the signal x is the
    parameter, weighted by a 4-tap FIR (A-weighting as a filter: sg.pad + windows +
    einsum), framed (6 / hop 3) by sliding windows, RMS sqrt(mean + 1e-8) and
    loudness 10 log10(mean square + 1e-8) dB, L1 in dB plus L2 in RMS. torch:
    F.conv1d, Tensor.unfold."""
    return _loudness_family("loudness_envelope", hessian, LD_FRAME, LD_HOP)


@family
def loudness_frames_of_one(hessian=False):
    """The same with frames of one sample (hop 1): the RMS is sqrt(x_w^2 + eps)."""
    return _loudness_family("loudness_frames_of_one", hessian, 1, 1)


# ============================================================= 2. first and second order


FD_TOL = {"multires_stft_loss": 1e-5}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_agrees_with_pytorch_and_central_differences(name):
    """Loss, outputs and gradients against torch; central differences (looser where
    an L1 term's kinks lie within the difference step of the point)."""
    _, reference, params, inputs = FAMILIES[name]()
    module = module_of(name)
    check(module, reference, params, inputs)
    assert_matches_central_differences(
        module, params, inputs, tol=FD_TOL.get(name, 1e-6)
    )


SECOND_ORDER = [
    "stft_log_spectra",
    "lpc_allpole",
    "si_sdr_separation",
    "biquad_peaking_eq",
    "phase_losses",
]


@pytest.mark.parametrize("name", SECOND_ORDER)
def test_hessian_and_hvp_agree_with_pytorch(name):
    FAMILIES.assert_second_order_agrees(name)


UNROLLED = ["biquad_peaking_eq", "lpc_allpole", "stft_frames_of_one"]


@pytest.mark.parametrize("name", UNROLLED)
def test_unrolled_at_the_datas_sizes_agrees_with_pytorch(name):
    FAMILIES.assert_unrolled_agrees(name)


# ======================================================================== 3. edges
# name -> (family, parameter overrides, input overrides: a function of the family's
# params and inputs).


def _tone(p, i):
    t = np.arange(STFT_T)
    return {
        "x": np.stack(
            [np.cos(2 * np.pi * 2 * t / STFT_N), np.sin(2 * np.pi * 3 * t / STFT_N)]
        )
    }


def _scale(key, c):
    return lambda p, i: {key: c * p[key]}


EDGES = {
    # all-zero signals: every log / sqrt guarded by its eps, every gradient finite
    "stft_silent": (
        "stft_log_spectra",
        lambda p, i: {"x": np.zeros_like(p["x"])},
        None,
    ),
    "stft_tone_on_a_bin": ("stft_log_spectra", _tone, None),
    "stft_loud_1e6": ("stft_log_spectra", _scale("x", 1e3), None),
    "stft_quiet_1e-12": ("stft_log_spectra", _scale("x", 1e-12), None),
    "stft_frames_of_one_silent": (
        "stft_frames_of_one",
        lambda p, i: {"x": np.zeros_like(p["x"])},
        None,
    ),
    "mr_perfect": ("multires_stft_loss", lambda p, i: {"x_hat": i["x"].copy()}, None),
    "mr_silent_prediction": (
        "multires_stft_loss",
        lambda p, i: {"x_hat": np.zeros_like(p["x_hat"])},
        None,
    ),
    "mr_loud_1e6": (
        "multires_stft_loss",
        _scale("x_hat", 1e6),
        lambda p, i: {**i, "x": 1e6 * i["x"]},
    ),
    "mr_quiet_1e-12": (
        "multires_stft_loss",
        _scale("x_hat", 1e-12),
        lambda p, i: {**i, "x": 1e-12 * i["x"]},
    ),
    "mel_silent_input": (
        "fir_eq_logmel_mfcc",
        None,
        lambda p, i: {**i, "x": np.zeros_like(i["x"])},
    ),
    "mel_zero_taps": ("fir_eq_logmel_mfcc", lambda p, i: {"h": np.zeros(FIR_K)}, None),
    "phase_perfect": ("phase_losses", lambda p, i: {"x_hat": i["x"].copy()}, None),
    "phase_silent_prediction": (
        "phase_losses",
        lambda p, i: {"x_hat": np.zeros_like(p["x_hat"])},
        None,
    ),
    # a negative offset puts the DC bin of every frame on the branch cut (im = 0,
    # re < 0): the phase is +-pi, the losses are 2 pi-periodic and the gradient of
    # arctan2 is continuous there
    "phase_dc_on_the_branch_cut": (
        "phase_losses",
        lambda p, i: {"x_hat": p["x_hat"] - 4.0},
        None,
    ),
    "lpc_silent": (
        "lpc_allpole",
        None,
        lambda p, i: {"s": np.zeros_like(i["s"]), "e": np.zeros_like(i["e"])},
    ),
    "lpc_zero_coefficients": ("lpc_allpole", lambda p, i: {"a": np.zeros(LPC_P)}, None),
    # s_hat = c s exactly: the noise is exactly 0, guarded by eps
    "si_sdr_exact_scale": (
        "si_sdr_separation",
        lambda p, i: {"h": np.array([0.7, 0.0, 0.0])},
        lambda p, i: {**i, "mix": i["s"].copy()},
    ),
    "si_sdr_silent_source": (
        "si_sdr_separation",
        None,
        lambda p, i: {**i, "s": np.zeros_like(i["s"])},
    ),
    "si_sdr_loud_1e6": (
        "si_sdr_separation",
        None,
        lambda p, i: {"mix": 1e6 * i["mix"], "s": 1e6 * i["s"]},
    ),
    "si_sdr_quiet_1e-12": (
        "si_sdr_separation",
        None,
        lambda p, i: {"mix": 1e-12 * i["mix"], "s": 1e-12 * i["s"]},
    ),
    "biquad_flat_0_db": (
        "biquad_peaking_eq",
        lambda p, i: {"gain_db": np.array(0.0)},
        None,
    ),
    "biquad_high_q_near_nyquist": (
        "biquad_peaking_eq",
        lambda p, i: {"log_q": np.array(4.0), "log_f0": np.array(math.log(3990.0))},
        None,
    ),
    "biquad_deep_cut": (
        "biquad_peaking_eq",
        lambda p, i: {"gain_db": np.array(-60.0)},
        None,
    ),
    "loudness_silent": (
        "loudness_envelope",
        lambda p, i: {"x": np.zeros_like(p["x"])},
        None,
    ),
    "loudness_loud_1e6": ("loudness_envelope", _scale("x", 1e6), None),
    "loudness_quiet_1e-12": ("loudness_envelope", _scale("x", 1e-12), None),
    "loudness_frames_of_one_silent": (
        "loudness_frames_of_one",
        lambda p, i: {"x": np.zeros_like(p["x"])},
        None,
    ),
}


def _edge(case):
    name, params_of, inputs_of = EDGES[case]
    _, reference, params, inputs = FAMILIES[name]()
    if params_of is not None:
        params = {**params, **params_of(params, inputs)}
    if inputs_of is not None:
        inputs = {**inputs, **inputs_of(params, inputs)}
    return name, reference, params, inputs


# at a silent point or an exact match an L1 / abs kink sits at the point; the tiny
# signals are below the difference step (it is relative to 1e-3 at least)
NO_DIFFERENCES = ("silent", "perfect", "exact", "quiet", "tone")
# where round-off of the FFT (torch) and of the DFT matmuls (here) is amplified by
# 1 / eps: bins exactly empty (~1e-32 power against eps 1e-8), an exactly zero noise
LOOSE = {"stft_tone_on_a_bin": 1e-5, "si_sdr_exact_scale": 1e-6}
ABS_BUG = {"mr_perfect", "mr_quiet_1e-12"}


@pytest.mark.parametrize("case", sorted(set(EDGES) - ABS_BUG - {"phase_perfect"}))
def test_edges_agree_with_pytorch_and_central_differences(case):
    name, reference, params, inputs = _edge(case)
    module = module_of(name)
    if case in LOOSE:
        assert_agrees_with_torch(module, reference, params, inputs, LOOSE[case], -1.5)
    else:
        check(module, reference, params, inputs)
    if not any(word in case for word in NO_DIFFERENCES):
        assert_matches_central_differences(module, params, inputs, tol=1e-5)


def test_phase_losses_at_a_perfect_reconstruction_are_zero_with_zero_gradient():
    """x_hat = x: every loss term is 0 up to round-off (torch: exactly 0, with a zero
    gradient). Noted, not a bug: the estimate and the reference go through
    differently ordered generated code, so their phase differences are +-1e-16, not
    0, and the anti-wrapping |sin(d / 2)| takes a one-sided slope at its kink where
    torch's exactly-zero difference takes abs'(0) = 0."""
    name, reference, params, inputs = _edge("phase_perfect")
    loss, grads = module_of(name).value_and_grad(params, inputs)
    expected_loss, _, expected = torch_twin(reference, params, inputs)
    assert abs(loss) <= 1e-15 and expected_loss == 0.0
    assert np.max(np.abs(expected["x_hat"])) == 0.0
    assert np.all(np.isfinite(grads["x_hat"]))


@pytest.mark.parametrize("case", sorted(ABS_BUG))
def test_multires_stft_loss_at_a_perfect_or_clamped_reconstruction(case):
    """x_hat = x (loss 0) and both signals 1e-12 (every magnitude clamped to
    sqrt(1e-7)): torch's gradient is exactly 0 (was a strict xfail: nan, see below)."""
    name, reference, params, inputs = _edge(case)
    check(module_of(name), reference, params, inputs)


def test_abs_of_log_difference_gradient_at_zero_minimal():
    """Was a strict xfail: SymPy differentiates |u| of a u it cannot prove real as
    (re u re' u + im u im' u) / |u|, 0/0 at u = 0 (symbolic.partial now
    differentiates a real |u| and sign(u))."""
    m = sg.Model("abs_log_ratio")
    p, q = m.param("p", (3,)), m.input("q", (3,))
    m.loss(sg.sum(sg.abs(sg.log(q) - sg.log(p))))
    module = compile_module(m)
    q = np.array([1.0, 2.0, 3.0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, grads = module.value_and_grad({"p": q.copy()}, {"q": q})
    assert np.array_equal(grads["p"], np.zeros(3))  # torch: 0 (abs'(0) = 0)


def test_abs_of_a_plain_difference_gradient_at_zero_is_zero():
    """The same L1 at equality without logs (SymPy knows p - q is real): 0, as torch."""
    m = sg.Model("abs_difference")
    p, q = m.param("p", (3,)), m.input("q", (3,))
    m.loss(sg.sum(sg.abs(q - p)))
    q = np.array([1.0, 2.0, 3.0])
    _, grads = compile_module(m).value_and_grad({"p": q.copy()}, {"q": q})
    assert np.array_equal(np.abs(grads["p"]), np.zeros(3))


SECOND_ORDER_EDGES = [
    "stft_tone_on_a_bin",
    "si_sdr_exact_scale",
    "biquad_flat_0_db",
    "lpc_silent",
    "phase_dc_on_the_branch_cut",
]


@pytest.mark.parametrize("case", SECOND_ORDER_EDGES)
def test_edges_second_order(case):
    name, reference, params, inputs = _edge(case)
    module = module_of(name, hessian=True)
    assert_second_order_agrees(module, reference, params, inputs, scaled=True)


def _stft_real_reference(p, i):
    """stft_log_spectra's twin in real arithmetic (view_as_real, re^2 + im^2)."""
    spec = torch.view_as_real(torch_stft(p["x"], i["window"], STFT_N, STFT_HOP))
    power = (spec**2).sum(-1)
    logmag = 0.5 * torch.log(power + EPS)
    loss = ((logmag - i["target"]) ** 2).mean() + 1e-3 * (power**2).mean()
    return loss, {"power": power, "logmag": logmag}


def test_silent_stft_hessian_against_the_real_arithmetic_twin():
    """At an all-zero signal the Hessian of log(power + eps) is 2 (C^T C + S^T S)
    terms / eps, ~2e8: symgrad's agrees with torch's view_as_real twin and with
    differences of its own gradient; torch's .abs() ** 2 twin gives a Hessian of 0
    there (the complex abs' is sgn z, whose derivative at z = 0 is taken as 0)."""
    name, reference, params, inputs = _edge("stft_silent")
    module = module_of(name, hessian=True)
    assert_second_order_agrees(
        module, _stft_real_reference, params, inputs, scaled=True
    )
    assert np.max(np.abs(torch_hessian(reference, params, inputs))) == 0.0
    H = module.hessian(params, inputs)
    assert np.max(np.abs(H)) > 1e8


# ==================================================================== 4. closed forms


def test_hann_tone_on_a_bin_has_the_closed_form_spectrum():
    """cos(2 pi 2 n / 8) under a periodic Hann window of 8, hop 4 (a whole number of
    periods per hop): |X[2]| = N / 4 = 2, |X[1]| = |X[3]| = N / 8 = 1, the rest 0."""
    module = module_of("stft_log_spectra")
    _, _, params, inputs = FAMILIES["stft_log_spectra"]()
    outputs, _ = module.forward(_tone(params, inputs), inputs)
    expected = np.array([0.0, 1.0, 4.0, 1.0, 0.0])
    assert np.max(np.abs(outputs["power"][0] - expected)) <= 1e-13


def test_flat_peaking_eq_is_the_identity():
    """At 0 dB the peaking biquad's numerator equals its denominator: y = x."""
    module = module_of("biquad_peaking_eq")
    _, _, params, inputs = FAMILIES["biquad_peaking_eq"]()
    outputs, _ = module.forward({**params, "gain_db": np.array(0.0)}, inputs)
    assert rel(outputs["y"], inputs["x"]) <= 1e-14


def test_si_sdr_of_an_exact_rescaling_has_the_closed_form():
    """s_hat = 0.7 s: alpha = 0.7 ||s||^2 / (||s||^2 + eps), noise (1 - alpha / 0.7)
    s_hat, SI-SDR 10 log10(alpha^2 ||s||^2 / (||noise||^2 + eps) + eps), by mpmath."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40
    _, _, params, inputs = _edge("si_sdr_exact_scale")
    outputs, _ = module_of("si_sdr_separation").forward(params, inputs)
    for row, s in enumerate(inputs["s"]):
        ss = mpmath.fsum(mpmath.mpf(v) ** 2 for v in s)
        alpha = mpmath.mpf(0.7) * ss / (ss + EPS)
        noise = (mpmath.mpf(0.7) - alpha) ** 2 * ss
        exact = 10 * mpmath.log10(alpha**2 * ss / (noise + EPS) + EPS)
        assert abs(outputs["si_sdr"][row] - float(exact)) <= 1e-10 * abs(exact)


def test_lpc_covariance_method_newton_step_solves_the_normal_equations():
    """The forward prediction error alone is quadratic in a: one Newton step with
    the generated Hessian from anywhere lands on NumPy's least squares."""
    m = sg.Model("lpc_covariance", hessian=True)
    s = m.input("s", ("B", LPC_T))
    a = m.param("a", (LPC_P,))
    res = s[:, LPC_P:] + sum(
        a[k - 1] * s[:, LPC_P - k : LPC_T - k] for k in range(1, 4)
    )
    m.loss(sg.sum(res**2))
    module = compile_module(m)
    _, _, _, inputs = FAMILIES["lpc_allpole"]()
    sv = inputs["s"]
    A = np.concatenate(
        [
            np.stack([sv[b, LPC_P - k : LPC_T - k] for k in (1, 2, 3)], -1)
            for b in range(2)
        ]
    )
    y = -np.concatenate([sv[b, LPC_P:] for b in range(2)])
    expected = np.linalg.lstsq(A, y, rcond=None)[0]
    a0 = {"a": np.array([3.0, -2.0, 1.0])}
    H = module.hessian(a0, {"s": sv})
    assert rel(H, 2 * A.T @ A) <= 1e-12
    _, g = module.value_and_grad(a0, {"s": sv})
    assert rel(a0["a"] - np.linalg.solve(H, g["a"]), expected) <= 1e-10


# ========================================================= 5. a new user's mistakes


def _signal():
    m = sg.Model("mistakes")
    return m, m.param("x", (2, 16))


CLEAR = {
    "torch.fft.rfft": (lambda x: torch.fft.rfft(x), TypeError, "re = y @ C.T"),
    "np.fft.rfft": (lambda x: np.fft.rfft(x), TypeError, "cos and sin matrices"),
    "sg.rfft": (lambda x: sg.rfft(x), AttributeError, "cos and sin matrices"),
    "F.conv1d": (lambda x: F.conv1d(x, x), TypeError, "sliding_window_view"),
    "np.convolve": (lambda x: np.convolve(x, x), TypeError, "sliding_window_view"),
    "x.unfold": (lambda x: x.unfold(-1, 8, 4), AttributeError, "::step"),
    "x.abs()": (lambda x: x.abs(), AttributeError, "sg.abs"),
    "torch.atan2": (lambda x: torch.atan2(x, x), TypeError, "sg.arctan2"),
    "sg.atan2": (lambda x: sg.atan2(x, x), AttributeError, "sg.arctan2"),
    "torch.log10": (lambda x: torch.log10(x), TypeError, "sg.log10"),
    "torch.clamp": (lambda x: torch.clamp(x, min=1e-7), TypeError, "clip"),
    "torch window": (
        lambda x: x * torch.hann_window(16, dtype=torch.float64),
        TypeError,
        "m.input",
    ),
    "sg.norm(p=)": (lambda x: sg.norm(x, p="fro"), TypeError, "ord="),
    "sg.diff(dim=)": (lambda x: sg.diff(x, dim=-1), TypeError, "axis="),
}

UNCLEAR = {
    # only "use sg's functions": no framing + DFT-matrix recipe (rfft has one)
    "torch.stft": (lambda x: torch.stft(x, 8), TypeError, "sliding_window_view"),
    "torch.istft": (lambda x: torch.istft(x, 8), TypeError, "sliding_window_view"),
    "torch.view_as_real": (lambda x: torch.view_as_real(x), TypeError, "re = "),
    "torch.angle": (lambda x: torch.angle(x), TypeError, "sg.arctan2"),
    # bare AttributeErrors, where sg.rfft, sg.conv1d and sg.atan2 give a hint
    "sg.stft": (lambda x: sg.stft(x), AttributeError, "sliding_window_view"),
    "sg.angle": (lambda x: sg.angle(x), AttributeError, "sg.arctan2"),
    "sg.lfilter": (lambda x: sg.lfilter(x), AttributeError, "Python loop"),
    "x.angle()": (lambda x: x.angle(), AttributeError, "sg.arctan2"),
    "x.real": (lambda x: x.real, AttributeError, "re = "),
    "sg.sliding_window_view(step=)": (
        lambda x: sg.sliding_window_view(x, 8, axis=-1, step=4),
        TypeError,
        "::",
    ),
}


@pytest.mark.parametrize("case", list(CLEAR))
def test_clear_messages_for_audio_porting_mistakes(case):
    _, x = _signal()
    fn, error, hint = CLEAR[case]
    with pytest.raises(error, match=re.escape(hint)):
        fn(x)


@pytest.mark.parametrize("case", list(UNCLEAR))
def test_unclear_messages_for_audio_porting_mistakes(case):
    """Were a strict xfail: 'use sg's functions' or bare errors."""
    _, x = _signal()
    fn, error, hint = UNCLEAR[case]
    with pytest.raises(error, match=re.escape(hint)):
        fn(x)
