"""``dlc convert PART``: the authors' released DLC checkpoints -> one DLCPipeline folder
(``dlc.convert`` does the work; ``convert dit`` creates the folder, the other parts add to it)."""

from __future__ import annotations

ADDED_TO = "the pipeline folder (written by `dlc convert dit`)"


def part_parser(parts, name: str, source: str, out: str, run, **kwargs):
    """The sub-command of one part, with its SOURCE and OUT arguments."""
    parser = parts.add_parser(name, **kwargs)
    parser.add_argument("source", help=source)
    parser.add_argument("out", help=out)
    parser.set_defaults(func=run)
    return parser


def register(sub) -> None:
    parser = sub.add_parser(
        "convert", help="convert the authors' released DLC models into a DLCPipeline folder",
        description="Turn the checkpoints of lavoiems/DiscreteLatentCode (the DLC512 models on the hub: "
        "lavoies/DLC_DiT_L512, lavoies/SEM_dinov2_L512, lavoies/DLC_SEDD_L512, lavoies/DLC_LLADA_L512) into "
        "one folder that DLCPipeline.from_pretrained, dlc sample, dlc compose and dlc text2img load. Convert "
        "the DiT first (it creates OUT); every other part is added to OUT and must make the DiT's codes "
        "(same L and V). Every size is read from the checkpoint, and every key and shape is checked.",
    )
    parts = parser.add_subparsers(dest="part", metavar="PART")
    parts.required = True

    dit = part_parser(
        parts, "dit", "checkpoint file or folder", "the pipeline folder to write", run_dit,
        help="the DiTSEM image model (creates OUT)",
        description="Convert a DiTSEM checkpoint: a fast-DiT training .pt (model/ema), a safetensors/bin "
        "state dict (prefixes module., _orig_mod., model. are removed) or a downloaded pipeline folder "
        "(transformer/, vae/). Writes OUT with the DiT, a DDPM scheduler and the VAE. Example: dlc convert "
        "dit DLC_DiT_L512 dlc512 --vae sd-vae-ft-ema",
    )
    dit.add_argument("--vae", default=None, help="diffusers AutoencoderKL folder or hub name (default: SOURCE/vae; "
                     "the authors used stabilityai/sd-vae-ft-ema)")
    dit.add_argument("--weights", default="ema", choices=["ema", "model"],
                     help="which weights of a training checkpoint (default: %(default)s)")
    dit.add_argument("--num-heads", type=int, default=None,
                     help="attention heads (default: DiT's for the width: 16 for XL)")
    dit.add_argument("--sampler", default="ddpm", choices=["ddpm", "ddim", "dpm"],
                     help="the pipeline's default sampler (default: %(default)s, the paper's, with the learned variance)")

    enc = part_parser(
        parts, "encoder", "checkpoint file", ADDED_TO, run_encoder,
        help="the SEM encoder (DINOv2 ViT-L/14 with registers + SEM head), added to OUT",
        description="Convert the authors' DINOv2 teacher checkpoint (teacher_checkpoint.pth: teacher.backbone.* "
        "keys; the DINO/iBOT heads are left out) or a state dict in the same names, and add it to the pipeline "
        "folder OUT. The backbone goes through timm's DINOv2 conversion; L and V come from OUT's DiT. Example: "
        "dlc convert encoder SEM_dinov2_L512/teacher_checkpoint.pth dlc512",
    )
    enc.add_argument("--num-heads", type=int, default=None, help="attention heads (default: DINOv2's: 16 for ViT-L)")
    enc.add_argument("--image-size", type=int, default=224, help="the crop the ViT sees (default: %(default)s)")
    enc.add_argument("--input-size", type=int, default=256,
                     help="images are resized to this, then centre-cropped to --image-size (default: %(default)s)")

    part_parser(
        parts, "prior", "the SEDD folder", ADDED_TO, run_prior,
        help="the SEDD code prior, added to OUT",
        description="Convert the authors' SEDD folder (config.json + model.safetensors or pytorch_model.bin, as "
        "PyTorchModelHubMixin saves it; absorbing graph, log-linear noise) into a 'sedd' prior and add it to "
        "OUT. Its sampler is SEDD's analytic step (4,096 steps in the paper) with the authors' remasking "
        "corrector. Example: dlc convert prior DLC_SEDD_L512 dlc512",
    )

    text = part_parser(
        parts, "text", "the model folder", ADDED_TO, run_text,
        help="the text-and-code LLaDA, added to OUT",
        description="Copy the authors' fine-tuned LLaDA folder (tokenizer with <|start_sem|> and V code tokens "
        "<|sem_vocab_i|>) into OUT/text_model with a dlc_text.json that maps their token ids and sequence "
        "layout onto ours; the weights are not changed. LLaDA ships its own model code: load the pipeline "
        "with trust_remote_code=True (dlc text2img --trust-remote-code). Example: dlc convert text "
        "DLC_LLADA_L512 dlc512",
    )
    text.add_argument("--model-class", default=None,
                      help="transformers loader (default: AutoModel for a model with its own code, as LLaDA; else "
                      "AutoModelForMaskedLM)")
    text.add_argument("--max-text-length", type=int, default=128, help="prompt tokens kept (default: %(default)s)")
    text.add_argument("--trust-remote-code", action="store_true",
                      help="let the tokenizer run its own code while checking it (only for a folder you trust)")


def run_dit(args) -> int:
    from ..convert import dit_pipeline

    pipe = dit_pipeline(args.source, args.out, vae=args.vae, weights=args.weights, num_heads=args.num_heads,
                        sampler=args.sampler)
    c = pipe.dit.config
    print(f"DiT: depth {c.depth}, width {c.hidden_size}, {c.image_size}x{c.image_size}x{c.in_channels} latents, "
          f"codes L={c.code_length} V={c.vocab_size} -> {args.out}")
    return 0


def run_encoder(args) -> int:
    from ..convert import add_encoder

    enc = add_encoder(args.source, args.out, num_heads=args.num_heads, image_size=args.image_size,
                      input_size=args.input_size)
    kw = enc.config.backbone_kwargs
    print(f"encoder: ViT depth {kw['depth']}, width {kw['embed_dim']}, patch {kw['patch_size']}, {kw['reg_tokens']} "
          f"registers, codes L={enc.config.code_length} V={enc.config.vocab_size} -> {args.out}/encoder")
    return 0


def run_prior(args) -> int:
    from ..convert import add_prior

    c = add_prior(args.source, args.out).config
    print(f"prior: SEDD depth {c.depth}, width {c.hidden_size}, codes L={c.code_length} V={c.vocab_size} "
          f"-> {args.out}/prior")
    return 0


def run_text(args) -> int:
    from ..convert import add_text

    out = add_text(args.source, args.out, model_class=args.model_class, trust_remote_code=args.trust_remote_code,
                   max_text_length=args.max_text_length)
    print(f"text model: {args.source} -> {out}")
    return 0
