"""torch.nn.utils.parametrizations: weight_norm and spectral_norm as
parametrizations (nn_parametrize.py), with torch's originals, buffers and defaults."""

from . import functional as F
from .autograd import no_grad
from .linalg import vector_norm
from .nn import Module
from .nn_conv import ConvTranspose1d, ConvTranspose2d
from .nn_parametrize import register_parametrization


def _norm_except_dim(v, dim):
    """The 2-norm over every axis but `dim` (dim=None: of the whole), kept as axes
    of size 1 so that it broadcasts against v (torch.norm_except_dim)."""
    if dim is None or dim == -1:
        return vector_norm(v)
    axes = tuple(d for d in range(v.ndim) if d != dim)
    return vector_norm(v, dim=axes, keepdim=True)


class _WeightNorm(Module):
    """weight = g * v / ||v||: original0 is the magnitude g, original1 the direction v."""

    def __init__(self, dim=0):
        super().__init__()
        self.dim = -1 if dim is None else dim

    def forward(self, weight_g, weight_v):
        return weight_v * (weight_g / _norm_except_dim(weight_v, self.dim))

    def right_inverse(self, weight):
        return _norm_except_dim(weight, self.dim), weight


def weight_norm(module, name="weight", dim=0):
    """Reparametrize module.<name> by its magnitude and direction (Salimans &
    Kingma); dim is the axis kept by the magnitude (None: one magnitude)."""
    return register_parametrization(module, name, _WeightNorm(dim), unsafe=True)


class _SpectralNorm(Module):
    """weight / sigma, sigma its largest singular value estimated by power
    iteration on the buffers _u and _v: 15 iterations at creation, then
    n_power_iterations on each access in training mode (none in eval)."""

    def __init__(self, weight, n_power_iterations=1, dim=0, eps=1e-12):
        super().__init__()
        if n_power_iterations <= 0:
            raise ValueError(
                "Expected n_power_iterations to be positive, but got "
                f"n_power_iterations={n_power_iterations}"
            )
        self.dim = dim if dim >= 0 else dim + weight.ndim
        self.eps = eps
        if weight.ndim > 1:
            self.n_power_iterations = n_power_iterations
            matrix = self._reshape_weight_to_matrix(weight)
            h, w = matrix.shape
            u = matrix.new_empty(h).normal_(0, 1)
            v = matrix.new_empty(w).normal_(0, 1)
            self.register_buffer("_u", F.normalize(u, dim=0, eps=eps))
            self.register_buffer("_v", F.normalize(v, dim=0, eps=eps))
            self._power_method(matrix, 15)

    def _reshape_weight_to_matrix(self, weight):
        if self.dim != 0:
            rest = (d for d in range(weight.ndim) if d != self.dim)
            weight = weight.permute(self.dim, *rest)
        return weight.flatten(1)

    def _power_method(self, matrix, n_power_iterations):
        with no_grad():
            for _ in range(n_power_iterations):
                self._u.copy_(F.normalize(matrix @ self._v, dim=0, eps=self.eps))
                self._v.copy_(F.normalize(matrix.T @ self._u, dim=0, eps=self.eps))

    def forward(self, weight):
        if weight.ndim == 1:
            return F.normalize(weight, dim=0, eps=self.eps)
        matrix = self._reshape_weight_to_matrix(weight)
        if self.training:
            self._power_method(matrix, self.n_power_iterations)
        sigma = (self._u.clone() * (matrix @ self._v.clone())).sum()
        return weight / sigma

    def right_inverse(self, value):
        return value


def spectral_norm(module, name="weight", n_power_iterations=1, eps=1e-12, dim=None):
    """Divide module.<name> by its spectral norm (Miyato et al.); dim defaults to
    the output axis: 1 for the transposed convolutions, else 0."""
    weight = getattr(module, name)
    if dim is None:
        dim = 1 if isinstance(module, ConvTranspose1d | ConvTranspose2d) else 0
    parametrization = _SpectralNorm(weight, n_power_iterations, dim, eps)
    return register_parametrization(module, name, parametrization)
