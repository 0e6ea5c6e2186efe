import pytest
import torch

from dlc.encoder.sem import SimplicialEmbedding


@pytest.fixture
def sem():
    torch.manual_seed(0)
    return SimplicialEmbedding(in_features=12, code_length=5, vocab_size=7)


def test_shapes_and_groups_sum_to_one(sem):
    x = torch.randn(4, 12)
    probs = sem(x)
    assert probs.shape == (4, 5, 7)
    assert torch.allclose(probs.sum(-1), torch.ones(4, 5), atol=1e-6)
    assert (probs > 0).all()
    codes = sem.codes(x)
    assert codes.shape == (4, 5) and codes.dtype == torch.long
    assert codes.min() >= 0 and codes.max() < 7


def test_argmax_is_invariant_to_temperature(sem):
    x = torch.randn(16, 12)
    codes = sem.codes(x)
    for tau in (0.01, 0.3, 1.0, 5.0):
        assert torch.equal(sem(x, tau).argmax(-1), codes)
    # lower temperature sharpens every group
    assert (sem(x, 0.1).amax(-1) > sem(x, 1.0).amax(-1)).all()


def test_layernorm_covers_the_whole_code_not_each_group(sem):
    assert sem.norm.normalized_shape == (5 * 7,)
    assert sem.linear.bias is None
    with torch.no_grad():
        sem.norm.weight.fill_(1.0)
        sem.norm.bias.zero_()
        logits = sem.logits(torch.randn(3, 12))
    flat = logits.flatten(1)
    assert torch.allclose(flat.mean(1), torch.zeros(3), atol=1e-5)
    assert torch.allclose(flat.var(1, unbiased=False), torch.ones(3), atol=1e-3)
    # statistics are shared: single groups are not normalised on their own
    assert logits.mean(-1).abs().max() > 0.05


def test_rejects_non_positive_temperature(sem):
    with pytest.raises(ValueError, match="temperature"):
        sem(torch.randn(1, 12), tau=0.0)
