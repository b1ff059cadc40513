"""torch.accelerator: there is none here (the CPU is the only device), so scripts
that ask take their CPU branch."""


def is_available():
    return False


def current_accelerator(check_available=False):
    return None


def device_count():
    return 0
