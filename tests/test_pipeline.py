"""DLCPipeline: every code source, seeding, output types, save/load, project-root loading, errors."""

import numpy as np
import pytest
import torch
from PIL import Image

from dlc.compose import compose
from dlc.dit import create_dit
from dlc.encoder import DLCEncoder
from dlc.errors import CheckpointError, CodeError, DLCError
from dlc.pipeline import Composition, DLCPipeline, PriorSampling, TextSampling, code_seed
from dlc.prior import create_prior
from dlc.text import CaptionTokenizer, TextToCode

L, V = 8, 16
CAPTIONS = ["red apple", "grinning face", "cat face"]


def randomized(model, seed):
    """A model whose zero-initialised (adaLN-Zero) layers are random too, so outputs depend on inputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def tiny_parts(code_length=L):
    from diffusers import FlowMatchEulerDiscreteScheduler

    torch.manual_seed(0)
    encoder = DLCEncoder(backbone_kwargs=dict(patch_size=8, embed_dim=32, depth=1, num_heads=2, reg_tokens=2),
                         image_size=32, code_length=code_length, vocab_size=V).eval()
    tokenizer = CaptionTokenizer.build(CAPTIONS, "bytes")
    text = TextToCode(L, V, tokenizer.vocab_size, max_text_length=12, width=32, depth=1, heads=2)
    text.tokenizer = tokenizer
    return dict(dit=randomized(create_dit("DiT-N/8", image_size=32, code_length=L, vocab_size=V), 1),
                scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0),
                encoder=encoder, prior=randomized(create_prior("micro", code_length=L, vocab_size=V), 2),
                text_model=randomized(text, 3))


@pytest.fixture(scope="module")
def pipe():
    pipe = DLCPipeline(**tiny_parts())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def emoji_images(n):
    import dlc

    return dlc.data.load("emoji", size=32, split="test").images[:n]


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_codes_give_pil_images_and_every_output_type(pipe):
    codes = torch.randint(0, V, (3, L), generator=torch.Generator().manual_seed(0))
    out = pipe(codes=codes, num_inference_steps=3)
    images = out.images
    assert len(images) == 3 and all(isinstance(im, Image.Image) and im.size == (32, 32) for im in images)
    assert torch.equal(out.codes, codes)
    as_uint8, used = pipe(codes=codes, num_inference_steps=3, output_type="uint8", return_dict=False)
    assert as_uint8.dtype == torch.uint8 and as_uint8.shape == (3, 3, 32, 32) and torch.equal(used, codes)
    assert np.array_equal(np.asarray(images[1]), as_uint8[1].permute(1, 2, 0).numpy())
    as_pt = pipe(codes=codes, num_inference_steps=3, output_type="pt").images
    assert 0 <= as_pt.min() and as_pt.max() <= 1 and as_pt.shape == (3, 3, 32, 32)
    assert pipe(codes=codes, num_inference_steps=3, output_type="np").images.shape == (3, 32, 32, 3)
    assert as_uint8.float().std() > 10 and not torch.equal(as_uint8[0], as_uint8[1])


def test_sample_i_depends_on_its_seed_and_index_only(pipe):
    codes = torch.randint(0, V, (4, L), generator=torch.Generator().manual_seed(1))
    run = dict(num_inference_steps=3, output_type="pt", generator=gen(7))
    whole = pipe(codes=codes, batch_size=4, **run).images
    # equal up to float rounding (BLAS sums in another order for another batch size)
    assert torch.allclose(whole, pipe(codes=codes, batch_size=1, **run).images, atol=1e-4)
    assert torch.allclose(whole[2:], pipe(codes=codes[2:], start_index=2, **run).images, atol=1e-4)
    assert torch.allclose(whole, pipe(codes=codes, batch_size=4, **run).images)  # the seed is read, not used up
    assert (whole - pipe(codes=codes, batch_size=4, **{**run, "generator": gen(8)}).images).abs().mean() > 0.05
    # the code matters: the same noise with another code gives another image
    assert (whole - pipe(codes=(codes + 1) % V, **run).images).abs().mean() > 1e-3


def test_a_list_of_generators_gives_each_image_its_own_seed(pipe):
    codes = torch.randint(0, V, (2, L), generator=torch.Generator().manual_seed(1))
    run = dict(num_inference_steps=3, output_type="pt")
    pair = pipe(codes=codes, generator=[gen(5), gen(7)], **run).images
    alone = pipe(codes=codes[1:], generator=gen(7), **run).images
    assert torch.allclose(pair[1], alone[0], atol=1e-4)  # image 1 depends on generator 1 alone
    assert torch.allclose(pair[0], pipe(codes=codes[:1], generator=[gen(5)], **run).images[0], atol=1e-4)
    drawn = pipe(num_images=2, generator=[gen(5), gen(7)], prior_sampling=PriorSampling(steps=4), **run).codes
    assert torch.equal(drawn[1], pipe(num_images=1, generator=gen(7), prior_sampling=PriorSampling(steps=4),
                                      **run).codes[0])
    with pytest.raises(DLCError, match="one per image"):
        pipe(codes=codes, generator=[gen(5)], **run)


def test_the_progress_bar_counts_denoising_steps(pipe, monkeypatch):
    totals, updates = [], []
    original = DLCPipeline.progress_bar

    def recording(self, iterable=None, total=None):
        bar = original(self, iterable, total)
        totals.append(total)
        monkeypatch.setattr(bar, "update", lambda n=1: updates.append(n))
        return bar

    monkeypatch.setattr(DLCPipeline, "progress_bar", recording)
    pipe(codes=torch.zeros(5, L, dtype=torch.long), num_inference_steps=3, batch_size=2, output_type="pt")
    assert totals == [9] and sum(updates) == 9  # 3 batches x 3 steps


def test_soft_codes_reproduce_hard_codes(pipe):
    codes = torch.randint(0, V, (2, L), generator=torch.Generator().manual_seed(2))
    soft = torch.nn.functional.one_hot(codes, V).float()
    run = dict(num_inference_steps=3, output_type="pt", generator=gen(0))
    assert torch.allclose(pipe(codes=codes, **run).images, pipe(codes=soft, **run).images, atol=1e-4)


def test_prior_text_images_and_compose_draw_the_codes(pipe):
    out = pipe(num_images=3, num_inference_steps=2, generator=gen(4), prior_sampling=PriorSampling(steps=8))
    assert torch.equal(out.codes, pipe.prior.sample(3, seed=code_seed(4), steps=8))
    assert out.codes.shape == (3, L) and 0 <= out.codes.min() and out.codes.max() < V and len(out.images) == 3

    out = pipe(prompt=["red apple", "cat face"], num_images_per_prompt=2, num_inference_steps=2)
    assert torch.equal(out.codes, pipe.text_model.generate(["red apple", "cat face"], num_per_prompt=2,
                                                           seed=code_seed(0)))
    hot = pipe(prompt="red apple", num_inference_steps=2, text_sampling=TextSampling(temperature=5.0, steps=2))
    assert torch.equal(hot.codes, pipe.text_model.generate(["red apple"], seed=code_seed(0), temperature=5.0, steps=2))

    real = emoji_images(2)
    out = pipe(image=real, num_inference_steps=2)
    assert torch.equal(out.codes, pipe.encoder.encode(real))
    pil = [Image.fromarray(im.permute(1, 2, 0).numpy()) for im in real]
    assert torch.equal(pipe(image=pil, num_inference_steps=2).codes, out.codes)
    assert torch.equal(pipe(image=pil[1], num_inference_steps=2).codes, out.codes[1:])

    a, b = out.codes
    composed = pipe(compose=[a, b], num_images=6, num_inference_steps=2, generator=gen(3)).codes
    assert torch.equal(composed, compose([a, b], n=6, seed=code_seed(3)))
    assert ((composed == a) | (composed == b)).all() and (composed[:, a == b] == a[a == b]).all()
    later = pipe(compose=[a, b], num_images=2, start_index=4, num_inference_steps=2, generator=gen(3)).codes
    assert torch.equal(later, composed[4:])
    averaged = pipe(compose=[a, b], num_images=6, num_inference_steps=2, generator=gen(3),
                    composition=Composition(method="average")).codes
    assert torch.equal(averaged, compose([a, b], n=6, seed=code_seed(3), method="average"))
    from_images = pipe(compose=pil, num_images=4, num_inference_steps=2).codes
    assert ((from_images == a) | (from_images == b)).all()


def test_save_and_load_round_trip_keeps_every_part(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "saved")
    loaded = DLCPipeline.from_pretrained(tmp_path / "saved")
    loaded.set_progress_bar_config(disable=True)
    assert {type(getattr(loaded, n)).__name__ for n in ("dit", "encoder", "prior", "text_model")} == \
        {"DiT", "DLCEncoder", "CodePrior", "TextToCode"}
    run = dict(num_inference_steps=2, output_type="uint8", generator=gen(1), prior_sampling=PriorSampling(steps=4))
    assert torch.equal(pipe(num_images=2, **run).images, loaded(num_images=2, **run).images)
    assert torch.equal(pipe(prompt=["cat face"], **run).images, loaded(prompt=["cat face"], **run).images)
    assert torch.equal(pipe(image=emoji_images(2), **run).images, loaded(image=emoji_images(2), **run).images)
    half = DLCPipeline.from_pretrained(tmp_path / "saved", torch_dtype=torch.bfloat16)
    assert half.dit.dtype == torch.bfloat16 and half.prior.dtype == torch.bfloat16


def test_project_root_with_run_directories(tmp_path):
    from dlc.stages import STAGES

    parts = tiny_parts()
    stage = STAGES["dit"]
    config = stage.load_config("emoji", [
        "condition.kind=random", f"condition.code_length={L}", f"condition.random_vocab={V}", "model.arch=DiT-N/8",
        "train.steps=1", "train.batch_size=4", "train.sample_every=0", "sample.num=2", "sample.steps=2",
        f"run_dir={tmp_path / 'dit'}"])
    stage.train(config)
    parts["prior"].save_pretrained(tmp_path / "prior" / "model")
    parts["encoder"].save_pretrained(tmp_path / "encoder" / "model")
    loaded = DLCPipeline.from_pretrained(tmp_path)
    assert loaded.prior is not None and loaded.encoder is not None and loaded.text_model is None
    assert type(loaded.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    assert len(loaded(num_images=2, num_inference_steps=2, prior_sampling=PriorSampling(steps=4)).images) == 2
    with pytest.raises(DLCError, match="no text model"):
        loaded(prompt=["red apple"])
    as_bf16 = DLCPipeline.from_pretrained(tmp_path, torch_dtype=torch.bfloat16)
    assert as_bf16.dit.dtype == torch.bfloat16 and as_bf16.encoder.dtype == torch.bfloat16


def test_unconditional_dit_needs_no_codes():
    from diffusers import FlowMatchEulerDiscreteScheduler

    pipe = DLCPipeline(dit=randomized(create_dit("DiT-N/8", image_size=32, code_length=0), 0),
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0))
    pipe.set_progress_bar_config(disable=True)
    out = pipe(num_images=2, num_inference_steps=2, output_type="uint8")
    assert out.images.shape == (2, 3, 32, 32) and out.codes is None
    with pytest.raises(CodeError, match="unconditional"):
        pipe(codes=torch.zeros(1, L, dtype=torch.long))


def test_bad_requests_are_clear_errors(pipe, tmp_path):
    with pytest.raises(CodeError, match=rf"shape \(batch, {L}\)"):
        pipe(codes=torch.zeros(2, L + 1, dtype=torch.long))
    with pytest.raises(CodeError, match=rf"\[0, {V}\)"):
        pipe(codes=torch.full((1, L), V))
    with pytest.raises(DLCError, match="one code source"):
        pipe(codes=torch.zeros(1, L, dtype=torch.long), prompt=["red apple"])
    with pytest.raises(DLCError, match="num_images"):
        pipe()
    with pytest.raises(DLCError, match="nothing to generate: codes holds no sample"):
        pipe(codes=torch.zeros(0, L, dtype=torch.long))
    with pytest.raises(DLCError, match="nothing to generate: prompt holds no sample"):
        pipe(prompt=[])
    with pytest.raises(ValueError, match="output_type"):
        pipe(num_images=1, output_type="jpeg")
    with pytest.raises(DLCError, match="two or more"):
        pipe(compose=[torch.zeros(L, dtype=torch.long)])
    with pytest.raises(CheckpointError, match="model_index.json"):
        DLCPipeline.from_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="neither a local folder nor a Hugging Face hub repo"):
        DLCPipeline.from_pretrained(tmp_path / "missing")
    mismatched = tiny_parts(code_length=L // 2)
    with pytest.raises(DLCError, match="different encoders"):
        DLCPipeline(**mismatched)
