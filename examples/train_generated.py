"""Train the chapter's 3-2-1 network with the generated module and with symgrad.tape.

Both start from the same weights (the generated module's ``init_params``) and take the same
SGD steps; their losses agree to round-off at every step. Run from the repository root
after ``symgrad build``:  python examples/train_generated.py
"""

import importlib.util
from pathlib import Path

import numpy as np

from symgrad import tape as torch
from symgrad.tape import nn, optim

ROOT = Path(__file__).resolve().parents[1]


def load_generated(name: str):
    spec = importlib.util.spec_from_file_location(
        name, ROOT / "generated" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(3, 2)
        self.fc2 = nn.Linear(2, 1)

    def forward(self, x):
        return torch.sigmoid(self.fc2(torch.sigmoid(self.fc1(x))))


def train(steps: int = 5, lr: float = 0.1) -> list[tuple[float, float]]:
    """(generated loss, tape loss) before each of ``steps`` SGD steps."""
    seed_mlp = load_generated("seed_mlp")
    params = seed_mlp.init_params(seed=0)
    inputs = {"x": np.array([[1.0, 2.0, 3.0]]), "target": np.array([[0.5]])}

    net = Net()
    for layer, i in ((net.fc1, 1), (net.fc2, 2)):  # same initial weights on both sides
        layer.weight = nn.Parameter(torch.tensor(params[f"W{i}"]))
        layer.bias = nn.Parameter(torch.tensor(params[f"b{i}"]))
    criterion = nn.MSELoss()
    optimizer = optim.SGD(net.parameters(), lr=lr)
    x, target = torch.tensor(inputs["x"]), torch.tensor(inputs["target"])

    losses = []
    for _ in range(steps):
        loss, grads = seed_mlp.value_and_grad(params, inputs)
        params = {k: params[k] - lr * grads[k] for k in params}

        optimizer.zero_grad()
        tape_loss = criterion(net(x), target)
        tape_loss.backward()
        optimizer.step()
        losses.append((float(loss), tape_loss.item()))
    return losses


if __name__ == "__main__":
    for step, (generated, reference) in enumerate(train()):
        print(f"step {step}: generated {generated:.15f}  tape {reference:.15f}")
