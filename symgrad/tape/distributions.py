"""torch.distributions: Categorical, the distribution of the policy-gradient
tutorials, Normal, that of Gaussian policies and VAEs, Bernoulli (binary outcomes,
Bernoulli VAEs), MultivariateNormal (correlated Gaussians), and kl_divergence
between two of a kind; built from recorded ops so that log_prob, entropy, rsample
and the divergences are differentiable."""

import math

import numpy as np

from . import functional, linalg
from .autograd import no_grad
from .creation import bernoulli, numpy_generator
from .functions import broadcast_tensors, where
from .shapes import Size
from .tensor import Tensor


def _tensor(value):
    return (
        value if isinstance(value, Tensor) else Tensor._wrap(np.asarray(value, float))
    )


def _require(ok, name, value, dist, constraint):
    """torch's argument validation: a ValueError naming the parameter, the
    distribution and the constraint its values break."""
    if not bool(np.all(ok)):
        raise ValueError(
            f"Expected parameter {name} ({type(value).__name__} of shape "
            f"{tuple(value.shape)}) of distribution {dist} to satisfy the constraint "
            f"{constraint}, but found invalid values:\n{value}"
        )


class Categorical:
    """A distribution over 0 .. K-1 along the last dim, given `probs` (normalized
    here) or `logits` (unnormalized log-probabilities), as in torch."""

    def __init__(self, probs=None, logits=None, validate_args=None):
        if (probs is None) == (logits is None):
            raise ValueError(
                "Either `probs` or `logits` must be specified, but not both."
            )
        if probs is not None:
            self.probs = probs / probs.sum(-1, keepdim=True)
            eps = np.finfo(self.probs._data.dtype).eps
            self.logits = self.probs.clamp(
                eps, 1 - eps
            ).log()  # torch's probs_to_logits
        else:
            self.logits = logits - logits.logsumexp(-1, keepdim=True)
            self.probs = self.logits.softmax(-1)
        self.batch_shape = self.probs.shape[:-1]

    def log_prob(self, value):
        """log P(value), broadcast against the batch shape."""
        value = value.long().unsqueeze(-1)
        shape = np.broadcast_shapes(tuple(value.shape), tuple(self.logits.shape))
        index = value.expand(*shape[:-1], 1)
        return self.logits.expand(*shape).gather(-1, index).squeeze(-1)

    def entropy(self):
        """-sum(p log p) over the categories (a zero p adds nothing)."""
        eps = np.finfo(self.logits._data.dtype).min
        return -(self.logits.clamp(min=eps) * self.probs).sum(-1)

    def sample(self, sample_shape=()):
        """Draws from the tape's generator (so not torch's values), of shape
        sample_shape + batch_shape; not differentiable."""
        p = self.probs._data.reshape(-1, self.probs.shape[-1])
        n = int(np.prod(sample_shape))
        cumulative = np.cumsum(p, -1)
        u = numpy_generator().random((n, len(p), 1))
        draws = (u > cumulative).sum(-1).clip(max=p.shape[-1] - 1)
        return Tensor._wrap(draws.reshape(*sample_shape, *self.batch_shape))


class Normal:
    """N(loc, scale), the two broadcast together (numbers or tensors), as in torch."""

    def __init__(self, loc, scale, validate_args=None):
        loc, scale = (
            x if isinstance(x, Tensor) else Tensor._wrap(x) for x in (loc, scale)
        )
        shape = np.broadcast_shapes(tuple(loc.shape), tuple(scale.shape))
        self.loc, self.scale = loc.expand(*shape), scale.expand(*shape)
        self.batch_shape = Size(shape)
        if validate_args is not False and not (self.scale._data > 0).all():
            raise ValueError(
                f"Expected parameter scale ({type(scale).__name__} of shape "
                f"{self.scale.shape}) of distribution Normal(loc: {self.loc.shape}, "
                f"scale: {self.scale.shape}) to satisfy the constraint "
                f"GreaterThan(lower_bound=0.0), but found invalid values:\n{scale}"
            )

    @property
    def mean(self):
        return self.loc

    @property
    def stddev(self):
        return self.scale

    @property
    def variance(self):
        return self.scale.pow(2)

    def log_prob(self, value):
        var = self.scale**2
        return (
            -((value - self.loc) ** 2) / (2 * var)
            - self.scale.log()
            - math.log(math.sqrt(2 * math.pi))
        )

    def cdf(self, value):
        return 0.5 * (1 + ((value - self.loc) / self.scale / math.sqrt(2)).erf())

    def entropy(self):
        return 0.5 + 0.5 * math.log(2 * math.pi) + self.scale.log()

    def rsample(self, sample_shape=()):
        """loc + scale * eps, eps from the tape's generator (not torch's values):
        differentiable in loc and scale (the reparameterization trick)."""
        shape = (*sample_shape, *self.batch_shape)
        eps = Tensor._wrap(numpy_generator().standard_normal(shape))
        return self.loc + eps * self.scale

    def sample(self, sample_shape=()):
        with no_grad():
            return self.rsample(sample_shape)


class Bernoulli:
    """1 with probability `probs` (or sigmoid(`logits`)), else 0, as in torch; the
    log-probability and entropy are binary cross-entropies with logits, finite for
    every logit."""

    def __init__(self, probs=None, logits=None, validate_args=None):
        if (probs is None) == (logits is None):
            raise ValueError(
                "Either `probs` or `logits` must be specified, but not both."
            )
        self._given = "probs" if logits is None else "logits"
        if probs is not None:
            self.probs = _tensor(probs)
            p = self.probs._data
            if validate_args is not False:
                ok = (p >= 0) & (p <= 1)
                interval = "Interval(lower_bound=0.0, upper_bound=1.0)"
                _require(ok, "probs", self.probs, self, interval)
            eps = np.finfo(p.dtype).eps  # torch's probs_to_logits(is_binary=True)
            clamped = self.probs.clamp(eps, 1 - eps)
            self.logits = clamped.log() - (-clamped).log1p()
        else:
            self.logits = _tensor(logits)
            if validate_args is not False:
                ok = ~np.isnan(self.logits._data)
                _require(ok, "logits", self.logits, self, "Real()")
            self.probs = self.logits.sigmoid()
        self.batch_shape, self.event_shape = self.probs.shape, Size()

    def __repr__(self):
        return f"Bernoulli({self._given}: {getattr(self, self._given).shape})"

    @property
    def mean(self):
        return self.probs

    @property
    def variance(self):
        return self.probs * (1 - self.probs)

    def log_prob(self, value):
        """-BCE(logits, value): log p for 1, log(1 - p) for 0."""
        value = self.logits._lift(value)
        support = (value._data == 0) | (value._data == 1)
        if not support.all():
            raise ValueError(
                f"Expected value argument ({type(value).__name__} of shape "
                f"{tuple(value.shape)}) to be within the support (Boolean()) of the "
                f"distribution {self}, but found invalid values:\n{value}"
            )
        logits, value = broadcast_tensors(self.logits, value)
        bce = functional.binary_cross_entropy_with_logits
        return -bce(logits, value, reduction="none")

    def entropy(self):
        bce = functional.binary_cross_entropy_with_logits
        return bce(self.logits, self.probs, reduction="none")

    def sample(self, sample_shape=()):
        """Draws from the tape's generator (not torch's values)."""
        with no_grad():
            return bernoulli(self.probs.expand(*sample_shape, *self.batch_shape))


class MultivariateNormal:
    """N(loc, Sigma) over the last dim, Sigma given as covariance_matrix, its
    Cholesky factor scale_tril or its inverse precision_matrix (exactly one), as in
    torch; everything is computed from the factor L (Sigma = L L^T)."""

    def __init__(
        self,
        loc,
        covariance_matrix=None,
        precision_matrix=None,
        scale_tril=None,
        validate_args=None,
    ):
        given = {
            "covariance_matrix": covariance_matrix,
            "precision_matrix": precision_matrix,
            "scale_tril": scale_tril,
        }
        given = {k: v for k, v in given.items() if v is not None}
        if len(given) != 1:
            raise ValueError(
                "Exactly one of covariance_matrix or precision_matrix or scale_tril "
                "may be specified."
            )
        if loc.ndim < 1:
            raise ValueError("loc must be at least one-dimensional.")
        ((self._given, matrix),) = given.items()
        if matrix.ndim < 2:
            what = "scale_tril matrix" if scale_tril is not None else self._given
            raise ValueError(
                f"{what} must be at least two-dimensional, with optional leading "
                "batch dimensions"
            )
        batch = np.broadcast_shapes(tuple(matrix.shape[:-2]), tuple(loc.shape[:-1]))
        self._matrix_shape = Size((*batch, *matrix.shape[-2:]))
        self.batch_shape, self.event_shape = Size(batch), Size(loc.shape[-1:])
        self.loc = loc.expand(*batch, -1)
        if validate_args is not False:
            self._validate(matrix)
        if scale_tril is not None:
            self._unbroadcasted_scale_tril = scale_tril
        elif covariance_matrix is not None:
            self._unbroadcasted_scale_tril = linalg.cholesky(covariance_matrix)
        else:
            self._unbroadcasted_scale_tril = _precision_to_scale_tril(matrix)

    def _validate(self, matrix):
        a = matrix._data
        if self._given == "scale_tril":
            ok = (np.tril(a) == a).all() and (np.diagonal(a, 0, -2, -1) > 0).all()
            constraint = "LowerCholesky()"
        else:
            symmetric = np.allclose(a, np.swapaxes(a, -1, -2), rtol=1e-5, atol=1e-6)
            ok = symmetric and (np.linalg.eigvalsh(a) > 0).all()
            constraint = "PositiveDefinite()"
        _require(ok, self._given, matrix, self, constraint)

    def __repr__(self):
        return (
            f"MultivariateNormal(loc: {self.loc.shape}, {self._given}: "
            f"{self._matrix_shape})"
        )

    def _expanded(self, matrix):
        return matrix.expand(*self.batch_shape, *matrix.shape[-2:])

    @property
    def scale_tril(self):
        return self._expanded(self._unbroadcasted_scale_tril)

    @property
    def covariance_matrix(self):
        low = self._unbroadcasted_scale_tril
        return self._expanded(low @ low.mT)

    @property
    def precision_matrix(self):
        return self._expanded(linalg.inv(self.covariance_matrix))

    @property
    def mean(self):
        return self.loc

    @property
    def variance(self):
        variance = self._unbroadcasted_scale_tril.pow(2).sum(-1)
        return variance.expand(*self.batch_shape, *self.event_shape)

    def _half_log_det(self):
        return self._unbroadcasted_scale_tril.diagonal(0, -2, -1).log().sum(-1)

    def log_prob(self, value):
        if value.shape[-1:] != self.event_shape:
            raise ValueError(
                "The right-most size of value must match event_shape: "
                f"{value.shape} vs {self.event_shape}."
            )
        k = self.event_shape[0]
        m = _mahalanobis(self._unbroadcasted_scale_tril, value - self.loc)
        return -0.5 * (k * math.log(2 * math.pi) + m) - self._half_log_det()

    def entropy(self):
        k = self.event_shape[0]
        h = 0.5 * k * (1.0 + math.log(2 * math.pi)) + self._half_log_det()
        return h.expand(*self.batch_shape)

    def rsample(self, sample_shape=()):
        """loc + L eps, eps from the tape's generator (not torch's values):
        differentiable in loc and the matrix."""
        shape = (*sample_shape, *self.batch_shape, *self.event_shape)
        eps = Tensor._wrap(numpy_generator().standard_normal(shape))
        low = self._unbroadcasted_scale_tril
        return self.loc + (low @ eps.unsqueeze(-1)).squeeze(-1)

    def sample(self, sample_shape=()):
        with no_grad():
            return self.rsample(sample_shape)


def _mahalanobis(low, diff):
    """|L^-1 diff|^2 along the last dim: one triangular solve, batched."""
    batch = np.broadcast_shapes(tuple(low.shape[:-2]), tuple(diff.shape[:-1]))
    low = low.expand(*batch, *low.shape[-2:])
    diff = diff.expand(*batch, diff.shape[-1]).unsqueeze(-1)
    return linalg.solve_triangular(low, diff, upper=False).squeeze(-1).pow(2).sum(-1)


def _precision_to_scale_tril(precision):
    """torch's: the Cholesky factor of the inverse of P, from that of P flipped."""
    flipped = linalg.cholesky(precision.flip(-2, -1))
    inverse = flipped.flip(-2, -1).mT
    eye = Tensor._wrap(np.eye(precision.shape[-1], dtype=precision._data.dtype))
    return linalg.solve_triangular(inverse, eye, upper=False)


_KL = {}


def register_kl(type_p, type_q):
    """Decorator: fn(p, q) is the KL divergence of a type_p from a type_q."""

    def decorator(fn):
        _KL[type_p, type_q] = fn
        return fn

    return decorator


def kl_divergence(p, q):
    """KL(p || q), batched, by the rule registered for the most specific pair of
    the two distributions' types."""
    for type_p in type(p).__mro__:
        for type_q in type(q).__mro__:
            if (type_p, type_q) in _KL:
                return _KL[type_p, type_q](p, q)
    raise NotImplementedError(
        f"No KL(p || q) is implemented for {type(p).__name__} and "
        f"{type(q).__name__}"
    )


@register_kl(Normal, Normal)
def _kl_normal_normal(p, q):
    var_ratio = (p.scale / q.scale).pow(2)
    t1 = ((p.loc - q.loc) / q.scale).pow(2)
    return 0.5 * (var_ratio + t1 - 1 - var_ratio.log())


@register_kl(Categorical, Categorical)
def _kl_categorical_categorical(p, q):
    """sum p (log p - log q): inf where q is 0 and p is not, nothing where p is 0."""
    t = p.probs * (p.logits - q.logits)
    t = where(q.probs == 0, math.inf, t)
    return where(p.probs == 0, 0.0, t).sum(-1)


@register_kl(Bernoulli, Bernoulli)
def _kl_bernoulli_bernoulli(p, q):
    """The two outcomes' terms, each inf where q gives it no mass and p does, 0
    where p gives it none; softplus keeps the logs finite."""
    softplus = functional.softplus
    t1 = p.probs * (softplus(-q.logits) - softplus(-p.logits))
    t1 = where(p.probs == 0, 0.0, where(q.probs == 0, math.inf, t1))
    t2 = (1 - p.probs) * (softplus(q.logits) - softplus(p.logits))
    t2 = where(p.probs == 1, 0.0, where(q.probs == 1, math.inf, t2))
    return t1 + t2


@register_kl(MultivariateNormal, MultivariateNormal)
def _kl_mvn_mvn(p, q):
    """log(det Sq / det Sp)/2 + (tr(Sq^-1 Sp) + Mahalanobis(q, p.loc) - n)/2,
    the trace as |Lq^-1 Lp|_F^2."""
    if p.event_shape != q.event_shape:
        raise ValueError(
            "KL-divergence between two Multivariate Normals with different event "
            "shapes cannot be computed"
        )
    lp, lq = p._unbroadcasted_scale_tril, q._unbroadcasted_scale_tril
    n = p.event_shape[0]
    lp, lq = broadcast_tensors(lp, lq)
    term2 = linalg.solve_triangular(lq, lp, upper=False).pow(2).sum((-2, -1))
    term3 = _mahalanobis(q._unbroadcasted_scale_tril, q.loc - p.loc)
    return q._half_log_det() - p._half_log_det() + 0.5 * (term2 + term3 - n)
