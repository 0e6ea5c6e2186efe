"""``dlc text2img``: images from captions, through the text-to-code model and the DiT."""

from __future__ import annotations

from . import sample as common


def register(sub) -> None:
    parser = sub.add_parser(
        "text2img", help="generate images from captions",
        description="Generate codes from each caption with the pipeline's text-to-code model, then images "
        "with the DiT. Sample i is prompt i // NUM's image number i %% NUM; it depends only on (seed, i).",
    )
    common.add_generation_args(parser, "text2img")
    parser.add_argument("prompts", nargs="+", help="one or more captions, e.g. 'red apple'")
    parser.add_argument("-n", "--num", type=int, default=4, help="images per prompt (default: %(default)s)")
    parser.set_defaults(func=run)


def run(args) -> int:
    pipe, sampling, settings = common.prepare("text2img", args)
    prompts = [p for p in args.prompts for _ in range(args.num)]
    settings.update(prompts=args.prompts, num_per_prompt=args.num)
    common.stream(args, pipe, settings, sampling, list(range(args.start, len(prompts))), prompts=prompts)
    return 0
