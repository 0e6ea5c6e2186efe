"""Text-to-DLC: sequences, masking, loss, generation, tokenizers, both model families, resume."""

import math

import pytest
import torch
import transformers  # a dependency: the Hugging Face path is tested, never skipped

from dlc import text
from dlc.codes.synthetic import caption_codes
from dlc.config import load_config
from dlc.data.holdout import HELDOUT_NAMES, heldout_emoji
from dlc.text import (
    CaptionTokenizer,
    TextToCode,
    TokenLayout,
    build_sequences,
    llada_loss,
    load_text_model,
    mask_tokens,
)
from dlc.text import training as text_training
from dlc.text.model import CodeGenerationMixin, padded_text_length, sequence_loss
from dlc.text.tokenizers import minilm_tokenizer_path

LAYOUT = TokenLayout(code_length=4, code_vocab=8, code_offset=100, sep_id=108, mask_id=109, pad_id=0)
CAPTIONS = ["red apple", "grinning face", "woman firefighter: dark skin tone", "ok hand"]


def tiny_model(tokenizer="bytes", L=4, V=8):
    tok = CaptionTokenizer.build(CAPTIONS, tokenizer)
    model = TextToCode(L, V, tok.vocab_size, max_text_length=12, width=32, depth=1, heads=2)
    model.tokenizer = tok
    return model.eval()


def test_build_sequences_places_codes_separator_caption_and_padding():
    codes = torch.tensor([[0, 1, 2, 7], [3, 3, 3, 3]])
    ids, padding = build_sequences(LAYOUT, codes, [[5, 6, 7], [9]])
    assert ids.tolist() == [[100, 101, 102, 107, 108, 5, 6, 7], [103, 103, 103, 103, 108, 9, 0, 0]]
    assert padding.tolist() == [[False] * 8, [False] * 6 + [True] * 2]
    masked_ids, _ = build_sequences(LAYOUT, None, [[5]], length=3)
    assert masked_ids.tolist() == [[109, 109, 109, 109, 108, 5, 0, 0]]


def test_masking_never_touches_padding_and_follows_t():
    ids, padding = build_sequences(LAYOUT, torch.zeros(2, 4, dtype=torch.long), [[5] * 20, [5]])
    noisy, masked, p = mask_tokens(ids, padding, LAYOUT.mask_id, t=torch.ones(2))
    assert masked.tolist() == (~padding).tolist()  # t = 1: every real token, no padding
    assert (noisy[padding] == LAYOUT.pad_id).all() and (noisy[masked] == LAYOUT.mask_id).all()
    big = torch.zeros(400, 64, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    _, masked, p = mask_tokens(big, torch.zeros_like(big, dtype=torch.bool), 1, t=torch.full((400,), 0.3), generator=g)
    assert p[0].item() == pytest.approx((1 - 1e-3) * 0.3 + 1e-3)
    assert masked.float().mean().item() == pytest.approx(p[0].item(), abs=0.01)
    _, masked, p = mask_tokens(big, torch.zeros_like(big, dtype=torch.bool), 1, t=torch.zeros(400), generator=g)
    assert p[0].item() == pytest.approx(1e-3)  # never exactly zero


def test_loss_is_masked_cross_entropy_weighted_by_inverse_p_over_real_tokens():
    ids = torch.tensor([[1, 2, 3, 0], [1, 2, 0, 0]])
    padding = ids == 0
    masked = torch.tensor([[True, False, True, False], [False, True, False, False]])
    p = torch.tensor([[0.5], [0.25]])
    logits = torch.zeros(2, 4, 10)  # uniform: each masked token costs log(10)
    expected = (2 * math.log(10) / 0.5 + math.log(10) / 0.25) / 5  # 5 real tokens
    assert llada_loss(logits, ids, masked, p, padding).item() == pytest.approx(expected, rel=1e-6)
    logits[0, 0, 1] = 50.0  # a confident right answer costs nothing
    expected = (math.log(10) / 0.5 + math.log(10) / 0.25) / 5
    assert llada_loss(logits, ids, masked, p, padding).item() == pytest.approx(expected, rel=1e-5)


def test_generation_only_emits_codes_even_when_text_tokens_dominate():
    model = tiny_model()
    layout = model.layout
    with torch.no_grad():  # make every text token and the separator far likelier than any code token
        model.head.bias.zero_()
        model.head.bias[: layout.code_offset] = 100.0
        model.head.bias[layout.sep_id] = 100.0
    for remasking in ("low_confidence", "random"):
        codes = model.generate(CAPTIONS, num_per_prompt=3, seed=1, steps=2, temperature=1.0, remasking=remasking,
                               guidance_scale=1.5)
        assert codes.shape == (12, 4) and codes.dtype == torch.long
        assert codes.min() >= 0 and codes.max() < 8


def test_generation_commits_the_argmax_at_zero_temperature():
    model = tiny_model()
    with torch.no_grad():
        model.head.bias.zero_()
        model.head.bias[model.layout.code_offset + 5] = 50.0
    assert (model.generate(["red apple"], steps=4, temperature=0.0) == 5).all()


def test_sample_i_depends_only_on_seed_and_index():
    model = tiny_model()
    full = model.generate(CAPTIONS, num_per_prompt=2, seed=7, steps=4, temperature=1.0, batch_size=3)
    again = model.generate(CAPTIONS, num_per_prompt=2, seed=7, steps=4, temperature=1.0, batch_size=8)
    assert torch.equal(full, again)
    head = model.generate(CAPTIONS[:2], num_per_prompt=2, seed=7, steps=4, temperature=1.0)
    assert torch.equal(head, full[:4])
    shard = model.generate(CAPTIONS[2:], num_per_prompt=2, seed=7, steps=4, temperature=1.0, indices=range(4, 8))
    assert torch.equal(shard, full[4:])
    other = model.generate(CAPTIONS, num_per_prompt=2, seed=8, steps=4, temperature=1.0)
    assert not torch.equal(other, full)


@pytest.mark.parametrize("source", ["minilm", "bytes"])
def test_tokenizer_round_trip_and_save_load(tmp_path, source):
    tok = CaptionTokenizer.build(CAPTIONS, source)
    ids = tok.encode(CAPTIONS)
    decoded = [tok.decode(row) for row in ids]
    assert tok.encode(decoded) == ids
    if source == "bytes":
        assert decoded == CAPTIONS
    else:
        assert decoded[0] == "red apple" and tok.vocab_size < 30  # trimmed to the pieces used
        assert tok.unk_id in tok.encode(["zebra"])[0]  # not in the captions: unknown
    tok.save(tmp_path / "tok")
    assert CaptionTokenizer.load(tmp_path / "tok").encode(CAPTIONS + ["zebra"]) == tok.encode(CAPTIONS + ["zebra"])


def test_scratch_model_saves_and_reloads_with_its_tokenizer(tmp_path):
    model = tiny_model("minilm")
    model.save_pretrained(tmp_path / "m")
    loaded = load_text_model(tmp_path / "m")
    assert (loaded.config.code_length, loaded.config.vocab_size) == (4, 8)
    assert loaded.text_ids(CAPTIONS) == model.text_ids(CAPTIONS)
    assert torch.equal(loaded.generate(CAPTIONS, seed=3, temperature=1.0), model.generate(CAPTIONS, seed=3, temperature=1.0))


def test_heldout_emoji_are_fixed_and_their_parts_are_trained(emoji_train):
    import dlc

    every = dlc.data.load("emoji", size=32, split="all")
    indices, captions = heldout_emoji(every)
    assert len(indices) == len(HELDOUT_NAMES) == 32 and set(captions) == HELDOUT_NAMES
    trained = [c for c in every.captions if c not in HELDOUT_NAMES]
    for parts in (("woman", "pilot"), ("man", "cook"), ("waving hand", "dark skin tone"), ("baby", "medium-dark")):
        assert any(parts[0] in c for c in trained) and any(parts[1] in c for c in trained)
    assert "firefighter" in trained and "woman firefighter" not in trained


def test_synthetic_codes_spell_the_label(emoji_train):
    codes = caption_codes(0, code_length=16, vocab_size=64, dataset=emoji_train)
    labels = emoji_train.labels
    same = (labels == labels[0]).nonzero()[:, 0]
    assert codes.shape == (len(emoji_train), 16) and codes.max() < 64
    assert (codes[same, :6] == codes[0, :6]).all()
    assert not (codes[labels != labels[0], :6] == codes[0, :6]).all(1).any()


def tiny_config(run_dir, *extra):
    return load_config(text_training.TextRunConfig, None, [
        f"run_dir={run_dir}", "codes.source=synthetic", "codes.code_length=8", "codes.synthetic_vocab=16",
        "model.width=32", "model.depth=1", "model.heads=2", "model.tokenizer=bytes", "train.batch_size=8",
        "train.log_every=1", "train.checkpoint_every=2", "sample.num_per_prompt=1", "sample.steps=2", *extra])


def test_training_excludes_heldout_and_resume_equals_uninterrupted(tmp_path):
    whole = text_training.train(tiny_config(tmp_path / "whole", "train.steps=4"))
    text_training.train(tiny_config(tmp_path / "split", "train.steps=2"))
    split = text_training.train(tiny_config(tmp_path / "split", "train.steps=4"))
    a, b = load_text_model(whole.root), load_text_model(split.root)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    assert [r["loss"] for r in whole.read_metrics()] == [r["loss"] for r in split.read_metrics()]
    pairs, *_ = text_training.training_pairs(tiny_config(tmp_path / "x"))
    kept = {pairs.dataset.captions[i] for i in pairs.indices}
    assert not kept & HELDOUT_NAMES and len(kept) > 3000


def test_huggingface_lm_path_adds_tokens_trains_saves_reloads_generates(tmp_path):
    base = tmp_path / "tiny-bert"
    tok = transformers.AutoTokenizer.from_pretrained(minilm_tokenizer_path())
    config = transformers.BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=64)
    transformers.BertForMaskedLM(config).save_pretrained(base)
    tok.save_pretrained(base)
    run = text_training.train(tiny_config(tmp_path / "hf", "train.steps=3", "model.kind=hf", f"model.pretrained={base}",
                                 "model.model_class=AutoModelForMaskedLM", "model.max_text_length=16"))
    assert len(run.read_metrics()) == 3 and all(math.isfinite(r["loss"]) for r in run.read_metrics())
    model = load_text_model(run.root)
    assert isinstance(model, text.HFTextToCode)
    layout = model.layout
    assert layout.code_offset >= len(tok) and layout.sep_id == layout.code_offset + 16
    assert model.tokenizer.convert_ids_to_tokens(layout.code_offset + 3) == "<dlc_3>"
    codes = model.generate(CAPTIONS, num_per_prompt=2, seed=0, steps=4, temperature=1.0)
    assert codes.shape == (8, 8) and codes.min() >= 0 and codes.max() < 16
    assert torch.equal(codes, load_text_model(run.root / "model").generate(CAPTIONS, 2, seed=0, steps=4, temperature=1.0))


def test_huggingface_lora_trains_new_embeddings(tmp_path):
    base = tmp_path / "tiny-bert"
    tok = transformers.AutoTokenizer.from_pretrained(minilm_tokenizer_path())
    config = transformers.BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=64)
    transformers.BertForMaskedLM(config).save_pretrained(base)
    tok.save_pretrained(base)
    model = text.HFTextToCode.from_base(str(base), 4, 8, "AutoModelForMaskedLM", lora_rank=2, max_text_length=16)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in trainable) and any("word_embeddings" in n for n in trainable)
    assert not any("attention.self.query.base_layer" in n for n in trainable)
    model.save_pretrained(tmp_path / "merged")
    assert load_text_model(tmp_path / "merged").generate(["red apple"], steps=2).shape == (1, 4)


def test_training_with_codes_from_a_frozen_encoder(tmp_path):
    from dlc.encoder import DLCEncoder

    encoder = DLCEncoder(backbone_kwargs=dict(patch_size=8, embed_dim=32, depth=1, num_heads=2),
                         code_length=6, vocab_size=10)
    encoder.save_pretrained(tmp_path / "encoder")
    run = text_training.train(tiny_config(tmp_path / "run", "train.steps=2", "codes.source=encoder",
                                 f"codes.encoder={tmp_path / 'encoder'}"))
    model = load_text_model(run.root)
    assert (model.config.code_length, model.config.vocab_size) == (6, 10)
    codes = model.generate(["red apple"], 2, steps=3)
    assert codes.shape == (2, 6) and codes.max() < 10


def test_a_nan_temperature_is_refused_not_taken_as_greedy():
    from dlc.errors import ConfigError

    with pytest.raises(ConfigError, match="temperature must be a finite number"):
        tiny_model().generate(["red apple"], temperature=float("nan"), steps=2)


class IgnoresPadding(torch.nn.Module, CodeGenerationMixin):
    """A text model like LLaDA's release: it drops the padding mask and attends to pad tokens."""

    def __init__(self, model):
        super().__init__()
        self.inner, self.config, self.layout, self.widths = model, model.config, model.layout, []
        self.text_ids = model.text_ids

    def forward(self, ids, padding=None):
        self.widths.append(ids.shape[1])
        return self.inner(ids)


def test_scratch_model_logits_do_not_depend_on_the_padding_width():
    model = tiny_model()
    codes = torch.tensor([[1, 2, 3, 4]])
    caption = model.text_ids(["ok hand"])
    logits = [model(*build_sequences(model.layout, codes, caption, width)) for width in (None, 12)]
    real = logits[0].shape[1]  # codes, separator and the caption: no pads
    assert torch.allclose(logits[0], logits[1][:, :real], atol=1e-5)
    assert padded_text_length(model) is None  # so it trains at the batch's longest caption


def test_a_model_ignoring_its_padding_mask_trains_at_the_generation_width_and_its_codes_ignore_the_batch():
    model = IgnoresPadding(tiny_model())
    L, width = model.layout.code_length, model.config.max_text_length
    sequence_loss(model, model.layout, torch.tensor([[1, 2, 3, 4]]), model.text_ids(["ok hand"]),
                  text_length=padded_text_length(model))
    alone = model.generate(["ok hand"], temperature=0.0)
    with_long = model.generate(["ok hand", "woman firefighter: dark skin tone"], temperature=0.0)
    assert set(model.widths) == {L + 1 + width}  # training saw what generation sees
    assert torch.equal(alone[0], with_long[0])
    # padded to the batch's longest caption instead, the same prompt would see other tokens
    batch = model.text_ids(["ok hand", "woman firefighter: dark skin tone"])
    assert not torch.allclose(model(build_sequences(model.layout, None, batch)[0])[:1, :L],
                              model(build_sequences(model.layout, None, batch[:1])[0])[:, :L])


# ---- the MiniLM-reading model -------------------------------------------------------------------


def tiny_minilm(L=4, V=8):
    return text.MiniLMTextToCode(L, V, max_text_length=12, width=32, depth=1, heads=2).eval()


def test_minilm_model_reads_captions_as_the_pretrained_networks_token_features():
    model = tiny_minilm()
    ids = model.text_ids(["zebra crossing"])[0]  # words no training caption needs: full WordPiece ids, no unknowns
    pieces = [i - model.word_offset for i in ids]
    assert model.words.tok.convert_ids_to_tokens(pieces) == ["zebra", "crossing"]
    bert = model.caption_features.bert
    with torch.no_grad():
        expected = bert(input_ids=torch.tensor([[101, *pieces, 102]])).last_hidden_state[0, 1:-1]
    features = model.caption_features([pieces, []], width=3, device="cpu")
    assert torch.allclose(features[0, :2], expected, atol=1e-5) and not features[0, 2:].any() and not features[1].any()
    assert expected.std() > 0.1  # real pretrained features, not zeros
    assert not any(n.startswith("caption_features") for n in model.state_dict())  # frozen: neither saved nor trained
    import copy

    assert copy.deepcopy(model).caption_features is model.caption_features  # the EMA copy shares it


def test_minilm_loss_scores_codes_only_and_masks_whole_captions_for_guidance():
    model = tiny_minilm()
    codes = torch.randint(0, 8, (64, 4))
    captions = model.text_ids(["red apple", "ok hand"] * 32)
    seen = []

    def spy(ids, padding):
        seen.append(ids)
        return model(ids, padding)

    for dropout in (0.0, 1.0):
        loss, _ = sequence_loss(spy, model.layout, codes, captions, generator=torch.Generator().manual_seed(0),
                                caption_dropout=dropout)
        assert torch.isfinite(loss)
    kept, dropped = seen
    L, mask = model.layout.code_length, model.layout.mask_id
    assert (kept[:, L + 1 :] >= model.word_offset).all() and kept[:, L].eq(model.layout.sep_id).all()
    assert (dropped[:, L + 1 :] == mask).all() and (kept[:, :L] == mask).any()  # codes are masked as LLaDA's


def test_minilm_model_trains_saves_without_minilm_reloads_and_generates(tmp_path):
    run = text_training.train(tiny_config(tmp_path / "run", "model.kind=minilm", "train.steps=2"))
    model = load_text_model(run.root)
    assert isinstance(model, text.MiniLMTextToCode) and model.config.caption_dropout == 0.1
    weights = run.root / "model" / "diffusion_pytorch_model.safetensors"
    assert weights.stat().st_size < 2_000_000  # MiniLM's 90 MB stay in the installed package
    again = load_text_model(run.root)
    for guidance in (0.0, 2.0):
        a = model.generate(["red apple", "zebra"], 2, seed=1, temperature=1.0, guidance_scale=guidance)
        assert torch.equal(a, again.generate(["red apple", "zebra"], 2, seed=1, temperature=1.0,
                                              guidance_scale=guidance))
        assert a.shape == (4, 8) and a.max() < 16
