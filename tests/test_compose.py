import pytest
import torch

from dlc.compose import compose, encode_sources, interpolate, source_distributions
from dlc.errors import CodeError

L, V = 32, 64


def pair(seed=0, agree=8):
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, V, (L,), generator=g)
    b = (a + torch.randint(1, V, (L,), generator=g)) % V  # differs from a everywhere ...
    b[:agree] = a[:agree]  # ... except the first `agree` positions
    return a, b


@pytest.mark.parametrize("method", ["random", "average"])
def test_agreeing_positions_stay_fixed_and_others_come_from_a_parent(method):
    a, b = pair()
    codes = compose([a, b], n=16, seed=3, method=method)
    assert codes.shape == (16, L) and codes.dtype == torch.long
    assert (codes[:, :8] == a[:8]).all()
    from_parent = (codes == a) | (codes == b)
    assert from_parent.all()
    share_a = (codes[:, 8:] == a[8:]).float().mean().item()
    assert 0.35 < share_a < 0.65  # an even choice between two sources


def test_three_sources_and_weights():
    g = torch.Generator().manual_seed(1)
    sources = [torch.randint(0, V, (1, L), generator=g) for _ in range(3)]
    codes = compose(sources, n=64, seed=0, weights=[0.6, 0.3, 0.1])
    shares = [(codes == s).float().mean().item() for s in sources]
    assert shares[0] > shares[1] > shares[2] > 0.02
    assert abs(shares[0] - 0.6) < 0.08


@pytest.mark.parametrize("method", ["random", "average"])
def test_weights_one_zero_return_the_first_source(method):
    a, b = pair(agree=0)
    codes = compose([a, b], n=5, weights=[1, 0], method=method)
    assert (codes == a).all()


def test_bool_mask_takes_exactly_the_requested_positions():
    a, b = pair(agree=0)
    mask = torch.zeros(L, dtype=torch.bool)
    mask[[0, 3, 7, 20]] = True
    codes = compose([a, b], n=4, seed=5, mask=mask)
    assert (codes[:, mask] == a[mask]).all()
    assert (codes[:, ~mask] == b[~mask]).all()


def test_integer_mask_fixes_some_positions_and_leaves_the_rest_free():
    a, b = pair(agree=0)
    mask = torch.full((L,), -1)
    mask[:4] = 1
    codes = compose([a, b], n=32, seed=0, mask=mask)
    assert (codes[:, :4] == b[:4]).all()
    free = codes[:, 4:]
    assert ((free == a[4:]) | (free == b[4:])).all()
    assert 0.3 < (free == a[4:]).float().mean() < 0.7


def test_sample_i_depends_only_on_seed_and_index():
    a, b = pair()
    eight = compose([a, b], n=8, seed=11)
    assert torch.equal(compose([a, b], n=3, seed=11), eight[:3])
    assert not torch.equal(compose([a, b], n=8, seed=12), eight)


def test_average_of_sharp_probabilities_equals_random_choice_of_argmaxes():
    g = torch.Generator().manual_seed(0)
    pa, pb = (torch.softmax(torch.randn(L, V, generator=g) * 4, -1) for _ in range(2))
    codes = compose([pa, pb], n=16, seed=2, method="average", tau=1e-3)
    parents = (codes == pa.argmax(-1)) | (codes == pb.argmax(-1))
    assert parents.all()


def test_average_at_temperature_one_samples_the_mixture():
    p = torch.zeros(L, V)
    p[:, 0], p[:, 1] = 0.75, 0.25
    q = torch.zeros(L, V)
    q[:, 1] = 1.0
    codes = compose([p, q], n=200, seed=0, method="average", tau=1.0)
    assert set(codes.unique().tolist()) == {0, 1}
    assert abs((codes == 0).float().mean().item() - 0.375) < 0.03  # (0.75 + 0) / 2


def test_retempering_probabilities():
    p = torch.softmax(torch.randn(4, V), -1)
    assert torch.allclose(source_distributions([p], tau=1.0)[0], p, atol=1e-5)
    sharp = source_distributions([p], tau=0)[0]
    assert torch.equal(sharp.argmax(-1), p.argmax(-1)) and torch.equal(sharp.sum(-1), torch.ones(4))


def test_interpolate_endpoints_are_the_hard_codes():
    a, b = pair()
    soft = interpolate(a, b, n=5, vocab_size=V)
    assert soft.shape == (5, L, V)
    assert torch.allclose(soft.sum(-1), torch.ones(5, L))
    assert torch.equal(soft[0].argmax(-1), a) and torch.equal(soft[-1].argmax(-1), b)
    assert torch.allclose(soft[2, 10, a[10]], torch.tensor(0.5))


def test_interpolate_through_a_dit_matches_hard_codes_at_the_ends():
    from dlc.dit import create_dit

    torch.manual_seed(0)
    model = create_dit("DiT-N/4", image_size=8, code_length=L, vocab_size=V).eval()
    for p in model.parameters():  # adaLN-Zero starts at zero; give it weights that react to the code
        torch.nn.init.normal_(p, std=0.05)
    a, b = pair()
    x, t = torch.randn(1, 3, 8, 8), torch.tensor([500.0])
    soft = interpolate(a, b, n=3, vocab_size=V)
    with torch.no_grad():
        hard = model(x.repeat(2, 1, 1, 1), t, torch.stack([a, b]))
        out = model(x.repeat(3, 1, 1, 1), t, soft)
    assert torch.allclose(out[0], hard[0], atol=1e-5) and torch.allclose(out[2], hard[1], atol=1e-5)
    assert not torch.allclose(out[1], hard[0], atol=1e-3)


def test_encode_sources_uses_the_encoder_probabilities():
    class Encoder:
        def probs(self, images, tau):
            assert tau == 1.0
            return torch.softmax(images.flatten(1)[:, : L * V].reshape(-1, L, V), -1)

    images = torch.randn(3, 3, 64, 64)
    sources = encode_sources(images, Encoder())
    assert len(sources) == 3 and sources[0].shape == (L, V)
    codes = compose(sources, n=4, tau=0)
    argmaxes = torch.stack([s.argmax(-1) for s in sources])
    assert ((codes[:, None] == argmaxes[None]).any(1)).all()


@pytest.mark.parametrize("sources, kwargs, words", [
    ([], {}, "at least one"),
    ([torch.zeros(4, dtype=torch.long), torch.zeros(5, dtype=torch.long)], {}, "same code length"),
    ([torch.tensor([0, -1])], {}, ">= 0"),
    ([torch.tensor([0, 70])], {"vocab_size": 64}, "[0, 64)"),
    ([torch.zeros(2, 3, 4, dtype=torch.long)], {}, "(L,)"),
    ([torch.rand(4, 8)], {}, "sum to 1"),
    ([torch.zeros(4, dtype=torch.long)] * 2, {"weights": [1, 2, 3]}, "one per source"),
    ([torch.zeros(4, dtype=torch.long)] * 2, {"mask": torch.ones(3, dtype=torch.bool)}, "mask must have shape"),
    ([torch.zeros(4, dtype=torch.long)] * 3, {"mask": torch.ones(4, dtype=torch.bool)}, "exactly 2 sources"),
])
def test_bad_inputs_raise_code_errors(sources, kwargs, words):
    with pytest.raises(CodeError, match=None) as info:
        compose(sources, **kwargs)
    assert words in str(info.value)


def test_unknown_method():
    with pytest.raises(ValueError, match="random"):
        compose([torch.zeros(4, dtype=torch.long)], method="mean")
