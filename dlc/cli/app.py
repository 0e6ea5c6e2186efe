"""``dlc app``: the composition playground, a Gradio page on a trained pipeline (``pip install "dlc[app]"``)."""

from __future__ import annotations

from pathlib import Path

from ..errors import DLCError
from ..runs import RunDir
from . import sample as common


def register(sub) -> None:
    parser = sub.add_parser(
        "app", help="a web page to compose images' codes and generate from them (needs dlc[app])",
        description="Serve the composition playground: upload or pick two to four parent images, see their "
        "codes (L tokens each), choose which parent each group of positions or each position comes from "
        "(or a weighted random mix), and generate images of the composed codes; a second tab generates "
        "from a prompt when the pipeline has a text model. Needs Gradio: pip install \"dlc[app]\". "
        "Open the printed address in a browser.",
    )
    parser.add_argument("model", metavar="RUN", help="a pipeline folder (save_pretrained), a project run root "
                        "(dit/ with encoder/, prior/, text/) or a DiT run directory")
    parser.add_argument("--examples", default=None, metavar="DATASET",
                        help="the gallery of example parents: a dataset name (emoji, fashion-mnist, "
                        "imagefolder:PATH) or a folder of images, its test split; 'none' for no gallery "
                        "(default: the dataset RUN's DiT was trained on, when it is installed)")
    parser.add_argument("--num-examples", type=int, default=24, help="images in the gallery (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto (cuda when there is one, else cpu), cpu, cuda:1, ... "
                        "(default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on; 0.0.0.0 for other machines (default: %(default)s)")
    parser.add_argument("--port", type=int, default=7860, help="(default: %(default)s)")
    parser.add_argument("--share", action="store_true", help="also a temporary public link through Gradio's servers")
    parser.set_defaults(func=run)


def trained_dataset(model: str) -> str | None:
    """The dataset in the config of RUN's DiT (a project root's dit/ or RUN itself), if there is one."""
    run = next((r for r in (RunDir(Path(model) / "dit"), RunDir(model)) if r.config_path.is_file()), None)
    return run.saved_config().get("data", {}).get("dataset") if run is not None else None


def run(args) -> int:
    try:
        from ..app import Playground, load_examples, serve
    except ModuleNotFoundError as e:
        if e.name != "gradio":
            raise
        raise DLCError('the playground needs Gradio: pip install "dlc[app]" (or pip install gradio)') from e
    pipe = common.load_pipeline(args.model, args.device)
    examples, prompts = [], []
    source = args.examples or trained_dataset(args.model)
    if source and source != "none" and pipe.encoder is not None:
        size = pipe.encoder.config.input_size or pipe.encoder.config.image_size
        try:
            examples, prompts = load_examples(source, size, args.num_examples)
        except DLCError as e:
            if args.examples:
                raise
            print(f"dlc app: no example gallery ({e})")
    serve(Playground(pipe, examples, prompts), server_name=args.host, server_port=args.port, share=args.share)
    return 0
