import pytest
import torch

from dlc.dit import DIT_MODELS, DiT, create_dit
from dlc.dit.diffusion import get_objective, guided_output, sample
from dlc.errors import CodeError, ConfigError

L, V = 4, 8


def tiny(objective="flow", **kwargs) -> DiT:
    torch.manual_seed(0)
    model = create_dit("DiT-N/4", image_size=16, code_length=L, vocab_size=V,
                       learn_sigma=get_objective(objective).learn_sigma, **kwargs)
    for p in model.parameters():  # leave the zero init so outputs depend on every input
        p.data.normal_(0, 0.05)
    return model.eval()


def test_registry_has_paper_and_cpu_sizes():
    assert {"DiT-XL/2", "DiT-B/4", "DiT-S/8", "DiT-T/4", "DiT-N/2"} <= set(DIT_MODELS)
    xl = create_dit("DiT-XL/2", image_size=32, in_channels=4, code_length=512, vocab_size=256, learn_sigma=True)
    assert xl.code_embedder.table.shape == (512, 257, 1152) and xl.out_channels == 8
    with pytest.raises(ConfigError, match="unknown DiT"):
        create_dit("DiT-Q/3")


def test_hard_soft_and_null_codes():
    model = tiny()
    x, t = torch.randn(3, 3, 16, 16), torch.tensor([10.0, 500.0, 990.0])
    codes = torch.randint(0, V, (3, L))
    hard = model(x, t, codes)
    soft = model(x, t, torch.nn.functional.one_hot(codes, V).float())
    assert hard.shape == (3, 3, 16, 16)
    assert torch.allclose(hard, soft, atol=1e-5)  # a one-hot soft code is the hard code
    null = model(x, t, None)
    dropped = model(x, t, codes, drop=torch.tensor([True, True, True]))
    assert torch.allclose(null, dropped, atol=1e-6) and not torch.allclose(null, hard)


def test_in_context_code_tokens_let_each_code_position_reach_the_patches():
    pooled, in_context = tiny(), tiny(code_tokens=True)
    assert in_context.state_dict().keys() == pooled.state_dict().keys()  # the same weights, another sequence
    x, t = torch.randn(2, 3, 16, 16), torch.full((2,), 500.0)
    codes = torch.randint(0, V, (2, L))
    out = in_context(x, t, codes)
    assert out.shape == (2, 3, 16, 16) and not torch.allclose(out, pooled(x, t, codes), atol=1e-4)
    soft = in_context(x, t, torch.nn.functional.one_hot(codes, V).float())
    assert torch.allclose(soft, out, atol=1e-5)
    null, dropped = in_context(x, t, None), in_context(x, t, codes, drop=torch.tensor([True, True]))
    assert torch.allclose(null, dropped, atol=1e-6) and not torch.allclose(null, out, atol=1e-4)
    # codes whose rows average the same (u + -u = 0 + 0): the pooled model cannot tell them apart
    u = torch.randn(pooled.config.hidden_size)
    first, second = codes.clone(), codes.clone()
    first[:, :2], second[:, :2] = torch.tensor([0, 0]), torch.tensor([1, 1])
    for model in (pooled, in_context):
        with torch.no_grad():
            table = model.code_embedder.table
            table[0, 0], table[1, 0], table[0, 1], table[1, 1] = u, -u, 0, 0
    assert torch.allclose(pooled(x, t, first), pooled(x, t, second), atol=1e-6)
    assert not torch.allclose(in_context(x, t, first), in_context(x, t, second), atol=1e-4)


def test_unconditional_and_class_models_are_the_same_class():
    uncond = create_dit("DiT-N/4", image_size=16, code_length=0, vocab_size=1)
    assert uncond.code_embedder is None and uncond(torch.randn(2, 3, 16, 16), torch.ones(2)).shape == (2, 3, 16, 16)
    labels = create_dit("DiT-N/4", image_size=16, code_length=1, vocab_size=10)
    assert labels(torch.randn(2, 3, 16, 16), torch.ones(2), torch.tensor([[3], [7]])).shape == (2, 3, 16, 16)


def test_zero_initialised_blocks_are_identities():
    model = create_dit("DiT-N/4", image_size=16, code_length=L, vocab_size=V)
    x = torch.randn(2, 64, model.config.hidden_size)
    c = torch.randn(2, model.config.hidden_size)
    for block in model.blocks:
        assert torch.equal(block(x, c), x)
    assert model(torch.randn(2, 3, 16, 16), torch.ones(2), torch.zeros(2, L, dtype=torch.long)).abs().max() == 0


def test_bad_codes_are_clear_errors():
    model = tiny()
    x, t = torch.randn(2, 3, 16, 16), torch.ones(2)
    with pytest.raises(CodeError, match=r"shape \(batch, 4\)"):
        model(x, t, torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(CodeError, match=r"values must be in \[0, 8\)"):
        model(x, t, torch.full((2, L), V))
    with pytest.raises(CodeError, match="soft codes"):
        model(x, t, torch.rand(2, L, V + 1))


def test_guidance_scale_one_is_the_conditional_prediction():
    model = tiny()
    x, codes = torch.randn(2, 3, 16, 16), torch.randint(0, V, (2, L))
    cond = model(x, torch.full((2,), 300.0), codes)
    assert torch.allclose(guided_output(model, x, 300.0, codes, 1.0, None, True), cond)
    null = model(x, torch.full((2,), 300.0), None)
    guided = guided_output(model, x, 300.0, codes, 2.0, 1, True)
    assert torch.allclose(guided[:, :1], null[:, :1] + 2 * (cond[:, :1] - null[:, :1]), atol=1e-5)
    assert torch.allclose(guided[:, 1:], cond[:, 1:], atol=1e-5)  # only the first channel guided


@pytest.mark.parametrize("objective,sampler", [("flow", "euler"), ("flow", "dpm"), ("ddpm", "ddpm"), ("ddpm", "dpm")])
def test_same_seed_same_sample_at_any_batch_size(objective, sampler):
    model, obj = tiny(objective), get_objective(objective)
    codes = torch.randint(0, V, (3, L), generator=torch.Generator().manual_seed(1))
    batch = sample(model, obj, codes, seed=7, steps=4, sampler=sampler, guidance_scale=1.5)
    alone = sample(model, obj, codes[2:3], seed=7, indices=[2], steps=4, sampler=sampler, guidance_scale=1.5)
    assert torch.allclose(batch[2:3], alone, atol=1e-4)
    other_seed = sample(model, obj, codes[2:3], seed=8, indices=[2], steps=4, sampler=sampler, guidance_scale=1.5)
    assert not torch.allclose(alone, other_seed, atol=1e-2)


def test_save_and_load_give_identical_outputs(tmp_path):
    model = tiny("ddpm")
    model.save_pretrained(tmp_path)
    loaded = DiT.from_pretrained(tmp_path).eval()
    x, t, codes = torch.randn(2, 3, 16, 16), torch.ones(2) * 40, torch.randint(0, V, (2, L))
    assert torch.equal(model(x, t, codes), loaded(x, t, codes))


def test_ddpm_loss_has_mse_and_variance_bound():
    model = create_dit("DiT-N/4", image_size=16, code_length=L, vocab_size=V, learn_sigma=True)
    loss, metrics = get_objective("ddpm").loss(model, torch.rand(4, 3, 16, 16) * 2 - 1, torch.zeros(4, L, dtype=torch.long), None)
    assert loss.item() == pytest.approx(metrics["mse"] + metrics["vlb"], rel=1e-4)
    assert metrics["mse"] == pytest.approx(1.0, abs=0.2)  # zero-initialised output: eps error ~ Var(noise)


@pytest.mark.parametrize("time_sampling, middle_share", [("uniform", 0.4), ("logit_normal", 0.6)])
def test_flow_training_times_follow_the_chosen_distribution(time_sampling, middle_share):
    seen = []

    def model(xt, t, codes, drop):
        seen.append(t / 1000)
        return torch.zeros_like(xt)

    torch.manual_seed(0)
    get_objective("flow", time_sampling=time_sampling).loss(model, torch.zeros(20000, 1, 1, 1), None, None)
    t = torch.cat(seen)
    assert 0 < t.min() and t.max() < 1 and abs(t.mean() - 0.5) < 0.01
    assert ((0.3 < t) & (t < 0.7)).float().mean() == pytest.approx(middle_share, abs=0.02)
    with pytest.raises(ValueError, match="time_sampling"):
        get_objective("flow", time_sampling="cosine")
