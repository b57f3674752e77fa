"""stages/lib/core/data.py's batches of resident tensors: every rank's share of a batch, for
any number of samples and ranks, as torch's DistributedSampler gives it."""
import pickle

import numpy as np
import pytest
import torch

from helpers import Exploit, cifar_folder
from stages.lib.core import data
from stages.lib.core.common import StageError


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


# ---------------------------------------------------------------- CIFAR-10's pickles, no code run

def test_a_pickle_that_runs_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    folder = cifar_folder(tmp_path, {b"label_names": [b"a", b"b"], b"x": Exploit(marker)})
    with pytest.raises(StageError, match=r"CIFAR-10 file batches\.meta is corrupt or unsafe: "
                                         r"refused to load posix\.system"):
        data.read_cifar10(folder)
    assert not marker.exists()


def test_the_restricted_unpickler_reads_real_batch_layouts(tmp_path):
    """Python-2 style byte strings and Python-3 protocol-2 bytes (via _codecs) both load."""
    folder = cifar_folder(tmp_path, {b"label_names": [b"cat", b"dog"], b"num_vis": 3072})
    splits, classes = data.read_cifar10(folder)
    assert classes == ["cat", "dog"]
    assert splits["train"][0].shape == (10, 3, 32, 32) and splits["val"][1].tolist() == [0, 1]


@pytest.mark.parametrize("batch, pattern", [
    ({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]},
     r"'data' must be a uint8 array of shape \(N, 3072\), got uint8 array of shape \(2, 100\)"),
    ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, r"got float32 array"),
    ({b"data": [1, 2], b"labels": [0, 1]}, r"got list"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 7]}, r"'labels' must be 2 integers "
                                                                  r"in 0\.\.1"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, r"'labels' must be 2 integers"),
    ([1, 2, 3], r"data_batch_1 is not a batch"),
])
def test_a_batch_of_the_wrong_shape_or_type_is_one_error(tmp_path, batch, pattern):
    folder = cifar_folder(tmp_path, {b"label_names": [b"a", b"b"]})
    (folder / "data_batch_1").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(StageError, match=pattern):
        data.read_cifar10(folder)
