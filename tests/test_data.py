"""stages/lib/core/data.py's batches of resident tensors: every rank's share of a batch, for
any number of samples and ranks, as torch's DistributedSampler gives it."""
import pytest
import torch

from stages.lib.core import data


@pytest.mark.parametrize("n, world", [(3, 8), (1, 4), (5, 2), (8, 8), (13, 4), (2, 7)])
def test_every_rank_gets_a_share_as_distributed_sampler_gives_it(n, world):
    """3 samples on 8 ranks: each rank still gets one (the list repeats as often as needed),
    the positions DistributedSampler gives each rank."""
    from torch.utils.data import DistributedSampler

    order = torch.arange(n)
    padded = data.pad_to_multiple(order, world)
    assert len(padded) % world == 0 and len(padded) >= n
    for rank in range(world):
        sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=False)
        assert padded[rank::world].tolist() == list(sampler)


def test_resident_batches_on_more_ranks_than_samples():
    images = torch.zeros(3, 1, 2, 2, dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2])
    shares = [list(data.batches(images, labels, 8, mean=(0.0,), std=(1.0,), shard=(r, 8)))
              for r in range(8)]
    assert all(len(share) == 1 and len(share[0][1]) == 1 for share in shares)
