"""torch.autograd.graph: hooks on the tensors that recorded ops save for backward.

Inside saved_tensors_hooks(pack, unpack), each tensor an op saves is passed to pack
when the op runs and what pack returned to unpack when backward needs it; backward
uses unpack's values (and, having given the saving to the hooks, no longer checks
the tensor's version). The tape calls pack on what its own rules save, which for
some ops is not what torch's save (its MulBackward0 saves `other` first)."""

_hooks = []  # (pack, unpack) pairs of the open blocks; the innermost applies
_disabled = []  # the error messages of open disable_saved_tensors_hooks blocks


def current_hooks():
    """The innermost (pack, unpack), or None."""
    return _hooks[-1] if _hooks else None


class saved_tensors_hooks:
    """pack_hook(tensor) -> anything and unpack_hook(that) -> a tensor with the
    same content, for the tensors saved inside the with block."""

    def __init__(self, pack_hook, unpack_hook):
        self.pack_hook, self.unpack_hook = pack_hook, unpack_hook

    def __enter__(self):
        if _disabled:
            raise RuntimeError(_disabled[-1])
        _hooks.append((self.pack_hook, self.unpack_hook))

    def __exit__(self, *exc_info):
        _hooks.pop()


class save_on_cpu(saved_tensors_hooks):
    """torch moves saved tensors to the CPU and back; the tape's are there already,
    so this keeps a copy."""

    def __init__(self, pin_memory=False, device_type="cuda"):
        super().__init__(
            lambda t: (t.device, t.detach().clone()), lambda p: p[1].to(p[0])
        )


class disable_saved_tensors_hooks:
    """Inside the block, opening saved_tensors_hooks raises RuntimeError with
    error_message."""

    def __init__(self, error_message):
        self.error_message = error_message

    def __enter__(self):
        if _hooks:
            raise RuntimeError(self.error_message)
        _disabled.append(self.error_message)

    def __exit__(self, *exc_info):
        _disabled.pop()
