"""`dlc convert`: the authors' released checkpoints -> our models and a DLCPipeline folder.

No real weights can be downloaded here, so each test builds a tiny source state dict with the
authors' key names and shapes and random values, converts it, and compares the converted model with
a reference forward written here from the published equations (not with our own model code)."""

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dlc.convert import convert_dit, dit_pipeline
from dlc.errors import CheckpointError
from dlc.pipeline import DLCPipeline, code_seed

# ---- the DiT -----------------------------------------------------------------------------------

WIDTH, HEADS, DEPTH, PATCH, CHANNELS, GRID, L, V = 32, 2, 2, 2, 4, 4, 3, 5


def mae_sincos(dim, grid):
    """DiT's reference 2-D table (from MAE): meshgrid(w, h); the first half of the channels encodes
    grid[0], which is the column; each half is [sin, cos] of positions times 1/10000^(k/(dim/4))."""
    gw, gh = np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32))

    def one(pos):
        omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    return torch.from_numpy(np.concatenate([one(gw), one(gh)], axis=1)).float()[None]


def ditsem_state(seed=0, depth=DEPTH):
    """A DiTSEM-shaped state dict (learned variance, L x (V+1) table) with random values."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g) * 0.2

    D, p, C = WIDTH, PATCH, CHANNELS
    sd = {"x_embedder.proj.weight": r(D, C, p, p), "x_embedder.proj.bias": r(D), "pos_embed": mae_sincos(D, GRID),
          "t_embedder.mlp.0.weight": r(D, 256), "t_embedder.mlp.0.bias": r(D),
          "t_embedder.mlp.2.weight": r(D, D), "t_embedder.mlp.2.bias": r(D),
          "sem_embedder.embedding_table": r(L, V + 1, D),
          "final_layer.linear.weight": r(p * p * 2 * C, D), "final_layer.linear.bias": r(p * p * 2 * C),
          "final_layer.adaLN_modulation.1.weight": r(2 * D, D), "final_layer.adaLN_modulation.1.bias": r(2 * D)}
    for i in range(depth):
        b = f"blocks.{i}."
        sd |= {b + "attn.qkv.weight": r(3 * D, D), b + "attn.qkv.bias": r(3 * D),
               b + "attn.proj.weight": r(D, D), b + "attn.proj.bias": r(D),
               b + "mlp.fc1.weight": r(4 * D, D), b + "mlp.fc1.bias": r(4 * D),
               b + "mlp.fc2.weight": r(D, 4 * D), b + "mlp.fc2.bias": r(D),
               b + "adaLN_modulation.1.weight": r(6 * D, D), b + "adaLN_modulation.1.bias": r(6 * D)}
    return sd


def reference_ditsem(sd, x, t, y):
    """DiT's forward (Peebles & Xie) with the SEM embedder, from the equations:
    c = MLP(sinusoid(t)) + mean_l table[l, y_l]; per block (shift, scale, gate) x 2 from
    Linear(SiLU(c)); attention from the fused qkv rows (3, heads, head_dim); unpatchify (h, w, p, q, c)."""
    B = x.shape[0]
    h = F.conv2d(x, sd["x_embedder.proj.weight"], sd["x_embedder.proj.bias"], stride=PATCH)
    h = h.flatten(2).transpose(1, 2) + sd["pos_embed"]
    freqs = torch.exp(-math.log(10000) * torch.arange(128) / 128)
    args = t[:, None].float() * freqs[None]
    temb = torch.cat([torch.cos(args), torch.sin(args)], -1)
    temb = F.linear(F.silu(F.linear(temb, sd["t_embedder.mlp.0.weight"], sd["t_embedder.mlp.0.bias"])),
                    sd["t_embedder.mlp.2.weight"], sd["t_embedder.mlp.2.bias"])
    onehot = F.one_hot(y, V + 1).float()  # (B, L, V+1)
    c = temb + (onehot.transpose(0, 1) @ sd["sem_embedder.embedding_table"]).mean(0)  # (L, B, D) -> (B, D)

    def ln(z):
        return F.layer_norm(z, (WIDTH,), eps=1e-6)

    n = 0
    while f"blocks.{n}.attn.qkv.weight" in sd:
        b = f"blocks.{n}."
        mod = F.linear(F.silu(c), sd[b + "adaLN_modulation.1.weight"], sd[b + "adaLN_modulation.1.bias"])
        s1, sc1, g1, s2, sc2, g2 = mod.chunk(6, dim=1)
        a = ln(h) * (1 + sc1[:, None]) + s1[:, None]
        qkv = F.linear(a, sd[b + "attn.qkv.weight"], sd[b + "attn.qkv.bias"]).reshape(B, -1, 3, HEADS, WIDTH // HEADS)
        q, k, v = qkv.unbind(2)  # each (B, N, H, Dh)
        w = torch.softmax(torch.einsum("bnhd,bmhd->bhnm", q, k) / math.sqrt(WIDTH // HEADS), dim=-1)
        att = torch.einsum("bhnm,bmhd->bnhd", w, v).reshape(B, -1, WIDTH)
        h = h + g1[:, None] * F.linear(att, sd[b + "attn.proj.weight"], sd[b + "attn.proj.bias"])
        m = ln(h) * (1 + sc2[:, None]) + s2[:, None]
        m = F.gelu(F.linear(m, sd[b + "mlp.fc1.weight"], sd[b + "mlp.fc1.bias"]), approximate="tanh")
        h = h + g2[:, None] * F.linear(m, sd[b + "mlp.fc2.weight"], sd[b + "mlp.fc2.bias"])
        n += 1
    shift, scale = F.linear(F.silu(c), sd["final_layer.adaLN_modulation.1.weight"],
                            sd["final_layer.adaLN_modulation.1.bias"]).chunk(2, dim=1)
    out = F.linear(ln(h) * (1 + scale[:, None]) + shift[:, None], sd["final_layer.linear.weight"],
                   sd["final_layer.linear.bias"])  # (B, T, p*p*C_out)
    cout = 2 * CHANNELS
    out = out.reshape(B, GRID, GRID, PATCH, PATCH, cout).permute(0, 5, 1, 3, 2, 4)  # (B, c, h, p, w, q)
    return out.reshape(B, cout, GRID * PATCH, GRID * PATCH)


def dit_inputs(seed=1, batch=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, CHANNELS, GRID * PATCH, GRID * PATCH, generator=g)
    t = torch.tensor([0.0, 417.0, 999.0])[:batch]
    y = torch.randint(0, V, (batch, L), generator=g)
    return x, t, y


def test_converted_dit_matches_the_reference_ditsem_forward():
    sd = ditsem_state()
    model = convert_dit(sd, num_heads=HEADS)
    x, t, y = dit_inputs()
    got = model(x, t, y)
    assert got.shape == (3, 2 * CHANNELS, GRID * PATCH, GRID * PATCH)
    torch.testing.assert_close(got, reference_ditsem(sd, x, t, y), rtol=1e-4, atol=1e-4)


def test_converted_dit_reads_every_size_from_the_weights():
    config = convert_dit(ditsem_state(depth=3), num_heads=HEADS).config
    assert (config.code_length, config.vocab_size, config.depth, config.hidden_size) == (L, V, 3, WIDTH)
    assert (config.patch_size, config.in_channels, config.image_size, config.learn_sigma) == (2, 4, 8, True)
    assert config.pos_embed_column_first  # DiT's reference table, detected from the stored pos_embed


def test_converted_dit_null_code_is_table_index_v():
    """Dropping a code (classifier-free guidance's unconditional half) is the all-V code of DiTSEM."""
    sd = ditsem_state()
    model = convert_dit(sd, num_heads=HEADS)
    x, t, y = dit_inputs()
    dropped = model(x, t, y, drop=torch.tensor([True, False, True]))
    null = torch.full_like(y, V)
    torch.testing.assert_close(dropped[0], reference_ditsem(sd, x, t, null)[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(dropped[1], reference_ditsem(sd, x, t, y)[1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("wrap", ["fast_dit_ema", "module", "orig_mod_model"])
def test_dit_checkpoint_containers_and_prefixes(tmp_path, wrap):
    sd = ditsem_state()
    other = ditsem_state(seed=5)
    if wrap == "fast_dit_ema":  # fast-DiT's training checkpoint: the EMA weights are used
        import argparse

        path = tmp_path / "0400000.pt"
        torch.save({"model": other, "ema": sd, "opt": {}, "args": argparse.Namespace(model="DiTSEM-XL/2")}, path)
    elif wrap == "module":
        from safetensors.torch import save_file

        path = tmp_path / "model.safetensors"
        save_file({f"module.{k}": v.contiguous() for k, v in sd.items()}, path)
    else:
        path = tmp_path / "weights.bin"
        torch.save({f"_orig_mod.model.{k}": v for k, v in sd.items()}, path)
    x, t, y = dit_inputs()
    torch.testing.assert_close(convert_dit(path, num_heads=HEADS)(x, t, y), reference_ditsem(sd, x, t, y),
                               rtol=1e-4, atol=1e-4)


def test_dit_converter_names_the_missing_key_and_the_shape_it_expects():
    sd = ditsem_state()
    del sd["blocks.1.mlp.fc2.bias"]
    with pytest.raises(CheckpointError, match=r"'blocks\.1\.mlp\.2\.bias' \(32,\) has no source"):
        convert_dit(sd, num_heads=HEADS)


def test_dit_converter_names_a_wrong_shape():
    sd = ditsem_state()
    sd["blocks.1.attn.qkv.weight"] = torch.zeros(3 * WIDTH, WIDTH + 1)
    with pytest.raises(CheckpointError, match=r"'blocks\.1\.qkv\.weight' has shape \(96, 33\); the model expects \(96, 32\)"):
        convert_dit(sd, num_heads=HEADS)


def test_dit_converter_refuses_an_unknown_source_key():
    sd = ditsem_state() | {"y_embedder.embedding_table.weight": torch.zeros(1001, WIDTH)}
    with pytest.raises(CheckpointError, match="y_embedder.embedding_table.weight"):
        convert_dit(sd, num_heads=HEADS)


def test_dit_converter_needs_the_head_count_for_an_unknown_width():
    with pytest.raises(CheckpointError, match="num_heads"):
        convert_dit(ditsem_state())


def tiny_vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=CHANNELS, norm_num_groups=4,
                         sample_size=16).eval()


@pytest.fixture(scope="module")
def dit_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("converted")
    dit_pipeline(ditsem_state(), out, vae=tiny_vae(), num_heads=HEADS)
    return out


def test_converted_dit_pipeline_turns_codes_into_images(dit_folder):
    pipe = DLCPipeline.from_pretrained(dit_folder)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.config.objective == "ddpm" and pipe.scheduler.config.variance_type == "learned_range"
    codes = torch.tensor([[0, 1, 4], [4, 3, 2]])
    out = pipe(codes=codes, num_inference_steps=3, guidance_scale=2.0, generator=torch.Generator().manual_seed(0),
               output_type="np")
    assert out.images.shape == (2, 16, 16, 3)
    assert np.isfinite(out.images).all() and out.images.std() > 0
    assert not np.allclose(out.images[0], out.images[1])


def test_convert_cli_writes_a_dit_pipeline_and_reports_errors_in_one_line(tmp_path, capsys):
    from safetensors.torch import save_file

    from dlc.cli import main

    src = tmp_path / "dit.safetensors"
    save_file(ditsem_state(), src)
    tiny_vae().save_pretrained(tmp_path / "vae")
    assert main(["convert", "dit", str(src), str(tmp_path / "out"), "--vae", str(tmp_path / "vae"),
                 "--num-heads", str(HEADS)]) == 0
    assert "codes L=3 V=5" in capsys.readouterr().out
    assert DLCPipeline.from_pretrained(tmp_path / "out").dit.config.depth == DEPTH
    assert main(["convert", "dit", str(src), str(tmp_path / "out2")]) == 1  # width 32: heads unknown
    assert "num_heads" in capsys.readouterr().err


# ---- the SEM encoder ---------------------------------------------------------------------------

E_WIDTH, E_HEADS, E_DEPTH, E_PATCH, REGS, E_L, E_V = 32, 2, 2, 14, 2, 4, 6
E_GRID_STORED, E_IMAGE, E_INPUT = 3, 28, 32  # the position table is stored for a larger grid (518 vs 224)
MEAN, STD = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])


def dinov2_sem_state(seed=0, code_shape=(E_L, E_V)):
    """A DinoVisionTransformerWithSEM-shaped backbone (registers, layer scale) with random values."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, s=0.2):
        return torch.randn(*shape, generator=g) * s

    D, LV = E_WIDTH, code_shape[0] * code_shape[1]
    sd = {"cls_token": r(1, 1, D), "pos_embed": r(1, 1 + E_GRID_STORED ** 2, D), "register_tokens": r(1, REGS, D),
          "mask_token": r(1, D), "patch_embed.proj.weight": r(D, 3, E_PATCH, E_PATCH, s=0.05),
          "patch_embed.proj.bias": r(D), "norm.weight": 1 + r(D), "norm.bias": r(D),
          "sem_embed.weight": r(LV, (1 + REGS) * D), "sem_norm.weight": 1 + r(LV), "sem_norm.bias": r(LV),
          "sem_out.weight": r(D, LV), "sem_cls_norm.weight": 1 + r(D), "sem_cls_norm.bias": r(D)}
    for i in range(E_DEPTH):
        b = f"blocks.{i}."
        sd |= {b + "norm1.weight": 1 + r(D), b + "norm1.bias": r(D), b + "attn.qkv.weight": r(3 * D, D),
               b + "attn.qkv.bias": r(3 * D), b + "attn.proj.weight": r(D, D), b + "attn.proj.bias": r(D),
               b + "ls1.gamma": r(D, s=0.5), b + "norm2.weight": 1 + r(D), b + "norm2.bias": r(D),
               b + "mlp.fc1.weight": r(4 * D, D), b + "mlp.fc1.bias": r(4 * D), b + "mlp.fc2.weight": r(D, 4 * D),
               b + "mlp.fc2.bias": r(D), b + "ls2.gamma": r(D, s=0.5)}
    return sd


def reference_dinov2_sem(sd, x):
    """DINOv2 with registers + SEM, from the equations: patches + CLS, the position table (CLS entry
    kept, patch grid resampled bicubically with antialiasing), registers inserted after CLS without
    positions, pre-norm blocks with layer scale, then the SEM on CLS and registers before the final
    norm: LayerNorm(W x) viewed as (L, V). Returns the logits (B, L, V) and the normed SEM output."""
    B, D = x.shape[0], E_WIDTH
    h = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=E_PATCH)
    grid = h.shape[-1]
    h = torch.cat([sd["cls_token"].expand(B, -1, -1), h.flatten(2).transpose(1, 2)], 1)
    pos = sd["pos_embed"]
    patch_pos = pos[:, 1:].reshape(1, E_GRID_STORED, E_GRID_STORED, D).permute(0, 3, 1, 2)
    patch_pos = F.interpolate(patch_pos, size=(grid, grid), mode="bicubic", antialias=True)
    h = h + torch.cat([pos[:, :1], patch_pos.permute(0, 2, 3, 1).reshape(1, -1, D)], 1)
    h = torch.cat([h[:, :1], sd["register_tokens"].expand(B, -1, -1), h[:, 1:]], 1)
    for i in range(E_DEPTH):
        b = f"blocks.{i}."
        a = F.layer_norm(h, (D,), sd[b + "norm1.weight"], sd[b + "norm1.bias"], eps=1e-6)
        q, k, v = F.linear(a, sd[b + "attn.qkv.weight"], sd[b + "attn.qkv.bias"]).reshape(
            B, -1, 3, E_HEADS, D // E_HEADS).unbind(2)
        w = torch.softmax(torch.einsum("bnhd,bmhd->bhnm", q, k) / math.sqrt(D // E_HEADS), -1)
        att = torch.einsum("bhnm,bmhd->bnhd", w, v).reshape(B, -1, D)
        h = h + sd[b + "ls1.gamma"] * F.linear(att, sd[b + "attn.proj.weight"], sd[b + "attn.proj.bias"])
        m = F.layer_norm(h, (D,), sd[b + "norm2.weight"], sd[b + "norm2.bias"], eps=1e-6)
        m = F.linear(F.gelu(F.linear(m, sd[b + "mlp.fc1.weight"], sd[b + "mlp.fc1.bias"])), sd[b + "mlp.fc2.weight"],
                     sd[b + "mlp.fc2.bias"])
        h = h + sd[b + "ls2.gamma"] * m
    sem_in = h[:, : 1 + REGS].reshape(B, -1)
    logits = F.layer_norm(sem_in @ sd["sem_embed.weight"].T, (E_L * E_V,), sd["sem_norm.weight"], sd["sem_norm.bias"],
                          eps=1e-6).view(B, E_L, E_V)
    cls = F.layer_norm(torch.softmax(logits, -1).reshape(B, -1) @ sd["sem_out.weight"].T, (D,), sd["norm.weight"],
                       sd["norm.bias"], eps=1e-6)
    return logits, cls


def encoder_images(seed=2, batch=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 3, E_INPUT, E_INPUT), generator=g, dtype=torch.uint8)


def normalised_crop(images):
    top = (E_INPUT - E_IMAGE) // 2
    x = images[:, :, top:top + E_IMAGE, top:top + E_IMAGE].float() / 255
    return (x - MEAN.view(1, 3, 1, 1)) / STD.view(1, 3, 1, 1)


def test_converted_encoder_matches_the_reference_dinov2_sem_forward():
    from dlc.convert import convert_encoder

    sd = dinov2_sem_state()
    enc = convert_encoder({"teacher": {f"backbone.{k}": v for k, v in sd.items()}}, code_length=E_L,
                          num_heads=E_HEADS, image_size=E_IMAGE, input_size=E_INPUT)
    images = encoder_images()
    logits, cls = reference_dinov2_sem(sd, normalised_crop(images))
    torch.testing.assert_close(enc.probs(images), torch.softmax(logits, -1), rtol=1e-4, atol=1e-5)
    assert torch.equal(enc.encode(images), logits.argmax(-1))
    assert enc.encode(images).unique().numel() > 2  # the codes depend on the image, not a constant
    # the training output the DINO loss reads: the SEM mapped back through sem_out and the final norm
    torch.testing.assert_close(enc(enc.preprocess(images))["embedding"], cls, rtol=1e-4, atol=1e-4)
    assert (enc.config.code_length, enc.config.vocab_size, enc.config.backbone_kwargs["depth"]) == (E_L, E_V, E_DEPTH)
    assert enc.sem.norm.eps == 1e-6  # the authors' LayerNorm epsilon (ours defaults to torch's 1e-5)


def test_encoder_converter_reads_teacher_checkpoints_with_heads_and_chunked_blocks(tmp_path):
    from dlc.convert import convert_encoder

    sd = dinov2_sem_state()
    # DINOv2's chunked layout (block_chunks = depth): block i is blocks.<chunk i>.<i>
    teacher = {"backbone." + re.sub(r"^blocks\.(\d+)\.", r"blocks.\1.\1.", k): v for k, v in sd.items()}
    teacher |= {"dino_head.mlp.0.weight": torch.zeros(8, E_WIDTH), "ibot_head.last_layer.weight_g": torch.zeros(8, 1)}
    path = tmp_path / "teacher_checkpoint.pth"
    torch.save({"teacher": teacher}, path)
    enc = convert_encoder(path, vocab_size=E_V, num_heads=E_HEADS, image_size=E_IMAGE, input_size=E_INPUT)
    images = encoder_images()
    assert torch.equal(enc.encode(images), reference_dinov2_sem(sd, normalised_crop(images))[0].argmax(-1))


def test_encoder_converter_errors_name_the_key():
    from dlc.convert import convert_encoder

    kwargs = dict(code_length=E_L, num_heads=E_HEADS, image_size=E_IMAGE, input_size=E_INPUT)
    sd = dinov2_sem_state()
    del sd["blocks.1.ls2.gamma"]
    with pytest.raises(CheckpointError, match=r"'vit\.blocks\.1\.ls2\.gamma' \(32,\) has no source"):
        convert_encoder(sd, **kwargs)
    sd = dinov2_sem_state() | {"sem_norm.bias": torch.zeros(E_L * E_V + 1)}
    with pytest.raises(CheckpointError, match=r"'sem\.norm\.bias' has shape \(25,\); the model expects \(24,\)"):
        convert_encoder(sd, **kwargs)
    with pytest.raises(CheckpointError, match="L=5"):
        convert_encoder(dinov2_sem_state(), **(kwargs | {"code_length": 5}))
    with pytest.raises(CheckpointError, match="give the code length"):
        convert_encoder(dinov2_sem_state(), num_heads=E_HEADS)


# ---- the SEDD prior ----------------------------------------------------------------------------

S_WIDTH, S_HEADS, S_COND, S_DEPTH = 32, 2, 16, 2


def sedd_config(length=L, tokens=V):
    return {"tokens": tokens, "graph": {"type": "absorb"}, "noise": {"type": "loglinear"},
            "model": {"name": "tiny", "type": "ddit", "hidden_size": S_WIDTH, "cond_dim": S_COND, "length": length,
                      "n_blocks": S_DEPTH, "n_heads": S_HEADS, "scale_by_sigma": True, "dropout": 0.1,
                      "shared_embedding": True}}


def sedd_state(seed=0, length=L, tokens=V):
    """A SEDD (DDiT, absorbing: V+1 outputs) state dict with random values."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g) * 0.2

    D, C, K = S_WIDTH, S_COND, tokens + 1
    head_dim = D // S_HEADS
    sd = {"vocab_embed.embedding": r(K, D), "pos_embed": r(length, D),
          "sigma_map.mlp.0.weight": r(C, 256), "sigma_map.mlp.0.bias": r(C), "sigma_map.mlp.2.weight": r(C, C),
          "sigma_map.mlp.2.bias": r(C), "rotary_emb.inv_freq": 1.0 / 10000 ** (torch.arange(0, head_dim, 2).float() / head_dim),
          "output_layer.norm_final.weight": 1 + r(D), "output_layer.linear.weight": r(K, D),
          "output_layer.linear.bias": r(K), "output_layer.adaLN_modulation.weight": r(2 * D, C),
          "output_layer.adaLN_modulation.bias": r(2 * D)}
    for i in range(S_DEPTH):
        b = f"blocks.{i}."
        sd |= {b + "norm1.weight": 1 + r(D), b + "attn_qkv.weight": r(3 * D, D), b + "attn_out.weight": r(D, D),
               b + "norm2.weight": 1 + r(D), b + "mlp.0.weight": r(4 * D, D), b + "mlp.0.bias": r(4 * D),
               b + "mlp.2.weight": r(D, 4 * D), b + "mlp.2.bias": r(D), b + "adaLN_modulation.weight": r(6 * D, C),
               b + "adaLN_modulation.bias": r(6 * D)}
    return sd


def reference_sedd(sd, x, sigma, tokens=V):
    """SEDD's DDiT forward from the equations: c = SiLU(MLP(sinusoid(sigma))); adaLN-Zero blocks
    around weight-only LayerNorms; rotary on q, k with channel k paired with k + Dh/2 (cos/sin of
    cat(freqs, freqs)); log score shifted by -log(e^sigma - 1) - log V; 0 at the current token."""
    B, N = x.shape
    D, H = S_WIDTH, S_HEADS
    Dh = D // H
    freqs = torch.exp(-math.log(10000) * torch.arange(128) / 128)
    args = sigma[:, None] * freqs[None]
    c = F.linear(F.silu(F.linear(torch.cat([args.cos(), args.sin()], -1), sd["sigma_map.mlp.0.weight"],
                                 sd["sigma_map.mlp.0.bias"])), sd["sigma_map.mlp.2.weight"], sd["sigma_map.mlp.2.bias"])
    c = F.silu(c)
    h = sd["vocab_embed.embedding"][x] + sd["pos_embed"]
    emb = torch.arange(N)[:, None].float() * sd["rotary_emb.inv_freq"][None]
    cos, sin = torch.cat([emb, emb], -1).cos(), torch.cat([emb, emb], -1).sin()  # (N, Dh)

    def rot(z):  # (B, N, H, Dh)
        half = torch.cat([-z[..., Dh // 2:], z[..., : Dh // 2]], -1)
        return z * cos[None, :, None] + half * sin[None, :, None]

    def ln(z, w):
        return F.layer_norm(z, (D,)) * w

    for i in range(S_DEPTH):
        b = f"blocks.{i}."
        s1, sc1, g1, s2, sc2, g2 = F.linear(c, sd[b + "adaLN_modulation.weight"], sd[b + "adaLN_modulation.bias"]).chunk(6, 1)
        a = ln(h, sd[b + "norm1.weight"]) * (1 + sc1[:, None]) + s1[:, None]
        q, k, v = (a @ sd[b + "attn_qkv.weight"].T).reshape(B, N, 3, H, Dh).unbind(2)
        q, k = rot(q), rot(k)
        w = torch.softmax(torch.einsum("bnhd,bmhd->bhnm", q, k) / math.sqrt(Dh), -1)
        h = h + g1[:, None] * (torch.einsum("bhnm,bmhd->bnhd", w, v).reshape(B, N, D) @ sd[b + "attn_out.weight"].T)
        m = ln(h, sd[b + "norm2.weight"]) * (1 + sc2[:, None]) + s2[:, None]
        m = F.linear(F.gelu(F.linear(m, sd[b + "mlp.0.weight"], sd[b + "mlp.0.bias"]), approximate="tanh"),
                     sd[b + "mlp.2.weight"], sd[b + "mlp.2.bias"])
        h = h + g2[:, None] * m
    shift, scale = F.linear(c, sd["output_layer.adaLN_modulation.weight"], sd["output_layer.adaLN_modulation.bias"]).chunk(2, 1)
    out = F.linear(ln(h, sd["output_layer.norm_final.weight"]) * (1 + scale[:, None]) + shift[:, None],
                   sd["output_layer.linear.weight"], sd["output_layer.linear.bias"])
    out = out - torch.expm1(sigma).log()[:, None, None] - math.log(tokens)
    return out.scatter(-1, x[..., None], 0.0)


def save_sedd_folder(folder, sd, config):
    import json

    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    save_file(sd, folder / "model.safetensors")
    return folder


def test_converted_sedd_matches_the_reference_score_network(tmp_path):
    from dlc.convert import convert_prior

    sd = sedd_state()
    prior = convert_prior(save_sedd_folder(tmp_path / "sedd", sd, sedd_config()))
    x = torch.tensor([[V, V, V], [0, V, 4], [2, 3, 1]])
    sigma = torch.tensor([6.9, 1.2, 0.01])
    got = prior(x, sigma)
    assert got.shape == (3, L, V + 1)
    torch.testing.assert_close(got, reference_sedd(sd, x, sigma), rtol=1e-4, atol=1e-4)
    c = prior.config
    assert (c.code_length, c.vocab_size, c.num_heads, c.cond_dim, c.depth) == (L, V, S_HEADS, S_COND, S_DEPTH)


def test_sedd_converter_checks_the_config_against_the_weights(tmp_path):
    from dlc.convert import convert_prior

    config = sedd_config()
    config["model"]["n_heads"] = 4
    with pytest.raises(CheckpointError, match="num_heads = 4, the weights have 2"):
        convert_prior(save_sedd_folder(tmp_path / "a", sedd_state(), config))
    config = sedd_config() | {"graph": {"type": "uniform"}}
    with pytest.raises(CheckpointError, match="only the absorbing graph"):
        convert_prior(save_sedd_folder(tmp_path / "b", sedd_state(), config))
    sd = sedd_state()
    del sd["blocks.1.attn_out.weight"]
    with pytest.raises(CheckpointError, match=r"'blocks\.1\.attn_out\.weight' \(32, 32\) has no source"):
        convert_prior(save_sedd_folder(tmp_path / "c", sd, sedd_config()))


def test_sedd_analytic_step_is_the_staggered_score_times_the_transposed_transition():
    """SEDD's Tweedie step: p = stag(score) * exp(dsigma Q)^T[x], stag = e^d score with
    (1 - e^d) sum(score) added at the mask, for the absorbing graph."""
    from dlc.prior.sedd import step_probs

    g = torch.Generator().manual_seed(0)
    x = torch.tensor([[V, 1, V, 0]])
    score = torch.rand(1, 4, V + 1, generator=g) * 0.5
    score = score.scatter(-1, x[..., None], 1.0)
    d = 0.05
    stag = score * math.exp(d)
    stag[..., V] += (1 - math.exp(d)) * score.sum(-1)
    trans = math.exp(-d) * F.one_hot(x, V + 1).float() + (x == V).float()[..., None] * (1 - math.exp(-d))
    torch.testing.assert_close(step_probs(score, x, d, V), stag * trans)


def test_sedd_remasking_corrector_moves_eta_of_the_top_outcome_to_the_mask():
    from dlc.prior.sedd import remasked

    probs = torch.tensor([[[0.0, 1.0, 0.0, 0.0], [0.1, 0.6, 0.0, 0.3], [0.1, 0.1, 0.0, 0.8]]])  # V = 3
    got = remasked(probs, eta=0.1)
    want = torch.tensor([[[0.0, 0.9, 0.0, 0.1], [0.1, 0.6 - 0.07, 0.0, 0.37], [0.1, 0.1, 0.0, 0.82]]])
    torch.testing.assert_close(got, want)


def exact_score_prior(p0):
    """A SEDDPrior whose score is the true one of i.i.d. tokens with law p0: s_j = p0_j / (e^sigma - 1)
    (with scale_by_sigma: zero output weights and output bias log(V p0_j))."""
    from dlc.prior import SEDDPrior

    prior = SEDDPrior(code_length=4, vocab_size=len(p0), hidden_size=16, cond_dim=8, depth=1, num_heads=2).eval()
    with torch.no_grad():
        prior.output_layer.linear.weight.zero_()
        prior.output_layer.linear.bias.copy_(torch.log(len(p0) * torch.cat([p0, torch.ones(1)])))
    return prior


@pytest.mark.parametrize("eta", [0.0, 0.05])
def test_sedd_sampler_draws_the_law_of_the_true_score(eta):
    p0 = torch.tensor([0.5, 0.3, 0.15, 0.05])
    codes = exact_score_prior(p0).sample(500, seed=0, steps=16, eta=eta, window=(0.3, 0.9))
    assert codes.shape == (500, 4) and int(codes.max()) < 4
    freq = torch.bincount(codes.flatten(), minlength=4).float() / codes.numel()
    assert (freq - p0).abs().max() < 0.04, freq


def test_sedd_sampler_seeds_per_sample_and_defaults_to_the_papers_steps():
    import inspect

    from dlc.prior import SEDDPrior

    prior = SEDDPrior(code_length=6, vocab_size=7, hidden_size=16, cond_dim=8, depth=1, num_heads=2).eval()
    both = prior.sample(4, seed=3, steps=8, eta=0.02)
    assert torch.equal(prior.sample(2, seed=3, steps=8, eta=0.02, start_index=2), both[2:])
    assert not torch.equal(both[0], both[1])
    assert inspect.signature(SEDDPrior.sample).parameters["steps"].default == 4096
    with pytest.raises(ValueError, match="no temperature"):
        prior.sample(1, steps=2, temperature=0.5)


# ---- the text-and-code LLaDA ---------------------------------------------------------------------


def authors_text_folder(folder, vocab_size=V, favoured_code=None):
    """A tiny random masked LM saved in the authors' layout: <|start_sem|> added as the sep token, then
    V tokens <|sem_vocab_i|>, embeddings resized. ``favoured_code``: its output bias makes that code's
    token win everywhere (to see which id is read as which code)."""
    import transformers
    from tokenizers import AddedToken

    from dlc.text.tokenizers import minilm_tokenizer_path

    tok = transformers.AutoTokenizer.from_pretrained(minilm_tokenizer_path())
    tok.add_special_tokens({"sep_token": "<|start_sem|>"})
    tok.add_tokens([AddedToken(f"<|sem_vocab_{i}|>", single_word=True, normalized=False) for i in range(vocab_size)])
    config = transformers.BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    lm = transformers.BertForMaskedLM(config)
    if favoured_code is not None:
        with torch.no_grad():
            lm.cls.predictions.bias[tok.convert_tokens_to_ids(f"<|sem_vocab_{favoured_code}|>")] = 50.0
    lm.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder, tok


def test_converted_text_model_reads_the_authors_token_ids_and_sequence_layout(tmp_path):
    from dlc.convert import add_text

    dit_pipeline(ditsem_state(), tmp_path / "out", vae=tiny_vae(), num_heads=HEADS)
    source, tok = authors_text_folder(tmp_path / "llada", favoured_code=2)
    add_text(source, tmp_path / "out", max_text_length=16)
    text = DLCPipeline.from_pretrained(tmp_path / "out").text_model
    sep = tok.convert_tokens_to_ids("<|start_sem|>")
    assert (text.layout.sep_id, text.layout.code_offset, text.layout.code_vocab) == (sep, sep + 1, V)
    seen = []
    forward = text.lm.forward
    text.lm.forward = lambda input_ids, **kw: seen.append(input_ids.clone()) or forward(input_ids=input_ids, **kw)
    codes = text.generate(["a red apple"], seed=0, steps=L)
    assert torch.equal(codes, torch.full((1, L), 2))  # token <|sem_vocab_2|> is code 2
    caption = tok("a red apple", add_special_tokens=False)["input_ids"]
    ids = seen[0][0].tolist()  # [masks][<|start_sem|>][prompt][padding]
    assert ids[: L + 1 + len(caption)] == [tok.mask_token_id] * L + [sep] + caption
    assert set(ids[L + 1 + len(caption):]) == {tok.pad_token_id}


def test_converted_pipeline_turns_a_prompt_into_codes_and_images(tmp_path):
    from dlc.convert import add_text
    from dlc.pipeline import TextSampling

    dit_pipeline(ditsem_state(), tmp_path / "out", vae=tiny_vae(), num_heads=HEADS)
    add_text(authors_text_folder(tmp_path / "llada")[0], tmp_path / "out", max_text_length=16)
    pipe = DLCPipeline.from_pretrained(tmp_path / "out")
    pipe.set_progress_bar_config(disable=True)
    out = pipe(prompt=["a red apple", "a cat"], text_sampling=TextSampling(temperature=1.0), num_inference_steps=2,
               output_type="np", generator=torch.Generator().manual_seed(0))
    assert out.codes.shape == (2, L) and int(out.codes.max()) < V and out.images.shape == (2, 16, 16, 3)


def test_text_converter_refuses_a_model_whose_codes_do_not_fit_the_dit(tmp_path):
    from dlc.convert import add_text

    dit_pipeline(ditsem_state(), tmp_path / "out", vae=tiny_vae(), num_heads=HEADS)
    with pytest.raises(CheckpointError, match="has 7 code tokens; the DiT reads V = 5"):
        add_text(authors_text_folder(tmp_path / "llada", vocab_size=7)[0], tmp_path / "out")
    with pytest.raises(CheckpointError, match="takes 64 positions"):
        add_text(authors_text_folder(tmp_path / "llada5")[0], tmp_path / "out", max_text_length=61)
    assert not (tmp_path / "out" / "text_model").exists()


# ---- the whole converted pipeline ---------------------------------------------------------------


@pytest.fixture(scope="module")
def full_folder(tmp_path_factory):
    from dlc.convert import add_encoder, add_prior

    out = tmp_path_factory.mktemp("dlc512")
    dit_pipeline(ditsem_state(), out, vae=tiny_vae(), num_heads=HEADS)
    add_encoder(dinov2_sem_state(code_shape=(L, V)), out, num_heads=E_HEADS, image_size=E_IMAGE, input_size=E_INPUT)
    add_prior(save_sedd_folder(out.parent / "sedd", sedd_state(), sedd_config()), out)
    return out


def test_converted_pipeline_samples_codes_with_the_sedd_prior_then_images(full_folder):
    from dlc.pipeline import PriorSampling
    from dlc.prior import SEDDPrior

    pipe = DLCPipeline.from_pretrained(full_folder)
    pipe.set_progress_bar_config(disable=True)
    assert isinstance(pipe.prior, SEDDPrior)
    out = pipe(num_images=3, prior_sampling=PriorSampling(steps=6, eta=0.01), num_inference_steps=2,
               output_type="np", generator=torch.Generator().manual_seed(1))
    assert out.codes.shape == (3, L) and int(out.codes.max()) < V and out.images.shape == (3, 16, 16, 3)
    assert torch.equal(out.codes, pipe.prior.sample(3, seed=code_seed(1), steps=6, eta=0.01))


def test_converted_pipeline_encodes_composes_and_regenerates_images(full_folder):
    from PIL import Image

    pipe = DLCPipeline.from_pretrained(full_folder)
    pipe.set_progress_bar_config(disable=True)
    pictures = [Image.fromarray(a) for a in encoder_images(batch=2).permute(0, 2, 3, 1).numpy()]
    codes = pipe.encoder.encode(pipe.encoder_input(pictures))
    assert codes.shape == (2, L) and int(codes.max()) < V
    again = pipe(image=pictures, num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.codes, codes.cpu()) and again.images.shape == (2, 16, 16, 3)
    mixed = pipe(compose=pictures, num_images=3, num_inference_steps=2, output_type="np")
    from_either = (mixed.codes == codes[0]) | (mixed.codes == codes[1])
    assert from_either.all() and mixed.images.shape == (3, 16, 16, 3) and np.isfinite(mixed.images).all()


def test_adding_an_encoder_whose_sem_does_not_fit_the_dit_is_refused(tmp_path):
    from dlc.convert import add_encoder

    dit_pipeline(ditsem_state(), tmp_path, vae=tiny_vae(), num_heads=HEADS)
    with pytest.raises(CheckpointError, match="not L=3 x V=5"):
        add_encoder(dinov2_sem_state(), tmp_path, num_heads=E_HEADS, image_size=E_IMAGE, input_size=E_INPUT)


def test_convert_cli_adds_the_encoder_to_the_pipeline_folder(tmp_path, capsys):
    from dlc.cli import main

    dit_pipeline(ditsem_state(), tmp_path, vae=tiny_vae(), num_heads=HEADS)
    torch.save({"teacher": {f"backbone.{k}": v for k, v in dinov2_sem_state(code_shape=(L, V)).items()}},
               tmp_path / "teacher_checkpoint.pth")
    assert main(["convert", "encoder", str(tmp_path / "teacher_checkpoint.pth"), str(tmp_path), "--num-heads",
                 str(E_HEADS), "--image-size", str(E_IMAGE), "--input-size", str(E_INPUT)]) == 0
    assert "2 registers, codes L=3 V=5" in capsys.readouterr().out
    assert DLCPipeline.from_pretrained(tmp_path).encoder.config.input_size == E_INPUT


def test_convert_cli_adds_the_sedd_prior(tmp_path, capsys):
    from dlc.cli import main

    dit_pipeline(ditsem_state(), tmp_path / "out", vae=tiny_vae(), num_heads=HEADS)
    source = save_sedd_folder(tmp_path / "DLC_SEDD", sedd_state(), sedd_config())
    assert main(["convert", "prior", str(source), str(tmp_path / "out")]) == 0
    assert "codes L=3 V=5" in capsys.readouterr().out
    wrong = save_sedd_folder(tmp_path / "L4", sedd_state(length=4), sedd_config(length=4))
    assert main(["convert", "prior", str(wrong), str(tmp_path / "out")]) == 1
    assert "length 4 over 5 values" in capsys.readouterr().err


def test_convert_cli_adds_the_text_model(tmp_path, capsys):
    from dlc.cli import main

    dit_pipeline(ditsem_state(), tmp_path / "out", vae=tiny_vae(), num_heads=HEADS)
    source = authors_text_folder(tmp_path / "DLC_LLADA")[0]
    assert main(["convert", "text", str(source), str(tmp_path / "out"), "--max-text-length", "8"]) == 0
    assert "text_model" in capsys.readouterr().out
    assert DLCPipeline.from_pretrained(tmp_path / "out").text_model.config.max_text_length == 8
