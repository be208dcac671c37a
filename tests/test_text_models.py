"""Fast tests of the text data, tokenizer and text models (tiny configs, CPU)."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

import torch.nn.functional as F  # noqa: E402

from cfwidgets.data import text as T  # noqa: E402


def test_normalize_and_split():
    assert T.normalize_text("The plot drags, and the jokes fall flat... Really!!") == (
        "the plot drags , and the jokes fall flat . . . really !")
    s = "it's a party worth attending ."
    assert T.normalize_text(s) == s  # idempotent on normalised text
    sents = T.split_sentences('Great film. I didn\'t care!<br /><br />It was "ok"... and more')
    assert sents == ["great film .", "i didn't care !", 'it was " ok " . . .', "and more"]
    with pytest.raises(TypeError):
        T.normalize_text(3)


def test_attributes():
    a = T.text_attributes(["this is not very good .", "a fine film"], [1, 0])
    assert a.shape == (2, 4) and a.dtype == np.float32
    assert a.tolist() == [[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]
    long = " ".join(["w"] * 30)
    assert T.text_attributes([long], [0])[0, 1] == 1.0
    with pytest.raises(ValueError):
        T.text_attributes(["a"], [0, 1])


def test_tokenizer_round_trip():
    tok = T.load_tokenizer()
    assert len(tok) == T.TOKENIZER_VOCAB_SIZE
    assert (tok.pad_token_id, tok.unk_token_id, tok.bos_token_id, tok.eos_token_id,
            tok.mask_token_id) == (0, 1, 2, 3, 4)
    for s in ["the jokes fall flat .", "it's a sly wink , made creepy by \" men \" -- 1999 !"]:
        ids = tok(s)["input_ids"]
        assert ids[0] == T.BOS_ID and ids[-1] == T.EOS_ID
        assert tok.decode(ids, skip_special_tokens=True) == s


@pytest.fixture(scope="module")
def tiny_clf():
    from cfwidgets.models.text_classifier import TextClassifier, TextClassifierConfig

    torch.manual_seed(0)
    return TextClassifier(TextClassifierConfig(hidden_size=32, num_layers=1, num_heads=2,
                                               intermediate_size=64)).eval()


@pytest.fixture(scope="module")
def tiny_gen():
    from cfwidgets.models.text_generator import TextGenerator, TextGeneratorConfig

    torch.manual_seed(0)
    return TextGenerator(TextGeneratorConfig(d_model=32, encoder_layers=1, decoder_layers=1,
                                             heads=2, ffn_dim=64, latent_dim=8)).eval()


def test_classifier_soft_equals_hard(tiny_clf):
    tok = T.load_tokenizer()
    b = tok(["the jokes fall flat .", "a wonderful , moving film"], padding=True,
            return_tensors="pt")
    hard = tiny_clf(b["input_ids"], b["attention_mask"])
    soft = tiny_clf.forward_soft(F.one_hot(b["input_ids"], 4096).float(), b["attention_mask"])
    assert hard.shape == (2, 2)
    torch.testing.assert_close(hard, soft, atol=1e-5, rtol=1e-5)
    assert tiny_clf.predict_texts(["The jokes fall flat."]).shape == (1, 2)
    with pytest.raises(ValueError):
        tiny_clf.forward_soft(torch.zeros(1, 3, 10))


def test_generator_shapes_and_api(tiny_gen, tiny_clf):
    gen = tiny_gen
    src, sm = gen.prepare_source(["The plot drags and the jokes fall flat.", "a very good film"])
    assert src.shape[0] == 2 and (src == T.MASK_ID).any()  # "drags"/"very" are masked
    z, zm = gen.encode(src, sm)
    assert z.shape == (2, src.shape[1], 8) and zm.shape == src.shape
    a = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 1.0]])
    dec = torch.tensor([[T.BOS_ID, 10, 11], [T.BOS_ID, 12, 13]])
    assert gen.decode_logits(z, a, dec, zm).shape == (2, 3, 4096)
    ids = gen.generate(z, a, zm, max_len=6)
    assert ids.shape[0] == 2 and ids.shape[1] <= 7 and (ids[:, 0] == T.BOS_ID).all()
    assert ((ids == T.EOS_ID).sum(1) == 1).all()
    assert gen.generate(z, a, zm, max_len=6, mode="beam", beams=3).shape[0] == 2
    assert len(gen.decode_texts(ids)) == 2
    # cached greedy decode agrees with one teacher-forced pass on its own output
    free = gen.generate(z, a, zm, max_len=6, block_repeats=False)
    logits = gen.decode_logits(z, a, free[:, :-1], zm)
    body = free[:, 1:-1]
    assert (logits.argmax(-1)[:, : body.shape[1]] == body).all()
    # soft decode: one-hot BOS first, rows sum to 1, gradient reaches z and a
    z = z.detach().requires_grad_(True)
    a = a.clone().requires_grad_(True)
    probs, mask = gen.soft_decode(z, a, zm, steps=6, tau=0.5, gumbel=True,
                                  generator=torch.Generator().manual_seed(0))
    assert probs.shape[:2] == mask.shape and probs.shape[-1] == 4096
    torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:2]))
    assert (probs[:, 0].argmax(-1) == T.BOS_ID).all()
    tiny_clf.forward_soft(probs, mask)[:, 1].sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0 and a.grad.abs().sum() > 0
    # the soft Hu et al. unroll runs too
    p2, m2 = gen.soft_decode(z, a, zm, steps=4, prefix="soft", gumbel=False)
    assert p2.shape == (2, 4, 4096)
    with pytest.raises(ValueError):
        gen.decode_logits(z, a[:, :2], dec, zm)


def test_attribute_masker_collapses_words():
    from cfwidgets.models.text_generator import AttributeMasker

    m = AttributeMasker(lexicon={"terrible": -5.0})
    tok = m.tok
    text = "a terrible , not very funny film"
    ids = np.asarray(tok(text)["input_ids"])
    out = m.mask(ids, m.word_classes(text), (1.0, 1.0, 1.0))
    toks = tok.convert_ids_to_tokens(out.tolist())
    assert toks.count("[MASK]") == 3 and "\u2581terrible" not in toks
    assert "\u2581funny" in toks and toks[0] == "[BOS]" and toks[-1] == "[EOS]"


def test_export_import_round_trip(tiny_gen, tmp_path):
    from cfwidgets.models.text_generator import TextGenerator

    tiny_gen.export(tmp_path / "gen", meta={"note": "test"})
    back = TextGenerator.load(tmp_path / "gen")
    for (k, v), (k2, v2) in zip(tiny_gen.state_dict().items(), back.state_dict().items(),
                                strict=True):
        assert k == k2 and torch.equal(v, v2)
    assert back.meta["note"] == "test"


@pytest.mark.slow  # ~20 s on an idle 2-core machine, over a minute under load
def test_tiny_budget_training_decreases_loss(tmp_path):
    """Some steps of the real generator loop on a tiny model and a small corpus: the
    reconstruction loss falls, and a second call resumes from the checkpoint."""
    from cfwidgets.models.text_classifier import TextClassifier, TextClassifierConfig
    from cfwidgets.models.text_generator import TextGeneratorConfig
    from cfwidgets.zoo.text_generator_train import train_text_generator

    torch.manual_seed(0)
    clf = TextClassifier(TextClassifierConfig(hidden_size=32, num_layers=1, num_heads=2,
                                              intermediate_size=64))
    cfg = TextGeneratorConfig(d_model=64, encoder_layers=1, decoder_layers=1, heads=2,
                              ffn_dim=128, latent_dim=16)
    ck = tmp_path / "gen.pt"
    logs: list[str] = []
    kw = dict(config=cfg, batch_size=16, lr=3e-3, warmup=5, consistency_start=10,
              consistency_every=2, eval_every=0, eval_n=0, log_every=10, max_imdb=2000,
              sentiment_source="weak", log=logs.append)
    train_text_generator(ck, clf, steps=60, **kw)
    hist = torch.load(ck, weights_only=True)["state"]["history"]
    assert [h["step"] for h in hist] == [10, 20, 30, 40, 50, 60]
    assert hist[-1]["rec"] < hist[0]["rec"] - 0.5
    assert "con" in hist[-1] and "copy" in hist[-1]  # consistency + copy terms ran
    train_text_generator(ck, clf, steps=70, **kw)
    assert any("resumed" in line and "step 60" in line for line in logs)
    assert torch.load(ck, weights_only=True)["state"]["step"] == 70


@pytest.mark.slow  # ~15 s idle, loads the IMDB sentence corpus
def test_lm_perplexity_and_training(tmp_path):
    from cfwidgets.models.text_lm import TextLMConfig, train_text_lm

    torch.manual_seed(0)
    cfg = TextLMConfig(n_embd=32, n_layer=1, n_head=2)
    kw = dict(config=cfg, batch_size=16, lr=5e-3, warmup=5, max_imdb=1000, eval_every=0)
    lm, metrics = train_text_lm(tmp_path / "lm.pt", steps=40, log=None, **kw)
    hist = torch.load(tmp_path / "lm.pt", weights_only=True)["state"]
    assert hist["step"] == 40 and metrics["test_ppl"] < 4096
    logs: list[str] = []  # a second call resumes at step 40 and keeps the elapsed time
    lm, _ = train_text_lm(tmp_path / "lm.pt", steps=50, log=logs.append, **kw)
    again = torch.load(tmp_path / "lm.pt", weights_only=True)["state"]
    assert any("resumed" in line and "step 40" in line for line in logs), logs
    assert again["step"] == 50 and again["metrics"]["seconds"] >= hist["metrics"]["seconds"]
    ppl = lm.perplexity(["the jokes fall flat .", "flat the . jokes fall"])
    assert ppl.shape == (2,) and (ppl > 1).all()
    with pytest.raises(TypeError):
        lm.perplexity("a string")


def test_generate_blocks_word_loops(tiny_gen):
    """A decoder biased to one word token keeps repeating it without the guard; with it
    (the default) no word token follows itself and no "A B A B" loop closes."""
    gen = tiny_gen
    src, sm = gen.prepare_source(["a very good film", "the jokes fall flat ."])
    z, zm = gen.encode(src, sm)
    a = torch.zeros(2, 4)
    blk = gen._repeat_blockable()
    word = int(blk.nonzero()[50])
    with torch.no_grad():
        old = gen.final_bias[word].item()
        gen.final_bias[word] = 50.0
        try:
            loose = gen.generate(z, a, zm, max_len=10, block_repeats=False)
            guarded = gen.generate(z, a, zm, max_len=10)
            beam = gen.generate(z, a, zm, max_len=10, mode="beam", beams=2)
        finally:
            gen.final_bias[word] = old
    assert (loose[:, 1:-1] == word).all()  # the bias alone makes a loop
    for ids in (guarded, beam):
        body = ids[:, 1:]
        same = (body[:, 1:] == body[:, :-1]) & blk[body[:, 1:]]
        assert not same.any(), gen.decode_texts(ids)
        loop = (body[:, 3:] == body[:, 1:-2]) & (body[:, 2:-1] == body[:, :-3]) & blk[body[:, 3:]]
        assert not loop.any(), gen.decode_texts(ids)
    assert (guarded[:, 1:-1:2] == word).all()  # the favourite still wins every other slot
    # per-row caps: each row ends with [EOS] by its own cap, whatever the batch
    capped = gen.generate(z, a, zm, max_len=10, max_lens=torch.tensor([4, 7]))
    ends = (capped == T.EOS_ID).float().argmax(1) + 1
    assert ends.tolist() == [4, 7]
    alone = gen.generate(z[1:], a[1:], zm[1:], max_len=10, max_lens=torch.tensor([7]))
    assert torch.equal(alone[0, :7], capped[1, :7])
    with pytest.raises(ValueError, match="one cap per row"):
        gen.generate(z, a, zm, max_lens=torch.tensor([4]))
