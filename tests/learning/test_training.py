import copy

import torch

from app.learning.config import TrainConfig
from app.learning.models import build_model
from app.learning.training import Trainer


def test_trainer_resumes_by_steps_exactly_as_one_run():
    x, y = torch.randn(100, 6), torch.randint(0, 3, (100,))
    config = TrainConfig(epochs=3, min_steps=0, batch_size=16, seed=1)
    torch.manual_seed(0)
    a = build_model("mlp", (6,), 3, hidden=[8])
    b = build_model("mlp", (6,), 3, hidden=[8])
    b.load_state_dict(a.state_dict())
    Trainer(a, list(a.parameters()), x, y, config).run()
    resumable = Trainer(b, list(b.parameters()), x, y, config)
    for n in (5, 1, 7, 100):
        resumable.run(n)
    assert resumable.steps_done == resumable.total_steps == 21
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_training_lowers_the_loss():
    torch.manual_seed(0)
    x = torch.randn(256, 6)
    y = (x[:, 0] > 0).long()
    model = build_model("mlp", (6,), 2, hidden=[16])
    trainer = Trainer(model, list(model.parameters()), x, y, TrainConfig(epochs=5, batch_size=32))
    first = trainer.run(1)
    last = trainer.run()
    assert last < first


def test_training_draws_its_own_dropout_stream_so_a_run_is_reproducible_in_any_process_state():
    """Dropout draws from the trainer's seeded stream, not from what ran before in the process, and
    the process's generator is left as it was."""
    x, y = torch.randn(96, 6), torch.randint(0, 3, (96,))
    config = TrainConfig(epochs=2, min_steps=0, batch_size=16, seed=3)
    torch.manual_seed(0)
    start = torch.nn.Sequential(torch.nn.Linear(6, 32), torch.nn.ReLU(), torch.nn.Dropout(0.5), torch.nn.Linear(32, 3))
    trained = []
    for global_seed in (1, 2):
        model = copy.deepcopy(start)
        torch.manual_seed(global_seed)  # a different history of the process
        before = torch.get_rng_state()
        Trainer(model, list(model.parameters()), x, y, config).run()
        assert torch.equal(torch.get_rng_state(), before)
        trained.append(model)
    assert all(torch.equal(p, q) for p, q in zip(trained[0].parameters(), trained[1].parameters(), strict=True))
    other_seed = copy.deepcopy(start)
    Trainer(
        other_seed, list(other_seed.parameters()), x, y, TrainConfig(epochs=2, min_steps=0, batch_size=16, seed=4)
    ).run()
    assert not all(torch.equal(p, q) for p, q in zip(trained[0].parameters(), other_seed.parameters(), strict=True))
