"""The Fisher across two processes (app/learning/distributed.py, gloo on CPU) equals the
single-process Fisher on the same samples, and its all-reduce moves one float32 per parameter
(+ the count); a rank's death fails the launch unless every rank had done its work. A whole
two-process update: tests/service/test_distributed_update.py."""

import pytest
import torch
from torch import nn

from app.learning import distributed
from app.learning.fisher import diagonal_fisher
from app.learning.state import from_safetensors_bytes, to_safetensors_bytes

N_SAMPLES = 37  # odd: the two shards differ in size
LABEL_MODES = ("true", "empirical")


def conv_and_dense() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small net with a convolution (the vmap path) and a wide dense layer (the factored path)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 6 * 6, 40), nn.ReLU(), nn.Linear(40, 4)
    )
    x = torch.randn(N_SAMPLES, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 4, (N_SAMPLES,), generator=torch.Generator().manual_seed(2))
    return model, x, y


def fisher_on_rank(rank: int, world: int, device: str, out: str) -> None:
    model, x, y = conv_and_dense()
    for label_mode in LABEL_MODES:
        distributed.traffic.clear()
        fisher = diagonal_fisher(model, x, y, label_mode=label_mode, chunk_size=8)
        with open(f"{out}/fisher-{label_mode}-{rank}.safetensors", "wb") as handle:
            handle.write(to_safetensors_bytes(fisher, {"fisher_bytes": str(distributed.traffic["fisher"])}))


def test_the_two_process_fisher_equals_the_single_process_fisher(tmp_path):
    model, x, y = conv_and_dense()
    n_parameters = sum(p.numel() for p in model.parameters())
    distributed.spawn(fisher_on_rank, 2, "cpu", str(tmp_path))
    for label_mode in LABEL_MODES:
        single = diagonal_fisher(model, x, y, label_mode=label_mode, chunk_size=8)
        for rank in (0, 1):
            path = tmp_path / f"fisher-{label_mode}-{rank}.safetensors"
            fisher, metadata = from_safetensors_bytes(path.read_bytes())
            assert set(fisher) == set(single)
            for name in single:
                torch.testing.assert_close(fisher[name], single[name], rtol=1e-6, atol=1e-6)
            # one all_reduce of the sums and the sample count: (parameters + 1) float32 per rank
            assert int(metadata["fisher_bytes"]) == 4 * (n_parameters + 1)


def abort_on_rank_1(rank: int, world: int, device: str, out: str, when: str) -> None:
    """Rank 1 dies by SIGABRT at work or, once its work is done, at interpreter exit (teardown)."""
    import atexit
    import os

    if rank == 1 and when == "at work":
        os.abort()
    with open(f"{out}/done-{rank}", "w") as handle:
        handle.write(str(distributed.all_reduce_sums({"one": torch.ones(1)}, 1)[1]))
    if rank == 1 and when == "at exit":
        atexit.register(os.abort)


def test_a_rank_that_dies_in_teardown_after_all_work_is_done_does_not_fail_the_launch(tmp_path):
    distributed.spawn(abort_on_rank_1, 2, "cpu", str(tmp_path), "at exit")
    assert [(tmp_path / f"done-{rank}").read_text() for rank in (0, 1)] == ["2", "2"]


def test_a_rank_that_dies_at_work_fails_the_launch(tmp_path):
    with pytest.raises(torch.multiprocessing.ProcessExitedException, match="SIGABRT"):
        distributed.spawn(abort_on_rank_1, 2, "cpu", str(tmp_path), "at work")
