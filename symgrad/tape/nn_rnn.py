"""nn.RNNCell, nn.GRUCell, nn.LSTMCell (one time step) and nn.RNN, nn.GRU, nn.LSTM
(whole sequences, padded or packed, stacked layers, both directions), with torch's parameter names,
shapes, gate order (GRU: r, z, n; LSTM: i, f, g, o), init and errors, so that
state_dicts move between the two. Each kind's gate math is written once, in a mixin
its cell and its layer share. Built from recorded ops: the tape differentiates them
as any other."""

import math
import warnings

import numpy as np

from .creation import numpy_generator
from .functional import dropout, linear
from .functions import cat, stack
from .nn import Module, Parameter
from .nn_utils_rnn import PackedSequence


def _uniform(bound, dtype, *shape):
    """U(-bound, bound) from the tape's generator, as torch draws every recurrent
    weight; astype(None) keeps float64, the tape's default."""
    return Parameter(numpy_generator().uniform(-bound, bound, shape).astype(dtype))


def _map(state, fn):
    """fn on a state: h, or each of LSTM's (h, c)."""
    return tuple(map(fn, state)) if isinstance(state, tuple) else fn(state)


def _rows(state, start, stop):
    """Batch rows start:stop of a state."""
    return _map(state, lambda t: t[start:stop])


def _join(states):
    """States of consecutive batch rows as one state."""
    if isinstance(states[0], tuple):
        return tuple(cat(parts) for parts in zip(*states, strict=True))
    return cat(states)


def _hidden(state):
    """The h of a state (what the next step's weight_hh multiplies)."""
    return state[0] if isinstance(state, tuple) else state


class _Elman:
    """h' = tanh (or relu)(x W_ih^T + b_ih + h W_hh^T + b_hh)."""

    _GATES = 1

    def _update(self, gi, gh, h):
        """The new state from the input's and h's gate pre-activations."""
        return (gi + gh).tanh() if self.nonlinearity == "tanh" else (gi + gh).relu()


class _Gru:
    """r, z = sigmoid(...); n = tanh(x W_in^T + b_in + r (h W_hn^T + b_hn));
    h' = (1 - z) n + z h."""

    _GATES = 3

    def _update(self, gi, gh, h):
        (ir, iz, in_), (hr, hz, hn) = gi.chunk(3, -1), gh.chunk(3, -1)
        r, z = (ir + hr).sigmoid(), (iz + hz).sigmoid()
        n = (in_ + r * hn).tanh()
        return (1 - z) * n + z * h


class _Lstm:
    """i, f, o = sigmoid(...), g = tanh(...); c' = f c + i g; h' = o tanh(c');
    the state is (h, c)."""

    _GATES = 4

    def _update(self, gi, gh, hc):
        i, f, g, o = (gi + gh).chunk(4, -1)
        c = f.sigmoid() * hc[1] + i.sigmoid() * g.tanh()
        return o.sigmoid() * c.tanh(), c


class RNNCellBase(Module):
    """weight_ih (gates*H, I), weight_hh (gates*H, H), bias_ih and bias_hh
    (gates*H), all drawn from U(-1/sqrt(H), 1/sqrt(H)) as torch draws them."""

    _GATES = 1

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__()
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        bound = 1 / math.sqrt(hidden_size) if hidden_size > 0 else 0.0
        rows = self._GATES * hidden_size
        self.weight_ih = _uniform(bound, dtype, rows, input_size)
        self.weight_hh = _uniform(bound, dtype, rows, hidden_size)
        self.bias_ih = _uniform(bound, dtype, rows) if bias else None
        self.bias_hh = _uniform(bound, dtype, rows) if bias else None

    def _zeros(self, input):
        shape = (*input.shape[:-1], self.hidden_size)
        return input.new_zeros(shape)

    def _step(self, input, state):
        state = self._zeros(input) if state is None else state
        gi = linear(input, self.weight_ih, self.bias_ih)
        gh = linear(_hidden(state), self.weight_hh, self.bias_hh)
        return self._update(gi, gh, state)

    def forward(self, input, hx=None):
        """One step; an unbatched (input_size,) input gives an unbatched state."""
        batched = input.ndim == 2
        if not batched:
            input = input.unsqueeze(0)
            hx = None if hx is None else _map(hx, lambda t: t.unsqueeze(0))
        out = self._step(input, hx)
        return out if batched else _map(out, lambda t: t.squeeze(0))

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if getattr(self, "nonlinearity", "tanh") != "tanh":
            s += f", nonlinearity={self.nonlinearity}"
        return s


class RNNCell(_Elman, RNNCellBase):
    """One step of an Elman RNN (the math in _Elman)."""

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


class GRUCell(_Gru, RNNCellBase):
    """One GRU step (the math in _Gru)."""


class LSTMCell(_Lstm, RNNCellBase):
    """One LSTM step (the math in _Lstm); returns (h', c')."""

    def _zeros(self, input):
        h = super()._zeros(input)
        return h, h


class RNNBase(Module):
    """Stacked layers of a cell's gate math run over time, forward and (if
    bidirectional) backward, each layer's directions concatenated as the next one's
    input. Parameters registered in torch's order and names: for each layer k and
    direction, weight_ih_l{k}, weight_hh_l{k}, bias_ih_l{k}, bias_hh_l{k} (and LSTM's
    weight_hr_l{k} when proj_size > 0), with "_reverse" for the backward direction."""

    def __init__(
        self,
        mode,
        input_size,
        hidden_size,
        num_layers=1,
        bias=True,
        batch_first=False,
        dropout=0.0,
        bidirectional=False,
        proj_size=0,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.mode, self.input_size, self.hidden_size = mode, input_size, hidden_size
        self.num_layers, self.bias, self.batch_first = num_layers, bias, batch_first
        self.dropout, self.bidirectional = float(dropout), bidirectional
        self.proj_size = proj_size
        self._check_options(dropout)
        directions = ["", "_reverse"] if bidirectional else [""]
        rows, out_size = self._GATES * hidden_size, proj_size or hidden_size
        bound = 1 / math.sqrt(hidden_size)
        self._all_weights = []
        for layer in range(num_layers):
            for suffix in directions:
                shapes = {
                    "weight_ih": (
                        rows,
                        out_size * len(directions) if layer else input_size,
                    ),
                    "weight_hh": (rows, out_size),
                }
                if bias:
                    shapes.update(bias_ih=(rows,), bias_hh=(rows,))
                if proj_size:
                    shapes["weight_hr"] = (proj_size, hidden_size)
                names = [f"{kind}_l{layer}{suffix}" for kind in shapes]
                for name, shape in zip(names, shapes.values(), strict=True):
                    setattr(self, name, _uniform(bound, dtype, *shape))
                self._all_weights.append(names)

    def _check_options(self, dropout):
        """torch's constructor checks, in its order, with its messages."""
        if (
            not isinstance(dropout, int | float | np.number)
            or isinstance(dropout, bool)
            or not 0 <= dropout <= 1
        ):
            raise ValueError(
                "dropout should be a number in range [0, 1] representing the "
                "probability of an element being zeroed"
            )
        if dropout > 0 and self.num_layers == 1:
            warnings.warn(
                "dropout option adds dropout after all but last recurrent layer, so "
                "non-zero dropout expects num_layers greater than 1, but got "
                f"dropout={dropout} and num_layers={self.num_layers}",
                stacklevel=4,
            )
        for name in ("bias", "batch_first"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise TypeError(
                    f"{name} should be of type bool, got: {type(value).__name__}"
                )
        for name in ("input_size", "hidden_size"):
            value = getattr(self, name)
            if not isinstance(value, int):
                raise TypeError(
                    f"{name} should be of type int, got: {type(value).__name__}"
                )
            if value <= 0:
                raise ValueError(f"{name} must be greater than zero")
        if self.num_layers <= 0:
            raise ValueError("num_layers must be greater than zero")
        if self.proj_size < 0:
            raise ValueError(
                "proj_size should be a positive integer or zero to disable projections"
            )
        if self.proj_size >= self.hidden_size:
            raise ValueError("proj_size has to be smaller than hidden_size")

    @property
    def all_weights(self):
        """The parameters of each layer and direction, in registration order."""
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    def flatten_parameters(self):
        """torch packs the weights for cuDNN here; the tape has nothing to pack."""

    def forward(self, input, hx=None):
        """(output, h_n), LSTM's (output, (h_n, c_n)): output (seq, batch,
        directions * H) (batch first with batch_first), h_n (layers * directions,
        batch, H); an unbatched (seq, input_size) input drops the batch dims."""
        if isinstance(input, PackedSequence):
            return self._forward_packed(input, hx)
        if input.dim() not in (2, 3):
            raise ValueError(self._INPUT_DIMS.format(input.dim()))
        batched = input.dim() == 3
        if hx is not None:
            self._check_state_dims(hx, input.dim())
        batch_dim = 0 if self.batch_first else 1
        if not batched:
            input = input.unsqueeze(batch_dim)
            hx = None if hx is None else _map(hx, lambda t: t.unsqueeze(1))
        x = input.transpose(0, 1) if self.batch_first else input
        self._check_input(x)
        hx = self._zero_state(x, x.shape[1]) if hx is None else hx
        self._check_state_sizes(hx, x.shape[1])
        if x.shape[0] == 0:
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
        output, h_n = self._layers(x, hx)
        output = output.transpose(0, 1) if self.batch_first else output
        if not batched:
            output, h_n = output.squeeze(batch_dim), _map(h_n, lambda t: t.squeeze(1))
        return output, h_n

    def _forward_packed(self, packed, hx):
        """A PackedSequence in, one out (same batch_sizes and indices); each
        sequence runs over its own steps only, so h_n holds its state at its own
        last step (the first, for the backward direction). hx and h_n are in the
        input's order: torch sorts hx's batch by sorted_indices and unsorts h_n."""
        x, batch_sizes, order, unorder = packed
        if x.dim() != 2:
            raise RuntimeError(f"input must have 2 dimensions, got {x.dim()}")
        self._check_input(x)
        batch = int(batch_sizes[0])
        if hx is None:
            hx = self._zero_state(x, batch)
        elif order is not None:
            hx = _map(hx, lambda t: t.index_select(1, order))
        self._check_state_sizes(hx, batch)
        output, h_n = self._layers(x, hx, batch_sizes._data.tolist())
        if unorder is not None:
            h_n = _map(h_n, lambda t: t.index_select(1, unorder))
        return PackedSequence(output, batch_sizes, order, unorder), h_n

    def _check_state_dims(self, hx, ndim):
        parts = hx if isinstance(hx, tuple) else (hx,)
        if any(t.dim() != ndim for t in parts):
            got = ", ".join(f"{t.dim()}-D" for t in parts)
            which = "batched 3-D" if ndim == 3 else "unbatched 2-D"
            if isinstance(hx, tuple):
                tail = f"hx and cx should also be {ndim}-D but got ({got}) tensors"
            else:
                tail = f"hx should also be {ndim}-D but got {got} tensor"
            raise RuntimeError(f"For {which} input, {tail}")

    def _check_input(self, x):
        weight = self.weight_ih_l0
        if x.dtype != weight.dtype:
            raise ValueError(
                f"RNN input dtype ({x.dtype}) does not match weight dtype "
                f"({weight.dtype}). Convert input: input.to({weight.dtype}), or "
                f"convert model: model.to({x.dtype})"
            )
        if x.shape[-1] != self.input_size:
            raise RuntimeError(
                "input.size(-1) must be equal to input_size. Expected "
                f"{self.input_size}, got {x.shape[-1]}"
            )

    def _zero_state(self, x, batch):
        layers = self.num_layers * (2 if self.bidirectional else 1)
        return x.new_zeros(layers, batch, self.proj_size or self.hidden_size)

    def _check_state_sizes(self, hx, batch):
        layers = self.num_layers * (2 if self.bidirectional else 1)
        sizes = [self.proj_size or self.hidden_size, self.hidden_size]
        parts = hx if isinstance(hx, tuple) else (hx,)
        labels = ["hidden[0]", "hidden[1]"] if isinstance(hx, tuple) else ["hidden"]
        for label, t, size in zip(labels, parts, sizes, strict=False):
            expected = (layers, batch, size)
            if tuple(t.shape) != expected:
                raise RuntimeError(
                    f"Expected {label} size {expected}, got {list(t.shape)}"
                )

    def _layers(self, x, hx, batch_sizes=None):
        """x (seq, batch, features), or packed data with its batch_sizes, through
        every layer, each layer's directions concatenated as the next one's input;
        dropout on each layer's output but the last, in training."""
        directions = 2 if self.bidirectional else 1
        finals = []
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(directions):
                k = layer * directions + direction
                state = _map(hx, lambda t, k=k: t[k])
                output, state = self._direction(
                    x, state, k, direction == 1, batch_sizes
                )
                outputs.append(output)
                finals.append(state)
            x = cat(outputs, -1)
            if self.training and layer < self.num_layers - 1:
                x = dropout(x, self.dropout)
        if isinstance(hx, tuple):
            return x, tuple(stack(parts) for parts in zip(*finals, strict=True))
        return x, stack(finals)

    def _direction(self, x, initial, k, reversed, batch_sizes):
        """One layer's one direction over the sequence with the k-th weights: the
        input's gate pre-activations for all steps in one linear, then the steps.
        (the outputs, the final state). Packed, step t has batch_sizes[t] rows:
        going forward the rows of sequences that ended are set aside as their final
        states; going backward a sequence starts from `initial` at its last step."""
        w = {
            name.rsplit("_l", 1)[0]: getattr(self, name)
            for name in self._all_weights[k]
        }
        gi = linear(x, w["weight_ih"], w.get("bias_ih"))
        gi = gi.unbind(0) if batch_sizes is None else gi.split(batch_sizes)
        out, ended, state = [None] * len(gi), [], initial
        for t in range(len(gi) - 1, -1, -1) if reversed else range(len(gi)):
            rows, have = len(gi[t]), len(_hidden(state))
            if rows < have and not reversed:
                ended.append(_rows(state, rows, have))
                state = _rows(state, 0, rows)
            elif rows < have:  # the backward direction's first step
                state = _rows(state, 0, rows)
            elif rows > have:
                state = _join([state, _rows(initial, have, rows)])
            gh = linear(_hidden(state), w["weight_hh"], w.get("bias_hh"))
            state = self._update(gi[t], gh, state)
            if "weight_hr" in w:
                state = (linear(state[0], w["weight_hr"]), state[1])
            out[t] = _hidden(state)
        if ended:
            state = _join([state, *ended[::-1]])
        return stack(out) if batch_sizes is None else cat(out), state

    def extra_repr(self):
        """torch's: only the options that differ from the defaults (RNN's
        nonlinearity is never shown)."""
        s = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size != 0:
            s += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if self.batch_first is not False:
            s += f", batch_first={self.batch_first}"
        if self.dropout != 0:
            s += f", dropout={self.dropout}"
        if self.bidirectional is not False:
            s += f", bidirectional={self.bidirectional}"
        return s


def _no_projection(kwargs):
    if "proj_size" in kwargs:
        raise ValueError(
            "proj_size argument is only supported for LSTM, not RNN or GRU"
        )


class RNN(_Elman, RNNBase):
    """RNN(input_size, hidden_size, num_layers=1, nonlinearity='tanh', bias=True,
    batch_first=False, dropout=0.0, bidirectional=False, device=None, dtype=None)."""

    _INPUT_DIMS = "RNN: Expected input to be 2D or 3D, got {}D tensor instead"

    def __init__(self, *args, **kwargs):
        _no_projection(kwargs)
        if len(args) > 3:  # nonlinearity is the fourth positional argument
            self.nonlinearity, args = args[3], args[:3] + args[4:]
        else:
            self.nonlinearity = kwargs.pop("nonlinearity", "tanh")
        modes = {"tanh": "RNN_TANH", "relu": "RNN_RELU"}
        if self.nonlinearity not in modes:
            raise ValueError(
                f"Unknown nonlinearity '{self.nonlinearity}'. Select from 'tanh' or "
                "'relu'."
            )
        super().__init__(modes[self.nonlinearity], *args, **kwargs)


class GRU(_Gru, RNNBase):
    """GRU(input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
    dropout=0.0, bidirectional=False, device=None, dtype=None)."""

    _INPUT_DIMS = "GRU: Expected input to be 2D or 3D, got {}D instead"

    def __init__(self, *args, **kwargs):
        _no_projection(kwargs)
        super().__init__("GRU", *args, **kwargs)


class LSTM(_Lstm, RNNBase):
    """LSTM(input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
    dropout=0.0, bidirectional=False, proj_size=0, device=None, dtype=None); with
    proj_size, h = (o tanh(c)) W_hr^T, of size proj_size."""

    _INPUT_DIMS = "LSTM: Expected input to be 2D or 3D, got {}D instead"

    def __init__(self, *args, **kwargs):
        super().__init__("LSTM", *args, **kwargs)

    def _zero_state(self, x, batch):
        h = super()._zero_state(x, batch)
        return h, x.new_zeros(*h.shape[:2], self.hidden_size)
