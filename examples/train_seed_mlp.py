"""The PyTorch autograd chapter's second example, run on symgrad.tape: one SGD step on
a 3-2-1 sigmoid network with MSE loss. Only the imports differ from the original."""

from symgrad import tape as torch
from symgrad.tape import nn, optim


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(3, 2)
        self.fc2 = nn.Linear(2, 1)

    def forward(self, x):
        x = torch.sigmoid(self.fc1(x))
        x = torch.sigmoid(self.fc2(x))
        return x


torch.manual_seed(0)
net = Net()
criterion = nn.MSELoss()
optimizer = optim.SGD(net.parameters(), lr=0.1)

x = torch.tensor([1.0, 2.0, 3.0])
target = torch.tensor([0.5])

print(net)
for name, param in net.named_parameters():
    print(f"{name}:", param.data)

optimizer.zero_grad()
output = net(x)
loss = criterion(output, target)
loss.backward()
print("output:", output)
print("loss:", loss)
for name, param in net.named_parameters():
    print(f"{name}.grad:", param.grad)
optimizer.step()
for name, param in net.named_parameters():
    print(f"{name} after step:", param.data)
print("loss after step:", criterion(net(x), target).item())
