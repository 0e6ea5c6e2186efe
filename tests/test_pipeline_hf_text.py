"""A pipeline whose text model is a Hugging Face LM (HFTextToCode) survives save_pretrained ->
from_pretrained: the LM, its tokenizer and dlc_text.json are written beside the diffusers parts and
the reloaded pipeline draws the same codes from a prompt."""

import torch
import transformers

from dlc.dit import create_dit
from dlc.pipeline import DLCPipeline, TextSampling
from dlc.text import HFTextToCode
from dlc.text.tokenizers import minilm_tokenizer_path

L, V = 4, 8


def tiny_hf_text_model(tmp_path) -> HFTextToCode:
    base = tmp_path / "tiny-bert"
    tok = transformers.AutoTokenizer.from_pretrained(minilm_tokenizer_path())
    config = transformers.BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    transformers.BertForMaskedLM(config).save_pretrained(base)
    tok.save_pretrained(base)
    return HFTextToCode.from_base(str(base), L, V, "AutoModelForMaskedLM", max_text_length=16).eval()


def test_pipeline_with_a_hugging_face_text_model_saves_and_reloads(tmp_path):
    from diffusers import FlowMatchEulerDiscreteScheduler

    text_model = tiny_hf_text_model(tmp_path)
    pipe = DLCPipeline(dit=create_dit("DiT-N/8", image_size=32, code_length=L, vocab_size=V).eval(),
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0), text_model=text_model)
    pipe.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "text_model" / "dlc_text.json").is_file()
    loaded = DLCPipeline.from_pretrained(tmp_path / "saved")
    assert isinstance(loaded.text_model, HFTextToCode)
    sampling = TextSampling(steps=2, temperature=1.0)
    first = pipe.make_codes(prompt=["red apple", "cat face"], num_images=2, seed=3, text_sampling=sampling)
    again = loaded.make_codes(prompt=["red apple", "cat face"], num_images=2, seed=3, text_sampling=sampling)
    assert first.shape == (2, L) and torch.equal(first, again)
    out = loaded(prompt="red apple", num_inference_steps=1, text_sampling=sampling, output_type="uint8")
    assert out.images.shape == (1, 3, 32, 32) and out.codes.shape == (1, L)


def plant_remote_code(text_dir, marker) -> None:
    """Make a saved text model ask for remote code: dlc_text.json says trust it, config.json maps the
    model classes to a Python file in the folder, and that file writes ``marker`` when imported."""
    import json

    (text_dir / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n"
                                      "from transformers import BertConfig as EvilConfig, BertForMaskedLM as EvilModel\n")
    config = json.loads((text_dir / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForMaskedLM": "evil.EvilModel"}
    (text_dir / "config.json").write_text(json.dumps(config))
    meta = json.loads((text_dir / "dlc_text.json").read_text())
    (text_dir / "dlc_text.json").write_text(json.dumps({**meta, "trust_remote_code": True}))


def test_a_shared_pipeline_cannot_make_loading_run_its_code(tmp_path):
    import pytest

    from dlc.errors import CheckpointError

    text_model = tiny_hf_text_model(tmp_path)
    pipe = DLCPipeline(dit=create_dit("DiT-N/8", image_size=32, code_length=L, vocab_size=V).eval(),
                       scheduler=__import__("diffusers").FlowMatchEulerDiscreteScheduler(shift=1.0),
                       text_model=text_model)
    pipe.save_pretrained(tmp_path / "shared")
    marker = tmp_path / "code-ran"
    plant_remote_code(tmp_path / "shared" / "text_model", marker)
    with pytest.raises(CheckpointError, match="trust_remote_code=True"):
        DLCPipeline.from_pretrained(tmp_path / "shared")
    assert not marker.exists()
    # the attack is real: a caller who does trust the folder runs its code (in a child process, so
    # transformers' registry of remote classes stays clean for the other tests)
    import subprocess
    import sys

    load = f"from dlc.pipeline import DLCPipeline; DLCPipeline.from_pretrained({str(tmp_path / 'shared')!r}, trust_remote_code=True)"
    subprocess.run([sys.executable, "-c", load], capture_output=True, timeout=300)
    assert marker.exists()


def test_a_folder_whose_metadata_claims_no_remote_code_still_runs_none(tmp_path):
    import json

    text_dir = tmp_path / "text"
    tiny_hf_text_model(tmp_path).save_pretrained(text_dir)
    marker = tmp_path / "code-ran"
    plant_remote_code(text_dir, marker)
    meta = json.loads((text_dir / "dlc_text.json").read_text())
    (text_dir / "dlc_text.json").write_text(json.dumps({**meta, "trust_remote_code": False}))
    loaded = HFTextToCode.from_pretrained(text_dir)  # transformers' own BERT class, not the folder's file
    assert type(loaded.lm).__module__.startswith("transformers.") and not marker.exists()
