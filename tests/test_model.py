import pytest
import torch

from archive_colorize.model.network import ColorizationModel, ModelConfig, count_parameters
from archive_colorize.errors import ConfigError


@pytest.fixture(scope="module")
def model(weights):
    return weights.model.eval()


def test_full_width_matches_table_1():
    m = ColorizationModel(ModelConfig(num_classes=205))
    # Table 1 at full width: ~42.4M parameters, FC1 is 7*7*512 -> 1024.
    assert m.global_features.fc1[0].in_features == 7 * 7 * 512
    assert m.global_features.fc1[0].out_features == 1024
    assert m.classification.fc1[0].in_features == 512  # reads the 512-d second-to-last global FC
    assert m.classification.fc2.out_features == 205
    assert [c[0].stride[0] for c in m.low_level] == [2, 1, 2, 1, 2, 1]
    assert [c[0].out_channels for c in m.low_level] == [64, 128, 128, 256, 256, 512]
    assert 42_000_000 < count_parameters(m) < 43_000_000


@pytest.mark.parametrize(
    "size,expected",
    [((224, 224), (112, 112)), ((97, 131), (49, 66)), ((2048, 1536), (1024, 768)), ((1, 1), (1, 1))],
)
def test_output_sizes(model, size, expected):
    with torch.no_grad():
        ab, logits = model(torch.rand(1, 1, *size))
    assert tuple(ab.shape) == (1, 2, *expected)
    assert tuple(logits.shape) == (1, 100)
    assert 0 < float(ab.min()) and float(ab.max()) < 1  # Sigmoid


def test_224_shared_path_equals_two_input_path(model):
    L = torch.rand(2, 1, 224, 224)
    with torch.no_grad():
        shared_ab, shared_logits = model(L)
        glob, logits = model.global_path(L)  # recomputes low-level features for the global branch
        two_ab = model.local_path(L, glob)
    assert torch.allclose(shared_ab, two_ab, atol=1e-6)
    assert torch.allclose(shared_logits, logits, atol=1e-5)


def test_style_transfer_uses_global_features_of_the_other_image(model):
    a, b = torch.rand(1, 1, 160, 120), torch.rand(1, 1, 224, 224) * 0.3
    with torch.no_grad():
        own, _ = model(a)
        styled, style_logits = model(a, style=b)
        _, b_logits = model(b)
    assert not torch.allclose(own, styled, atol=1e-3)
    assert torch.allclose(style_logits, b_logits, atol=1e-5)


def test_folding_matches_unfolded_eval(model):
    folded = model.fold_batchnorm()
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    L = torch.rand(2, 1, 97, 131)
    with torch.no_grad():
        a, la = model(L)
        b, lb = folded(L)
    assert (a - b).abs().max() < 1e-5
    assert (la - lb).abs().max() < 1e-3


def test_baseline_variant_has_no_global_branch():
    m = ColorizationModel(ModelConfig(num_classes=10, width=0.125, global_branch=False)).eval()
    assert m.global_features is None and m.classification is None
    with torch.no_grad():
        ab, logits = m(torch.rand(1, 1, 64, 48))
    assert tuple(ab.shape) == (1, 2, 32, 24) and logits is None


def test_unknown_model_config_key_is_refused():
    with pytest.raises(ConfigError, match="unknown model config key.*depth"):
        ModelConfig.from_dict({"num_classes": 3, "depth": 5})
