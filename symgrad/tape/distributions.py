"""torch.distributions: Categorical, the distribution of the policy-gradient
tutorials, and Normal, that of Gaussian policies and VAEs; built from recorded ops
so that log_prob, entropy and rsample are differentiable."""

import math

import numpy as np

from .autograd import no_grad
from .creation import numpy_generator
from .shapes import Size
from .tensor import Tensor


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
