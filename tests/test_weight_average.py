"""The generator's weight average: an exponential moving average that leaves integer buffers exact."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from scmaskgan.method.weight_average import WeightAverage


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 2)
        self.norm = nn.BatchNorm1d(2)
        self.register_buffer("table", torch.tensor([2001, 7, 123456789], dtype=torch.int64))


def test_the_average_moves_by_one_minus_decay_and_copies_integer_buffers() -> None:
    torch.manual_seed(0)
    net = _Net()
    average = WeightAverage(net, decay=0.9)
    start = {k: v.clone() for k, v in net.state_dict().items()}
    optimiser = torch.optim.SGD(net.parameters(), lr=0.5)
    for _ in range(3):  # parameters move in place (optimiser), buffers too (batch norm's running statistics)
        net.train()
        loss = net.norm(net.linear(torch.randn(8, 3))).pow(2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    net.table.add_(1)
    average.update()
    now = net.state_dict()
    for name, value in average.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, 0.9 * start[name] + 0.1 * now[name])
        else:  # num_batches_tracked and the table: the source's values, not a rounded blend
            assert torch.equal(value, now[name])
    assert average.module.table.tolist() == [2002, 8, 123456790]
    assert not any(p.requires_grad for p in average.module.parameters())


def test_a_restored_average_keeps_following_its_source() -> None:
    net = _Net()
    average = WeightAverage(net, decay=0.5)
    saved = {k: v.clone() for k, v in average.state_dict().items()}
    with torch.no_grad():
        net.linear.weight.add_(2.0)
    average.update()
    average.load_state_dict(saved)  # back to the copy it started as
    average.update()
    torch.testing.assert_close(average.module.linear.weight, saved["linear.weight"] + 1.0)


def test_decay_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(_Net(), decay=1.0)
