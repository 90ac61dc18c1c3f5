import pytest
import torch

from app.learning.models import build_model, grow_head


@pytest.mark.parametrize(
    "architecture, shape",
    [("mlp", (20,)), ("mlp", (1, 8, 8)), ("cnn", (1, 28, 28)), ("cnn", (3, 16, 16)), ("resnet18", (3, 32, 32))],
)
def test_models_take_any_input_shape(architecture, shape):
    model = build_model(architecture, shape, 7)
    assert model(torch.randn(2, *shape)).shape == (2, 7)


def test_default_models_have_no_batchnorm():
    for architecture, shape in [("mlp", (20,)), ("cnn", (1, 28, 28))]:
        model = build_model(architecture, shape, 3)
        assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


def test_growing_the_head_leaves_old_logits_unchanged():
    model = build_model("mlp", (20,), 3, hidden=[16])
    x = torch.randn(5, 20)
    old_rows = model.head.weight.detach().clone()
    before = model(x)
    grow_head(model, 5)
    after = model(x)
    assert after.shape == (5, 5)
    assert torch.equal(model.head.weight[:3], old_rows)  # the weights are copied exactly
    torch.testing.assert_close(after[:, :3], before, rtol=0, atol=1e-6)  # a wider matmul may round differently


def test_bad_architecture_and_options_are_refused_clearly():
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("vgg", (20,), 2)
    with pytest.raises(ValueError, match="image inputs"):
        build_model("cnn", (20,), 2)
    with pytest.raises(ValueError, match="hidden"):
        build_model("mlp", (20,), 2, hidden=[0])
