"""`dlc convert`: the authors' released checkpoints -> our models and a DLCPipeline folder.

No real weights can be downloaded here, so each test builds a tiny source state dict with the
authors' key names and shapes and random values, converts it, and compares the converted model with
a reference forward written here from the published equations (not with our own model code)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dlc.convert import convert_dit, dit_pipeline
from dlc.errors import CheckpointError
from dlc.pipeline import DLCPipeline

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
    assert main(["convert", "dit", str(src), str(tmp_path / "out2")]) == 2  # width 32: heads unknown
    assert "num_heads" in capsys.readouterr().err
