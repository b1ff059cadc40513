"""nn.RNNCell, nn.GRUCell, nn.LSTMCell: one time step, with torch's parameter
names, shapes, gate order (GRU: r, z, n; LSTM: i, f, g, o) and init, so that
state_dicts move between the two. Built from recorded ops: the tape
differentiates them as any other."""

import math

from .creation import default_generator
from .functional import linear
from .nn import Module, Parameter


class RNNCellBase(Module):
    """weight_ih (gates*H, I), weight_hh (gates*H, H), bias_ih and bias_hh
    (gates*H), all drawn from U(-1/sqrt(H), 1/sqrt(H)) as torch draws them."""

    _GATES = 1

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__()
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        bound = 1 / math.sqrt(hidden_size) if hidden_size > 0 else 0.0
        rows = self._GATES * hidden_size

        def uniform(*shape):  # astype(None) keeps float64, the tape's default
            draws = default_generator.uniform(-bound, bound, shape)
            return Parameter(draws.astype(dtype))

        self.weight_ih = uniform(rows, input_size)
        self.weight_hh = uniform(rows, hidden_size)
        self.bias_ih = uniform(rows) if bias else None
        self.bias_hh = uniform(rows) if bias else None

    def _parts(self, input, h):
        """(input's gate pre-activations, h's), each split into the gates."""
        gi = linear(input, self.weight_ih, self.bias_ih).chunk(self._GATES, -1)
        gh = linear(h, self.weight_hh, self.bias_hh).chunk(self._GATES, -1)
        return gi, gh

    def _zeros(self, input):
        shape = (*input.shape[:-1], self.hidden_size)
        return input.new_zeros(shape)

    def forward(self, input, hx=None):
        """One step; an unbatched (input_size,) input gives an unbatched state."""
        batched = input.ndim == 2
        if not batched:
            input = input.unsqueeze(0)
            hx = None if hx is None else self._map(hx, lambda t: t.unsqueeze(0))
        out = self._step(input, hx)
        return out if batched else self._map(out, lambda t: t.squeeze(0))

    @staticmethod
    def _map(state, fn):
        return tuple(map(fn, state)) if isinstance(state, tuple) else fn(state)

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if getattr(self, "nonlinearity", "tanh") != "tanh":
            s += f", nonlinearity={self.nonlinearity}"
        return s


class RNNCell(RNNCellBase):
    """h' = tanh (or relu)(x W_ih^T + b_ih + h W_hh^T + b_hh)."""

    def __init__(
        self,
        input_size,
        hidden_size,
        bias=True,
        nonlinearity="tanh",
        device=None,
        dtype=None,
    ):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity: {nonlinearity}")
        super().__init__(input_size, hidden_size, bias, dtype=dtype)
        self.nonlinearity = nonlinearity

    def _step(self, input, h):
        h = self._zeros(input) if h is None else h
        (gi,), (gh,) = self._parts(input, h)
        return (gi + gh).tanh() if self.nonlinearity == "tanh" else (gi + gh).relu()


class GRUCell(RNNCellBase):
    """r, z = sigmoid(...); n = tanh(x W_in^T + b_in + r (h W_hn^T + b_hn));
    h' = (1 - z) n + z h."""

    _GATES = 3

    def _step(self, input, h):
        h = self._zeros(input) if h is None else h
        (ir, iz, in_), (hr, hz, hn) = self._parts(input, h)
        r, z = (ir + hr).sigmoid(), (iz + hz).sigmoid()
        n = (in_ + r * hn).tanh()
        return (1 - z) * n + z * h


class LSTMCell(RNNCellBase):
    """i, f, o = sigmoid(...), g = tanh(...); c' = f c + i g; h' = o tanh(c');
    returns (h', c')."""

    _GATES = 4

    def _step(self, input, hc):
        if hc is None:
            hc = (self._zeros(input), self._zeros(input))
        h, c = hc
        i, f, g, o = (a + b for a, b in zip(*self._parts(input, h), strict=True))
        c = f.sigmoid() * c + i.sigmoid() * g.tanh()
        return o.sigmoid() * c.tanh(), c
