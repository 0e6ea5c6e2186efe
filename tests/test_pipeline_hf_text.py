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
