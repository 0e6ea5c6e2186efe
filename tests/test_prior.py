"""The code prior: schedule and ELBO weighting, sampler guarantees, remasking, seeding, resume, errors."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dlc.codes import resolve_codes, save_codes
from dlc.codes.synthetic import markov_codes, markov_entropy_bits
from dlc.config import load_config
from dlc.errors import CodeError, ConfigError
from dlc.eval.codes import code_statistics
from dlc.prior import CodePrior, load_prior
from dlc.prior.model import elbo_weight, mask_prob
from dlc.prior.sampling import step_probs
from dlc.prior.training import PriorRunConfig as CONFIG
from dlc.prior.training import build, diffusion_nll, heldout_bits, train, unigram_bits

L, V = 8, 16


def tiny(seed=0, **kwargs) -> CodePrior:
    torch.manual_seed(seed)
    options = dict(code_length=L, vocab_size=V, hidden_size=32, depth=2, num_heads=2) | kwargs
    return CodePrior(**options).eval()


def randomized(model: CodePrior, seed=1) -> CodePrior:
    """Non-zero weights everywhere (the zero-initialised output layer makes a fresh model uniform)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


# ---------------------------------------------------------------- schedule and loss


def test_log_linear_schedule_and_weight():
    eps = 1e-3
    assert mask_prob(0.0, eps) == 0.0
    assert mask_prob(1.0, eps) == pytest.approx(1 - eps)
    # the weight is SEDD's dsigma/dt / expm1(sigma) with sigma = -log(1 - m(t))
    t = torch.tensor([0.01, 0.2, 0.5, 0.9, 1.0], dtype=torch.float64, requires_grad=True)
    sigma = -torch.log1p(-mask_prob(t, eps))
    (dsigma,) = torch.autograd.grad(sigma.sum(), t)
    torch.testing.assert_close(elbo_weight(t.detach()), dsigma / torch.expm1(sigma.detach()))


def test_masking_rate_follows_the_schedule():
    seen = {}

    class Spy(CodePrior):
        def forward(self, x_t, t):
            seen["x_t"] = x_t
            return super().forward(x_t, t)

    model = Spy(code_length=64, vocab_size=V, hidden_size=32, depth=1, num_heads=2)
    codes = torch.randint(0, V, (400, 64), generator=torch.Generator().manual_seed(0))
    for t in (0.1, 0.5, 0.9):
        diffusion_nll(model, codes, torch.full((400,), t), generator=torch.Generator().manual_seed(1))
        masked = seen["x_t"] == V
        assert masked.float().mean().item() == pytest.approx(mask_prob(t, 1e-3), abs=0.01)
        assert torch.equal(seen["x_t"][~masked], codes[~masked])  # unmasked tokens are kept


def test_fully_masked_loss_is_cross_entropy_of_the_marginal():
    model = randomized(tiny())
    codes = torch.randint(0, V, (6, L), generator=torch.Generator().manual_seed(3))
    t = torch.ones(6)
    nll = diffusion_nll(model, codes, t, mask=torch.ones(6, L, dtype=torch.bool))
    marginal = model(torch.full((6, L), V), t)  # p(x0 | all masked)
    expected = F.cross_entropy(marginal.transpose(1, 2), codes, reduction="none").mean(1)
    torch.testing.assert_close(nll, expected)
    assert nll.min() > 0


def test_uniform_model_elbo_is_log_v():
    """A fresh model predicts uniformly, so every masked token costs log V and the 1/t weighting
    must turn E[#masked] = L (1 - eps) t into exactly (1 - eps) log2 V bits per token."""
    codes = torch.randint(0, V, (512, L), generator=torch.Generator().manual_seed(0))
    bits = heldout_bits(tiny(), codes, samples_per_code=8)
    assert bits == pytest.approx((1 - 1e-3) * math.log2(V), rel=0.02)


def test_unigram_baseline_and_markov_entropy():
    codes = markov_codes(3000, L, V, seed=0)
    base = unigram_bits(codes[:2500], codes[2500:], V)
    assert base["alpha"] in (0.01, 0.1, 0.5, 1.0)
    assert 0 < markov_entropy_bits(L, V) < base["bits"] <= math.log2(V) + 0.05


# ---------------------------------------------------------------- sampler


@pytest.mark.parametrize("steps", [1, 3, 16])
@pytest.mark.parametrize("time_conditioning", [True, False])
def test_sampler_range_and_no_masks(steps, time_conditioning):
    model = randomized(tiny(time_conditioning=time_conditioning))
    codes = model.sample(20, seed=0, steps=steps, temperature=1.5, eta=0.05)
    assert codes.shape == (20, L) and codes.dtype == torch.long
    assert codes.min() >= 0 and codes.max() < V  # V is the mask: never returned


def test_sampler_draws_from_the_model():
    """With a position-independent output bias the model's p(x0) is known; one step samples it."""
    model = tiny()
    p = torch.softmax(torch.randn(V, generator=torch.Generator().manual_seed(0)) * 2, 0)
    with torch.no_grad():
        model.final_layer.linear.bias.copy_(p.log())
    codes = model.sample(500, seed=0, steps=1)
    freq = torch.bincount(codes.flatten(), minlength=V).float() / codes.numel()
    assert (freq - p).abs().max() < 0.03
    cold = torch.bincount(model.sample(500, seed=0, steps=1, temperature=0.3).flatten(), minlength=V)
    assert cold.argmax() == p.argmax() and cold.max() / codes.numel() > p.max()


@pytest.mark.parametrize("time_conditioning", [True, False])
def test_same_seed_same_codes_at_any_batch_size(time_conditioning):
    model = randomized(tiny(time_conditioning=time_conditioning))
    whole = model.sample(10, seed=7, steps=12, eta=0.1)
    batched = model.sample(10, seed=7, steps=12, eta=0.1, batch_size=3)
    split = torch.cat([model.sample(4, seed=7, steps=12, eta=0.1),
                       model.sample(6, seed=7, steps=12, eta=0.1, start_index=4)])
    assert torch.equal(whole, batched) and torch.equal(whole, split)
    assert not torch.equal(whole, model.sample(10, seed=8, steps=12, eta=0.1))


def test_remasking_with_vanishing_eta_is_the_plain_sampler():
    model = randomized(tiny())
    plain = model.sample(16, seed=0, steps=32)
    assert torch.equal(model.sample(16, seed=0, steps=32, eta=1e-12), plain)
    assert torch.equal(model.sample(16, seed=0, steps=32, eta=0.0, window=(0.0, 1.0)), plain)
    corrected = model.sample(16, seed=0, steps=32, eta=0.2)
    assert not torch.equal(corrected, plain)


@pytest.mark.parametrize("m_t,m_s,eta", [(0.5, 0.45, 0.01), (0.4, 0.3, 0.1), (0.9, 0.5, 0.0)])
def test_remasking_keeps_the_masked_fraction_on_schedule(m_t, m_s, eta):
    p_unmask, p_remask = step_probs(m_t, m_s, eta)
    assert 0 <= p_unmask <= 1 and p_remask == eta
    assert m_t * (1 - p_unmask) + (1 - m_t) * p_remask == pytest.approx(m_s)


def test_sampler_rejects_bad_settings():
    model = tiny()
    for kwargs in ({"steps": 0}, {"temperature": 0.0}, {"temperature": float("nan")}, {"eta": 1.0},
                   {"eta": float("nan")}):
        with pytest.raises(ConfigError):  # one line at the command line, not a traceback
            model.sample(2, **kwargs)


# ---------------------------------------------------------------- codes, saving, errors


def test_wrong_codes_raise_code_error():
    model = tiny()
    with pytest.raises(CodeError, match="length 5"):
        model(torch.zeros(2, 5, dtype=torch.long), torch.ones(2))
    with pytest.raises(CodeError, match=r"\[0, 17\)"):
        model(torch.full((2, L), V + 1), torch.ones(2))
    with pytest.raises(CodeError, match=r"\[0, 16\)"):
        heldout_bits(model, torch.full((2, L), V))  # the mask index is not a code
    with pytest.raises(CodeError, match="integers"):
        heldout_bits(model, torch.zeros(2, L))


def test_stored_codes_checked_against_the_config(tmp_path):
    save_codes(tmp_path / "codes.npy", torch.randint(0, 40, (50, L)))
    config = load_config(CONFIG, overrides=[f"data.codes={tmp_path / 'codes.npy'}", "model.vocab_size=32"])
    with pytest.raises(CodeError, match=r"expected values in \[0, 32\)"):
        build(config)
    config = load_config(CONFIG, overrides=[f"data.codes={tmp_path / 'codes.npy'}", "model.code_length=4"])
    with pytest.raises(CodeError, match="L = 4"):
        build(config)
    np.save(tmp_path / "flat.npy", np.zeros(10, dtype=np.uint16))
    with pytest.raises(CodeError, match=r"shape \(N, L\)"):
        build(load_config(CONFIG, overrides=[f"data.codes={tmp_path / 'flat.npy'}"]))
    with pytest.raises(ConfigError, match="markov"):
        build(load_config(CONFIG, overrides=["data.codes=synthetic:nope"]))


def test_codes_from_shards(tmp_path):
    import webdataset as wds

    codes = torch.randint(0, V, (5, L))
    with wds.TarWriter(str(tmp_path / "s-000000.tar")) as sink:
        for i, c in enumerate(codes):
            sink.write({"__key__": f"{i:08d}", "code.npy": c.numpy().astype(np.uint16)})
    spec = f"webdataset:{tmp_path / 's-000000.tar'}"
    source = resolve_codes(spec, vocab_size=V)
    assert (source.code_length, source.vocab_size) == (L, V)  # L read off the first sample
    read = [item["code"] for _, item in zip(range(7), source.stream)]
    assert torch.equal(torch.stack(read), torch.cat([codes, codes[:2]]))  # endless, in order
    with pytest.raises(CodeError, match=r"\[0, 4\)"):
        next(iter(resolve_codes(spec, vocab_size=4).stream))
    with pytest.raises(ConfigError, match="vocab_size"):  # no encode.json to read V from
        resolve_codes(spec)
    save_codes(tmp_path / "held.npy", codes[:3])
    config = load_config(CONFIG, overrides=[f"data.codes={spec}", f"model.vocab_size={V}",
                                            f"data.eval_codes={tmp_path / 'held.npy'}"])
    model, dataset, heldout, train_codes = build(config)
    assert (model.config.code_length, model.config.vocab_size) == (L, V) and train_codes is None
    assert torch.equal(heldout, codes[:3]) and dataset is not None
    with pytest.raises(ConfigError, match="eval_codes"):
        build(load_config(CONFIG, overrides=[f"data.codes={spec}", f"model.vocab_size={V}"]))


def test_save_and_load(tmp_path):
    model = randomized(tiny(rotary=False))
    model.save_pretrained(tmp_path / "model")
    loaded = load_prior(tmp_path)
    assert (loaded.config.code_length, loaded.config.vocab_size, loaded.config.rotary) == (L, V, False)
    x = torch.randint(0, V + 1, (3, L))
    t = torch.full((3,), 0.5)
    torch.testing.assert_close(loaded(x, t), model(x, t), rtol=0, atol=0)


def test_code_statistics():
    real = markov_codes(400, L, V, seed=0)
    same = code_statistics(markov_codes(400, L, V, seed=0)[200:], real[:200])
    noise = code_statistics(torch.randint(0, V, (200, L)), real[:200])
    for key in ("marginal_tv", "pair_tv", "agreement_err"):
        assert 0 <= same[key] < noise[key]
    assert code_statistics(real[:1].expand(10, -1), real)["unique"] == pytest.approx(0.1)


# ---------------------------------------------------------------- training


def markov_config(tmp_path, steps, **extra):
    overrides = ["data.codes=synthetic:markov", "data.synthetic_num=600", f"model.code_length={L}",
                 f"model.vocab_size={V}", "model.size=micro", f"train.steps={steps}", "train.batch_size=32",
                 "train.lr=2e-3", "train.log_every=5", "train.checkpoint_every=4", "sample.num=8",
                 "sample.steps=4", f"run_dir={tmp_path / 'run'}"] + [f"{k}={v}" for k, v in extra.items()]
    return load_config(CONFIG, overrides=overrides)


def test_resume_equals_an_uninterrupted_run(tmp_path):
    whole = train(markov_config(tmp_path / "a", 8))
    train(markov_config(tmp_path / "b", 4))
    resumed = train(markov_config(tmp_path / "b", 8))
    for name in ("model.safetensors", "ema.safetensors"):
        from safetensors.torch import load_file

        a, b = (load_file(r.checkpoints / "8" / name) for r in (whole, resumed))
        assert all(torch.equal(a[k], b[k]) for k in a)
    losses = [{r["step"]: r["loss"] for r in run.read_metrics() if "loss" in r} for run in (whole, resumed)]
    assert losses[0] == {5: losses[1][5], 8: losses[1][8]} and losses[1][4] > 0
    rows = resumed.read_metrics()
    assert rows[0]["unigram_bits"] > 0 and [r["step"] for r in rows if "heldout_bits" in r] == [4, 8]


@pytest.mark.slow
def test_training_beats_the_unigram_baseline(tmp_path):
    run = train(markov_config(tmp_path, 300, **{"train.sample_every": 0}))
    rows = run.read_metrics()
    unigram = rows[0]["unigram_bits"]
    heldout = [r["heldout_bits"] for r in rows if "heldout_bits" in r][-1]
    assert heldout < unigram - 0.3


class Oracle(torch.nn.Module):
    """The exact denoiser of a known joint over (x_0, x_1): p(x0_i | unmasked positions), so the
    sampler's output distribution can be checked against the truth."""

    def __init__(self, joint: torch.Tensor):
        super().__init__()
        from types import SimpleNamespace

        self.joint = joint  # (V, V)
        self.config = SimpleNamespace(code_length=2, vocab_size=joint.shape[0], noise_eps=1e-3,
                                      time_conditioning=False)
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x_t, t):
        V = self.config.vocab_size
        w = self.joint.expand(len(x_t), V, V).clone()
        for i, keep in ((0, x_t[:, 0]), (1, x_t[:, 1])):
            seen = keep < V
            onehot = F.one_hot(keep.clamp(max=V - 1), V).float() * seen[:, None] + (~seen[:, None]).float()
            w = w * (onehot[:, :, None] if i == 0 else onehot[:, None, :])
        return torch.stack([w.sum(2), w.sum(1)], 1).clamp_min(1e-30).log()


@pytest.mark.parametrize("steps,eta", [(64, 0.0), (128, 0.01), (1, 0.0)])
def test_sampler_reproduces_a_known_joint(steps, eta):
    from dlc.prior import sample_codes

    joint = torch.tensor([[0.30, 0.02, 0.01], [0.02, 0.30, 0.01], [0.01, 0.03, 0.30]])
    joint = joint / joint.sum()
    codes = sample_codes(Oracle(joint), 4000, seed=0, steps=steps, eta=eta)
    freq = torch.bincount(codes[:, 0] * 3 + codes[:, 1], minlength=9).float().view(3, 3) / len(codes)
    independent = joint.sum(1)[:, None] * joint.sum(0)[None]
    # one step unmasks both positions at once, independently: the product of the marginals. The
    # corrector at the paper's eta = 0.01 keeps the joint (a large eta does not: each step then
    # unmasks a fixed fraction, so positions are often drawn together, independently)
    target = independent if steps == 1 else joint
    assert 0.5 * (freq - target).abs().sum() < 0.03
    assert 0.5 * (freq - (joint if steps == 1 else independent)).abs().sum() > 0.3


@pytest.mark.parametrize("preset", ["emoji", "fashion", "imagenet"])
def test_presets_load(preset):
    from dlc.stages import STAGES

    stage = STAGES["prior"]

    config = stage.load_config(preset, [])
    assert stage.config is CONFIG and config.train.steps > 0
    if preset == "imagenet":  # the paper's settings
        assert (config.model.size, config.model.code_length, config.model.vocab_size) == ("medium", 512, 256)
        assert (config.train.lr, config.train.batch_size, config.train.warmup_steps) == (3e-4, 512, 2500)
        assert (config.sample.steps, config.sample.eta) == (4096, 0.01)
