"""torch.distributions: Categorical, the distribution of the policy-gradient
tutorials, built from recorded ops so that log_prob and entropy are
differentiable."""

import numpy as np

from .creation import default_generator
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
        u = default_generator.random((n, len(p), 1))
        draws = (u > cumulative).sum(-1).clip(max=p.shape[-1] - 1)
        return Tensor._wrap(draws.reshape(*sample_shape, *self.batch_shape))
