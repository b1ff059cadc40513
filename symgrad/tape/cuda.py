"""torch.cuda: there is no GPU here, so scripts that ask take their CPU branch."""


def is_available():
    return False


def device_count():
    return 0
