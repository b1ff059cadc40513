"""The PyTorch autograd chapter's first example, run on symgrad.tape.

Only the import differs from the PyTorch original. Prints tensor([1., 1., 1.]).
"""

from symgrad import tape as torch

x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
y = x.sum()
y.backward()
print(x.grad)
