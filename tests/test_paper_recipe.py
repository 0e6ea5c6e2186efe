"""Facts of the paper's recipe (the authors' DINOv2 fork and DiT code) that the presets rely on."""

import math

import pytest
import torch

from dlc.dit.diffusion import DDPMObjective
from dlc.encoder import DLCEncoder
from dlc.encoder import training as et
from dlc.stages import STAGES
from dlc.training import default_param_groups, group_lr_factor, lr_factor, make_optimizer


def test_learned_variance_bound_does_not_clip_x0_outside_minus_one_one():
    """DiT/ADM fit the variance with clip_denoised=False: the predicted x0 of latents outside
    [-1, 1] enters the posterior mean as it is. Hand computation of the KL term (in bits) at t=500."""
    objective = DDPMObjective()
    x0 = torch.full((1, 1, 1, 1), 3.0)
    xt = torch.full((1, 1, 1, 1), 2.0)
    eps = torch.full((1, 1, 1, 1), -0.5)
    frac = torch.full((1, 1, 1, 1), 0.2)
    t = torch.tensor([500])

    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    ab = torch.cumprod(1 - betas, 0)
    a, a_prev, b = ab[500].item(), ab[499].item(), betas[500].item()
    c1, c2 = b * math.sqrt(a_prev) / (1 - a), (1 - a_prev) * math.sqrt(1 - b) / (1 - a)
    pred_x0 = (2.0 - math.sqrt(1 - a) * -0.5) / math.sqrt(a)  # about 3.2: a clamp would make it 1
    true_mean, pred_mean = c1 * 3.0 + c2 * 2.0, c1 * pred_x0 + c2 * 2.0
    true_logvar = math.log(b * (1 - a_prev) / (1 - a))
    pred_logvar = 0.6 * math.log(b) + 0.4 * true_logvar
    kl = 0.5 * (-1 + pred_logvar - true_logvar + math.exp(true_logvar - pred_logvar)
                + (true_mean - pred_mean) ** 2 * math.exp(-pred_logvar))
    expected = kl / math.log(2.0)

    got = objective._vlb(x0, xt, t, eps, frac).item()
    assert got == pytest.approx(expected, rel=1e-4)


# ---- the SSL losses as DINOv2 balances them ----------------------------------------------------


def test_koleo_is_summed_over_the_two_global_crops():
    """DINOv2 adds 0.1 * KoLeo of EACH global crop (never across crops): crop A holds two
    orthogonal unit vectors (nearest distance sqrt 2), crop B two opposite ones (distance 2)."""
    crop_a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    crop_b = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    got = et.koleo_over_crops(torch.cat([crop_a, crop_b]), batch=2)
    assert got.item() == pytest.approx(-math.log(math.sqrt(2)) - math.log(2.0), rel=1e-5)


def test_ibot_loss_divides_by_all_global_crops_on_a_2x2_case():
    """2 crops of 2 patches; crop 0 masks both, crop 1 none. DINOv2: mean over crop 0's masked
    patches of the cross-entropy, divided by the 2 global crops (not by the 1 masked crop)."""
    masks = torch.tensor([[True, True], [False, False]])
    student = torch.tensor([[0.0, math.log(3.0)], [math.log(2.0), 0.0]])  # softmax: (1/4, 3/4), (2/3, 1/3)
    teacher = torch.tensor([[0.0, 1.0], [0.5, 0.5]])
    ce_0 = -math.log(3 / 4)
    ce_1 = -(0.5 * math.log(2 / 3) + 0.5 * math.log(1 / 3))
    got = et.ibot_loss(student, teacher, masks, student_temp=1.0)
    assert got.item() == pytest.approx((ce_0 + ce_1) / 2 / 2, rel=1e-5)


def test_exactly_half_the_global_crops_are_masked_with_ratios_spread_over_the_range():
    torch.manual_seed(0)
    targets = et.mask_targets(8, 100, prob=0.5, ratio=(0.1, 0.5))
    masked = targets[targets > 0].sort().values
    assert len(masked) == 4
    # one target in each quarter of [10, 50] patches: [10, 20), [20, 30), [30, 40), [40, 50)
    assert [int(k) // 10 for k in masked] == [1, 2, 3, 4]


def test_masks_are_blocks_of_at_most_the_target_size():
    torch.manual_seed(0)
    grid = 14
    for target in (20, 50, 98):
        mask = et.block_mask(grid, target).view(grid, grid)
        assert 0.5 * target <= mask.sum() <= target
        # rectangles: almost every masked patch has a masked 4-neighbour (i.i.d. masking at 10%
        # leaves two thirds of them isolated)
        padded = torch.nn.functional.pad(mask, (1, 1, 1, 1))
        neighbour = padded[:-2, 1:-1] | padded[2:, 1:-1] | padded[1:-1, :-2] | padded[1:-1, 2:]
        assert neighbour[mask].float().mean() > 0.85


def test_imagenet_preset_follows_dinov2():
    config = STAGES["encoder"].load_config("imagenet", [])
    steps, epoch = config.train.steps, 1250  # DINOv2's epoch: 1,250 iterations, 100 epochs
    assert steps == 100 * epoch
    assert config.ssl.teacher_temp_warmup * steps == 30 * epoch
    assert config.ssl.koleo_weight == 0.1 and config.ssl.mask_prob == 0.5
    assert tuple(config.ssl.mask_ratio) == (0.1, 0.5)
    assert config.ssl.layer_decay == 0.9 and config.ssl.patch_embed_lr_scale == 0.2
    assert config.ssl.freeze_last_layer_steps == epoch and config.model.drop_path == 0.3
    assert et.scaled_lr(config.train, config.ssl).lr == pytest.approx(1e-4 * math.sqrt(512 / 1024))
    assert config.model.sem_eps == 1e-6 and config.model.resize_input


# ---- DINOv2's fine-tuning rates --------------------------------------------------------------


def test_learning_rate_of_each_parameter_group_at_a_step():
    """Layer decay 0.9 over a 2-block ViT: block i (1-based) at 0.9 ** (3 - i), the embeddings
    at 0.9 ** 3 (the patch embedding x 0.2 more), the SEM and heads at 1; the DINO head's
    prototypes at 0 until step 10. Checked through the real optimizer and scheduler."""
    config = STAGES["encoder"].load_config("emoji", [
        "model.backbone_kwargs.embed_dim=32", "model.backbone_kwargs.depth=2", "model.backbone_kwargs.num_heads=2",
        "model.code_length=8", "model.vocab_size=16", "ssl.prototypes=64", "ssl.head_hidden=32",
        "ssl.head_bottleneck=16", "ssl.layer_decay=0.9", "ssl.patch_embed_lr_scale=0.2",
        "ssl.freeze_last_layer_steps=10", "train.lr=1e-3", "train.warmup_steps=4", "train.steps=100"])
    model = et.build_model(config)
    cfg = config.train
    optimizer = make_optimizer(model, cfg)
    factors = [group_lr_factor(group, cfg) for group in optimizer.param_groups]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factors)
    for _ in range(12):
        optimizer.step()
        scheduler.step()  # now at step 12: after the warm-up, cosine
    base = 1e-3 * lr_factor(12, cfg)
    lr_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    named = dict(model.named_parameters())
    expected = {
        "encoder.vit.patch_embed.proj.weight": 0.9 ** 3 * 0.2,
        "encoder.vit.pos_embed": 0.9 ** 3,
        "encoder.vit.cls_token": 0.9 ** 3,
        "encoder.vit.blocks.0.attn.qkv.weight": 0.9 ** 2,
        "encoder.vit.blocks.1.mlp.fc1.bias": 0.9,
        "encoder.sem.linear.weight": 1.0,
        "head.mlp.0.weight": 1.0,
        "head.prototypes": 1.0,
    }
    for name, scale in expected.items():
        assert lr_of[id(named[name])] == pytest.approx(base * scale, rel=1e-6), name
    assert factors[next(i for i, g in enumerate(optimizer.param_groups)
                        if any(p is named["head.prototypes"] for p in g["params"]))](9) == 0.0
    decays = {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}
    assert decays[id(named["encoder.vit.blocks.0.attn.qkv.weight"])] == cfg.weight_decay
    assert decays[id(named["encoder.vit.blocks.1.mlp.fc1.bias"])] == 0.0


def test_stochastic_depth_is_uniform_on_the_student_only():
    config = STAGES["encoder"].load_config("emoji", [
        "model.backbone_kwargs.embed_dim=32", "model.backbone_kwargs.depth=3", "model.backbone_kwargs.num_heads=2",
        "model.drop_path=0.3", "ssl.prototypes=64", "ssl.head_hidden=32", "ssl.head_bottleneck=16"])
    vit = et.build_model(config).encoder.vit
    assert [b.drop_path1.drop_prob for b in vit.blocks] == [0.3, 0.3, 0.3]
    x = torch.randn(2, 5, 32)
    vit.eval()  # the teacher (an EMA copy in eval mode) never drops
    assert torch.equal(vit.blocks[0](x), vit.blocks[0](x))


# ---- codes see the whole image -----------------------------------------------------------------


def whole_image_encoder(resize: bool) -> DLCEncoder:
    torch.manual_seed(0)
    return DLCEncoder(backbone_kwargs=dict(patch_size=8, embed_dim=32, depth=1, num_heads=2, reg_tokens=2),
                      image_size=32, input_size=40, code_length=8, vocab_size=16, resize_input=resize).eval()


def test_resized_encoder_input_sees_a_marker_in_the_corner():
    images = torch.zeros(1, 3, 40, 40, dtype=torch.uint8)
    marked = images.clone()
    marked[:, :, :3, :3] = 255  # outside the central 32 x 32 crop
    resized, cropped = whole_image_encoder(True), whole_image_encoder(False)
    assert not torch.equal(resized.preprocess(images), resized.preprocess(marked))
    assert torch.equal(cropped.preprocess(images), cropped.preprocess(marked))


def test_resizing_keeps_flip_consistency():
    torch.manual_seed(1)
    images = torch.randint(0, 256, (2, 3, 40, 40), dtype=torch.uint8)
    encoder = whole_image_encoder(True)
    flipped_first = encoder.preprocess(images.flip(-1))
    assert torch.allclose(flipped_first, encoder.preprocess(images).flip(-1), atol=1e-5)


def test_without_the_recipe_the_encoder_keeps_the_two_default_groups_in_order():
    """The emoji preset (no layer decay, no frozen head) optimises exactly as before the hook."""
    config = STAGES["encoder"].load_config("emoji", ["ssl.prototypes=64", "ssl.head_hidden=32", "ssl.head_bottleneck=16"])
    model = et.build_model(config)
    groups = make_optimizer(model, config.train).param_groups
    default = default_param_groups(model, config.train)
    assert [[id(p) for p in g["params"]] for g in groups] == [[id(p) for p in g["params"]] for g in default]
    assert [g["lr_scale"] for g in groups] == [1.0, 1.0] and [g["weight_decay"] for g in groups] == [0.04, 0.0]


def test_imagenet_dit_code_table_starts_as_the_authors():
    """The authors' SEMEmbedder: entries N(0, 1/width) and one null vector copied to all L positions
    (so the averaged null has that vector's scale); the emoji preset keeps DiT's N(0, 0.02) with a
    null entry of its own per position."""
    from dlc.dit.training import create_model

    L, V, width = 64, 32, 256
    paper = STAGES["dit"].load_config("imagenet", [f"model.width={width}", "model.heads=4", "model.depth=1"])
    assert paper.model.code_init == "authors"
    torch.manual_seed(0)
    table = create_model(paper, 4, 32, L, V).code_embedder.table.detach()
    assert table[:, :V].std().item() == pytest.approx(width ** -0.5, rel=0.02)
    assert torch.equal(table[:, V], table[:1, V].expand(L, -1))  # one null vector, copied
    assert table[0, V].std().item() == pytest.approx(width ** -0.5, rel=0.15)

    emoji = STAGES["dit"].load_config("emoji", [f"model.width={width}", "model.heads=4", "model.depth=1"])
    assert emoji.model.code_init == "dit"
    table = create_model(emoji, 3, 32, L, V).code_embedder.table.detach()
    assert table.std().item() == pytest.approx(0.02, rel=0.02)
    assert not torch.equal(table[0, V], table[1, V])


def test_a_resized_preset_dit_keeps_the_arch_patch_and_learned_variance():
    """model.depth/width/heads shrink DiT-XL/2 for a rehearsal: patch 2 and the 2C outputs of the
    learned variance stay; a width the heads do not divide is refused by name."""
    from dlc.dit.training import create_model
    from dlc.errors import ConfigError

    config = STAGES["dit"].load_config("imagenet", ["model.depth=2", "model.width=64", "model.heads=2"])
    model = create_model(config, 4, 32, 16, 32)
    c = model.config
    assert (c.depth, c.hidden_size, c.num_heads, c.patch_size, c.learn_sigma) == (2, 64, 2, 2, True)
    assert model(torch.randn(1, 4, 32, 32), torch.tensor([10.0]), torch.zeros(1, 16, dtype=torch.long)).shape == (1, 8, 32, 32)
    full = STAGES["dit"].load_config("imagenet")
    with torch.device("meta"):
        xl = create_model(full, 4, 32, 512, 256)
    assert (xl.config.depth, xl.config.hidden_size, xl.config.num_heads) == (28, 1152, 16)
    with pytest.raises(ConfigError, match="model.width 64 must be a multiple of model.heads 3"):
        create_model(STAGES["dit"].load_config("imagenet", ["model.width=64", "model.heads=3"]), 4, 32, 16, 32)
