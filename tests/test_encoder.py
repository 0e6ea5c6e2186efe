import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dlc.data import to_float
from dlc.encoder import DLCEncoder
from dlc.encoder import training as et
from dlc.errors import ConfigError, DataError
from dlc.eval.codes import knn_accuracy, linear_probe, one_hot, usage_stats
from dlc.stages import STAGES

TINY = dict(patch_size=8, embed_dim=32, depth=1, num_heads=2, reg_tokens=2)


def tiny_encoder(**kwargs):
    torch.manual_seed(0)
    return DLCEncoder(backbone_kwargs=TINY, image_size=32, code_length=8, vocab_size=16, **kwargs).eval()


def tiny_config(tmp_path, *overrides):
    return STAGES["encoder"].load_config("emoji", [
        f"run_dir={tmp_path / 'run'}", "model.backbone_kwargs.embed_dim=32", "model.backbone_kwargs.depth=1",
        "model.backbone_kwargs.num_heads=2", "model.code_length=8", "model.vocab_size=16",
        "ssl.prototypes=64", "ssl.head_hidden=32", "ssl.head_bottleneck=16", "crops.local_crops=2",
        "train.batch_size=16", "train.warmup_steps=0", "train.log_every=1", *overrides])


def test_encode_probs_features_shapes_and_dtypes(emoji_train):
    enc = tiny_encoder()
    images = emoji_train.images[:6]
    codes = enc.encode(images)
    assert codes.shape == (6, 8) and codes.dtype == torch.long
    assert 0 <= codes.min() and codes.max() < 16
    probs = enc.probs(images, tau=0.5)
    assert probs.shape == (6, 8, 16)
    assert torch.allclose(probs.sum(-1), torch.ones(6, 8), atol=1e-5)
    assert torch.equal(probs.argmax(-1), codes)
    assert enc.features(images).shape == (6, 32)
    # uint8 and the library's float [-1, 1] give the same codes
    assert torch.equal(enc.encode(to_float(images)), codes)


def test_save_load_round_trip_gives_identical_codes(tmp_path, emoji_train):
    enc = tiny_encoder()
    images = emoji_train.images[:10]
    enc.save_pretrained(tmp_path / "run" / "model")
    for path in (tmp_path / "run" / "model", tmp_path / "run"):  # a model folder or a run directory
        loaded = DLCEncoder.from_pretrained(path)
        assert loaded.config.code_length == 8 and loaded.config.vocab_size == 16
        assert torch.equal(loaded.encode(images), enc.encode(images))
        assert torch.equal(loaded.probs(images), enc.probs(images))


@pytest.mark.parametrize("shape", [(2, 1, 32, 32), (2, 3, 28, 28), (3, 32, 32)])
def test_wrong_size_or_channels_is_a_clear_error(shape):
    with pytest.raises(DataError, match=r"expects images of shape \(B, 3, 32, 32\)"):
        tiny_encoder().encode(torch.zeros(shape, dtype=torch.uint8))


def test_larger_inputs_are_centre_cropped():
    enc = DLCEncoder(backbone_kwargs=TINY, image_size=32, input_size=40, code_length=8, vocab_size=16).eval()
    images = torch.randint(0, 256, (2, 3, 40, 40), dtype=torch.uint8)
    assert torch.allclose(enc.preprocess(images), enc.normalize((to_float(images[:, :, 4:36, 4:36]) + 1) / 2))
    with pytest.raises(DataError):
        enc.encode(images[:, :, :32, :32])


def test_timm_registers_backbone_by_name_without_weights(tmp_path):
    kwargs = dict(depth=1, embed_dim=64, num_heads=2)
    enc = DLCEncoder(backbone="vit_small_patch14_reg4_dinov2", backbone_kwargs=kwargs, image_size=28,
                     code_length=4, vocab_size=8)
    assert enc.vit.num_prefix_tokens == 5  # CLS + 4 registers feed the SEM
    assert enc.sem.linear.in_features == 5 * 64
    assert enc.encode(torch.zeros(1, 3, 28, 28, dtype=torch.uint8)).shape == (1, 4)
    # pretrained weights from a local file go through timm's real loading path
    import timm
    from safetensors.torch import save_file

    source = timm.create_model("vit_small_patch14_reg4_dinov2", img_size=28, num_classes=0, **kwargs)
    save_file(source.state_dict(), tmp_path / "weights.safetensors")
    enc.load_backbone_weights(str(tmp_path / "weights.safetensors"))
    assert torch.equal(enc.vit.cls_token, source.cls_token)
    assert torch.equal(enc.vit.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)


def test_multicrop_and_masks():
    cfg = et.CropConfig(global_size=32, local_crops=3, local_size=16)
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    g, local = et.multicrop(images, cfg)
    assert g.shape == (10, 3, 32, 32) and local.shape == (15, 3, 16, 16)
    assert g.min() >= 0 and g.max() <= 1
    # a full-image crop without flip or jitter is the image itself
    full = et.random_resized_crops((to_float(images) + 1) / 2, 32, (1.0, 1.0), flip=False, ratio=(1.0, 1.0))
    assert torch.allclose(full, (to_float(images) + 1) / 2, atol=1e-5)
    masks = et.random_masks(400, 8, prob=0.5, ratio=(0.1, 0.5), device="cpu")  # 8 x 8 patches
    assert masks.shape == (400, 64) and masks.any(1).sum() == 200
    assert 0.1 < masks[masks.any(1)].float().mean() < 0.5


def test_koleo_prefers_spread_points():
    torch.manual_seed(0)
    spread = torch.eye(8)
    clustered = torch.ones(8, 8) + 0.01 * torch.randn(8, 8)
    assert et.koleo(spread) < et.koleo(clustered)


def test_teacher_schedules():
    ssl = et.SSLConfig(teacher_temp=(0.04, 0.07), teacher_temp_warmup=0.5, momentum=(0.992, 1.0))
    assert et.teacher_temp(ssl, 0, 100) == pytest.approx(0.04)
    assert et.teacher_temp(ssl, 50, 100) == pytest.approx(0.07)
    m = et.momentum_schedule(ssl, 100)
    assert m(0) == pytest.approx(0.992) and m(100) == pytest.approx(1.0) and m(0) < m(50) < m(100)


def test_training_losses_decrease_on_real_emoji(tmp_path):
    # DINO's loss first rises (student and teacher start identical, so they agree) and then falls;
    # KoLeo falls as the codes spread out.
    run = et.train(tiny_config(tmp_path, "train.steps=60", "train.lr=5e-4", "train.checkpoint_every=1000"))
    rows = run.read_metrics()
    assert len(rows) == 60
    dino, koleo = np.array([r["dino"] for r in rows]), np.array([r["koleo"] for r in rows])
    peak = int(dino.argmax())
    assert peak < 40 and dino[peak] - dino[-5:].mean() > 0.2
    assert koleo[-10:].mean() < koleo[:10].mean() - 0.5
    enc = DLCEncoder.from_pretrained(run.root)  # model/ holds the encoder alone
    assert enc.config.code_length == 8 and not any("head" in k for k in enc.state_dict())


def test_ibot_option_trains_and_resume_matches_uninterrupted(tmp_path, monkeypatch):
    # with DINOv2's fine-tuning recipe too: layer-wise rates, a frozen head across the resume, drop path
    overrides = ["ssl.ibot_weight=1.0", "train.steps=4", "train.checkpoint_every=2", "ssl.layer_decay=0.9",
                 "ssl.patch_embed_lr_scale=0.2", "ssl.freeze_last_layer_steps=3", "model.drop_path=0.1",
                 "ssl.lr_batch_scaling=true"]
    full = et.train(tiny_config(tmp_path / "a", *overrides))
    # the same run killed during step 3 (after the checkpoint at step 2), then started again
    call = et.SSLLoss.__call__

    def interrupted(self, model, batch, info):
        if info.step == 2:
            raise KeyboardInterrupt
        return call(self, model, batch, info)

    with monkeypatch.context() as patch:
        patch.setattr(et.SSLLoss, "__call__", interrupted)
        with pytest.raises(KeyboardInterrupt):
            et.train(tiny_config(tmp_path / "b", *overrides))
    resumed = et.train(tiny_config(tmp_path / "b", *overrides))
    assert "ibot" in full.read_metrics()[-1]
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = load_file(full.checkpoints / "4" / name), load_file(resumed.checkpoints / "4" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    state_a = torch.load(full.checkpoints / "4" / "state.pt", weights_only=True)
    state_b = torch.load(resumed.checkpoints / "4" / "state.pt", weights_only=True)
    assert torch.equal(state_a["extra"]["center"]["center"], state_b["extra"]["center"]["center"])
    assert state_a["extra"]["center"]["center"].abs().sum() > 0
    at_2 = torch.load(full.checkpoints / "2" / "state.pt", weights_only=True)["optimizer"]["param_groups"]
    lrs = sorted({group["lr"] for group in at_2})
    assert lrs[0] == 0 and len(lrs) >= 4  # the frozen head at 0, the other groups each at its own rate


def test_distill_loss_is_zero_for_the_standardised_target_and_near_one_for_noise():
    target = torch.rand(64, 2048, generator=torch.Generator().manual_seed(0)) + 5  # all positive, as after a ReLU
    standardised = (target - target.mean(0)) / target.std(0)
    assert et.distill_loss(3 * standardised, target).item() == pytest.approx(0, abs=1e-5)  # scale-free
    assert et.distill_loss(torch.randn(64, 2048), target).item() == pytest.approx(1, abs=0.05)


def needs_inception():
    from dlc.eval.fidelity import InceptionWeightsError, inception_trunk

    try:
        inception_trunk()
    except InceptionWeightsError as e:
        pytest.skip(f"no offline TorchScript Inception here: {e}")


def test_distillation_from_inception_trains_and_stays_out_of_the_saved_encoder(tmp_path):
    needs_inception()
    # distillation alone: the codes learn to predict the pretrained features of their crops
    run = et.train(tiny_config(tmp_path, "ssl.distill_weight=1.0", "ssl.dino_weight=0", "ssl.koleo_weight=0",
                               "train.steps=20", "train.lr=3e-3", "train.checkpoint_every=1000"))
    distill = np.array([r["distill"] for r in run.read_metrics()])
    assert len(distill) == 20 and distill[-5:].mean() < distill[:5].mean() - 0.05
    enc = DLCEncoder.from_pretrained(run.root)
    assert not any("distill" in k or "head" in k for k in enc.state_dict())


def test_a_frozen_inception_backbone_reads_standardised_averaged_maps_and_is_not_saved(tmp_path, emoji_train):
    needs_inception()
    enc = DLCEncoder(backbone="fid_inception", backbone_kwargs={"blocks": ["Conv2d_4a_3x3", "Mixed_5b"]},
                     code_length=8, vocab_size=16).train()
    assert enc.frozen_backbone and not enc.vit.trunk.training  # train() leaves the trunk's batch norms alone
    assert not any(p.requires_grad for p in enc.vit.trunk.parameters())
    x = to_float(emoji_train.images[:64])
    enc.vit.calibrate(x)
    tokens = enc.tokens(x)
    assert tokens.shape == (64, 1, 192 + 256)  # the two blocks' averaged maps side by side
    assert tokens.mean(0).abs().max() < 1e-3 and torch.allclose(tokens.std(0), torch.ones(1, 448), atol=1e-3)
    assert not any(k.startswith("vit.trunk") for k in enc.state_dict())  # the FID file holds those weights
    enc.save_pretrained(tmp_path)
    loaded = DLCEncoder.from_pretrained(tmp_path)  # the standardisation is saved with the SEM
    assert torch.equal(loaded.encode(emoji_train.images[:8]), enc.encode(emoji_train.images[:8]))
    with pytest.raises(ValueError, match="iBOT"):
        enc.tokens(x, masks=torch.zeros(64, 64, dtype=torch.bool))


def test_a_frozen_backbone_trains_only_the_sem_and_refuses_what_needs_a_vit(tmp_path):
    needs_inception()
    frozen = ("model.backbone=fid_inception", "model.backbone_kwargs={blocks: [Mixed_5b], input_px: 75}",
              "train.steps=8", "train.lr=3e-3", "train.checkpoint_every=1000")
    run = et.train(tiny_config(tmp_path, *frozen))
    dino = np.array([r["dino"] for r in run.read_metrics()])
    assert len(dino) == 8 and np.isfinite(dino).all()
    trained = DLCEncoder.from_pretrained(run.root)
    assert trained.frozen_backbone and trained.config.backbone_kwargs == {"blocks": ["Mixed_5b"], "input_px": 75}
    assert trained.vit.feature_std.min() > 0 and trained.vit.feature_mean.abs().sum() > 0  # calibrated on the data
    for bad, message in (("ssl.ibot_weight=1.0", "ibot_weight needs a ViT"), ("model.drop_path=0.1", "drop_path needs a ViT"),
                         ("model.pretrained=timm", "leave model.pretrained empty")):
        with pytest.raises(ConfigError, match=message):
            et.train(tiny_config(tmp_path / bad, *frozen, bad))
    with pytest.raises(ConfigError, match="unknown Inception block 'Mixed_9z'; known: Conv2d_1a_3x3"):
        DLCEncoder(backbone="fid_inception", backbone_kwargs={"blocks": ["Mixed_9z"]})


def test_usage_stats_on_known_codes():
    codes = torch.tensor([[0, 1], [0, 2], [0, 1], [3, 3]])
    s = usage_stats(codes, vocab_size=4)
    assert s["distinct_codes"] == 3 and s["images_sharing_a_code"] == 2 and s["largest_shared_group"] == 2
    assert s["values_used_min"] == 2 and s["values_used_mean"] == 2.5
    # position 0: p = (3/4, 1/4) -> 0.811 bits; position 1: (1/2, 1/4, 1/4) -> 1.5 bits
    assert s["entropy_bits_mean"] == pytest.approx((0.811278 + 1.5) / 2, abs=1e-4)


def test_probe_and_knn_on_separable_codes():
    torch.manual_seed(0)
    y = torch.randint(0, 3, (90,))
    codes = torch.stack([y, torch.randint(0, 4, (90,))], 1)  # position 0 is the label
    x = one_hot(codes, 4)
    assert linear_probe(x[:60], y[:60], x[60:], y[60:], standardize=False)["accuracy"] == 1.0
    assert knn_accuracy(x[:60], y[:60], x[60:], y[60:], k=5) > 0.9
    noise = one_hot(torch.randint(0, 4, (90, 2)), 4)
    assert linear_probe(noise[:60], y[:60], noise[60:], y[60:])["accuracy"] < 0.7


def test_dlc_encode_npy_resumes_and_shards_join(tmp_path, emoji_train):
    from dlc.cli import main

    enc = tiny_encoder()
    enc.save_pretrained(tmp_path / "enc")
    test = __import__("dlc").data.load("emoji", size=32, split="test")
    expected = enc.encode(test.images).numpy()
    out = tmp_path / "codes" / "test.npy"
    # a finished first chunk from an interrupted run is kept, not recomputed
    parts = tmp_path / "codes" / "test.npy.parts"
    parts.mkdir(parents=True)
    np.save(parts / "000000.npy", np.full((100, 8), 7, dtype=np.uint16))
    args = ["encode", "--run", str(tmp_path / "enc"), "--data", "emoji", "--split", "test", "--chunk", "100"]
    assert main([*args, "--out", str(out)]) == 0
    codes = np.load(out)
    assert codes.dtype == np.uint16 and codes.shape == (len(test), 8)
    assert (codes[:100] == 7).all() and np.array_equal(codes[100:], expected[100:])
    assert not parts.exists()

    assert main([*args, "--shards", str(tmp_path / "shards")]) == 0
    shards = __import__("dlc").data.load(f"webdataset:{tmp_path}/shards/shard-{{000000..000003}}.tar")
    items = list(shards)
    assert [int(i["key"]) for i in items] == list(range(len(test)))
    assert all(np.array_equal(i["code"].numpy(), expected[int(i["key"])]) for i in items[::37])
    assert items[5]["caption"] == test.captions[5] and items[5]["label"] == int(test.labels[5])
    assert torch.equal(items[5]["image"], test.images[5])


def test_dlc_eval_codes_writes_json(tmp_path, capsys):
    from dlc.cli import main

    tiny_encoder().save_pretrained(tmp_path / "enc")
    out = tmp_path / "q.json"
    assert main(["eval", "codes", "--run", str(tmp_path / "enc"), "--data", "emoji", "--train-limit", "300",
                 "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["usage"]["images"] == 300
    assert 0 <= result["codes"]["linear_probe"] <= 1 and "probe ratio" in capsys.readouterr().out
