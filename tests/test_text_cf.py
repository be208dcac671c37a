"""Text counterfactuals with tiny random models (no shipped weights needed): adapters,
fp16 zoo storage, text metrics, bad input of AIP-text and HotFlip, search modes, HTML."""

from __future__ import annotations

import os
import warnings

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

import torch.nn.functional as F  # noqa: E402

from cfwidgets.models.text_adapters import (  # noqa: E402
    HFTextClassifier,
    TextClassifierAdapter,
    ZooTextClassifier,
    as_text_classifier,
)

SENTS = ["the plot drags and the jokes fall flat .", "a wonderful , moving film .",
         "an utterly charming comedy with a big heart ."]


# ------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def tiny_clf():
    from cfwidgets.models.text_classifier import TextClassifier, TextClassifierConfig

    torch.manual_seed(0)
    return ZooTextClassifier(TextClassifier(TextClassifierConfig(
        hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64))).eval()


@pytest.fixture(scope="module")
def tiny_gen():
    from cfwidgets.models.text_generator import TextGenerator, TextGeneratorConfig

    torch.manual_seed(0)
    return TextGenerator(TextGeneratorConfig(d_model=32, encoder_layers=1, decoder_layers=1,
                                             heads=2, ffn_dim=64, latent_dim=8, max_len=24)).eval()


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory):
    """A tiny randomly initialised BertForSequenceClassification with its own WordPiece
    tokenizer (built from a vocabulary file: no hub)."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    words = sorted(set(" ".join(SENTS + ["good bad great awful boring fun movie film story ,"]).split()))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, "##s", "##ly"]
    d = tmp_path_factory.mktemp("hf")
    (d / "vocab.txt").write_text("\n".join(vocab))
    tok = BertTokenizerFast(vocab_file=str(d / "vocab.txt"), do_lower_case=True)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64, num_labels=2,
                     id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    return BertForSequenceClassification(cfg).eval(), tok


def _targets(clf, texts):
    with torch.no_grad():
        return 1 - clf(texts).argmax(1)


# ------------------------------------------------------------------------ adapters
def test_zoo_adapter_soft_equals_hard_and_embeds(tiny_clf):
    ids, mask = tiny_clf.tokenize(SENTS)
    hard = tiny_clf.forward_ids(ids, mask)
    soft = tiny_clf.forward_soft(F.one_hot(ids, tiny_clf.vocab_size).float(), mask)
    emb = tiny_clf.forward_embeds(tiny_clf.embedding_matrix[ids], mask)
    torch.testing.assert_close(hard, soft, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(hard, emb, atol=1e-5, rtol=1e-5)
    out = tiny_clf(["The plot drags and the jokes fall flat."])  # normalised inside
    torch.testing.assert_close(out, hard[:1], atol=1e-5, rtol=1e-5)
    assert tiny_clf.class_names == ["negative", "positive"]
    assert as_text_classifier(tiny_clf) is tiny_clf
    assert as_text_classifier(tiny_clf.model).vocab_key == tiny_clf.vocab_key
    # word-start / punctuation classes of the shared BPE
    vocab = tiny_clf.tokenizer.get_vocab()
    assert bool(tiny_clf.word_start[vocab["\u2581the"]]) and bool(tiny_clf.punctuation[vocab["\u2581,"]])
    assert tiny_clf.decode_ids(ids)[0] == SENTS[0]


def test_hf_adapter(hf_model):
    model, tok = hf_model
    with pytest.raises(TypeError, match="tokenizer"):
        as_text_classifier(model)
    clf = as_text_classifier(model, tokenizer=tok)
    assert isinstance(clf, HFTextClassifier) and clf.class_names == ["negative", "positive"]
    logits = clf(SENTS)
    assert logits.shape == (3, 2)
    ids, mask = clf.tokenize(SENTS)
    torch.testing.assert_close(clf.forward_embeds(clf.embedding_matrix[ids], mask), logits,
                               atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        ref = model(**tok(SENTS, padding=True, return_tensors="pt")).logits
    torch.testing.assert_close(logits, ref, atol=1e-5, rtol=1e-5)
    assert clf.vocab_key != as_text_classifier(_tiny_zoo()).vocab_key
    with pytest.raises(TypeError, match="cannot use"):
        as_text_classifier(object())


def _tiny_zoo():
    from cfwidgets.models.text_classifier import TextClassifier, TextClassifierConfig

    return TextClassifier(TextClassifierConfig(hidden_size=16, num_layers=1, num_heads=2,
                                               intermediate_size=32))


def test_minilm_head_only_state(monkeypatch):
    from cfwidgets.models.text_adapters import MiniLMClassifier

    m = MiniLMClassifier(load_encoder=False)
    assert sorted(m.state_dict()) == ["head.bias", "head.weight"]
    m2 = MiniLMClassifier(load_encoder=False)
    m2.load_state_dict(m.state_dict())
    assert torch.equal(m2.head.weight, m.head.weight)
    with pytest.raises(RuntimeError, match="unexpected"):
        m2.load_state_dict({**m.state_dict(), "encoder.x": torch.zeros(1)})
    with pytest.raises(RuntimeError, match="not loaded"):
        m(["a film ."])


def test_half_storage_round_trip(tiny_gen):
    from cfwidgets.models.text_generator import TextGenerator
    from cfwidgets.zoo.recipes.text import _GEN_TIED, half_storage

    gen = half_storage(TextGenerator(tiny_gen.config), _GEN_TIED)
    gen.load_state_dict(tiny_gen.state_dict())
    sd = gen.state_dict()
    assert {v.dtype for v in sd.values()} == {torch.float16}
    assert "decoder.embed_tokens.weight" not in sd
    back = half_storage(TextGenerator(tiny_gen.config), _GEN_TIED)
    back.load_state_dict(sd, strict=True)
    back.eval()
    assert back.decoder.embed_tokens.weight is back.encoder.embed_tokens.weight
    assert back.final_bias.dtype == torch.float32
    src, sm = tiny_gen.prepare_source(SENTS[:1])
    z, zm = tiny_gen.encode(src, sm)
    a = torch.zeros(1, 4)
    dec = torch.tensor([[2, 10, 11]])
    torch.testing.assert_close(back.decode_logits(back.encode(src, sm)[0], a, dec, zm),
                               tiny_gen.decode_logits(z, a, dec, zm), atol=2e-2, rtol=2e-2)


def test_text_recipes_registered():
    from cfwidgets import zoo

    names = set(zoo.recipes())
    assert {"reviews/clf", "reviews/minilm", "reviews/gen", "reviews/lm"} <= names
    for n in ("reviews/clf", "reviews/minilm", "reviews/gen", "reviews/lm"):
        r = zoo.get_recipe(n)
        assert r.check is not None and r.reduced_check is not None and r.reduced


# ------------------------------------------------------------------------ metrics
def test_text_metrics_basics():
    from cfwidgets.metrics import text as mt

    assert mt.levenshtein("abc", "abd") == 1 and mt.levenshtein([], ["a"]) == 1
    src, cf = ["the jokes fall flat ."], ["the jokes soar ."]
    assert float(mt.edit_distance(src, cf)[0]) == 2.0
    assert abs(float(mt.edit_distance_norm(src, cf)[0]) - 0.4) < 1e-6
    ops = [e["op"] for e in mt.word_edits(src[0], cf[0])]
    assert "replace" in ops or ("delete" in ops and "insert" in ops)
    assert float(mt.bleu(src, src)[0]) == pytest.approx(100.0)
    assert 0 < float(mt.bleu(src, cf)[0]) < 100
    with pytest.raises(ValueError, match="differ in number"):
        mt.edit_distance(src, cf + cf)


def test_degeneration_metrics_catch_repeats_and_mangled_words():
    from cfwidgets.metrics import text as mt

    src = ["ms . fulford-wierzbicki is almost spooky in her sulky , calculating lolita turn ."]
    good = ["ms . fulford-wierzbicki is almost dull in her sulky , calculating lolita turn ."]
    looped = ["the film is dull dull dull dull ."]
    mangled = ["ms . fulford-wierzbick is almost spookyy in her sulky , calculululating lola ."]
    assert float(mt.repetition(good)[0]) == 0.0
    # bigrams: (the film) (film is) (is dull) (dull dull) x3 (dull .): 2 of 7 seen before
    assert float(mt.repetition(looped)[0]) == pytest.approx(2 / 7)
    vocab = set(mt.words(good[0])) | {"the", "film", "lola"}
    # real words, or words of the source, are not counted
    assert float(mt.nonword_rate(good, src, vocabulary=vocab)[0]) == 0.0
    rate = float(mt.nonword_rate(mangled, src, vocabulary=vocab)[0])
    assert rate == pytest.approx(3 / 13)  # fulford-wierzbick, spookyy, calculululating (13 words)
    with pytest.raises(ValueError, match="differ in number"):
        mt.nonword_rate(good, src + src, vocabulary=vocab)


def test_perplexity_ratio_with_tiny_lm():
    from cfwidgets.metrics import text as mt
    from cfwidgets.models.text_lm import TextLM, TextLMConfig

    torch.manual_seed(0)
    lm = TextLM(TextLMConfig(n_embd=16, n_layer=1, n_head=2)).eval()
    r = mt.ppl_ratio(SENTS[:2], SENTS[:2], lm)
    torch.testing.assert_close(r, torch.ones(2))
    assert mt.perplexity(["", "a film ."], lm).shape == (2,)


def test_evaluate_text_row(tiny_clf):
    from cfwidgets.methods import HotFlip
    from cfwidgets.metrics.text import evaluate_text
    from cfwidgets.models.text_lm import TextLM, TextLMConfig

    res = HotFlip(tiny_clf).explain(SENTS, _targets(tiny_clf, SENTS), max_flips=2)
    lm = TextLM(TextLMConfig(n_embd=16, n_layer=1, n_head=2)).eval()
    row = evaluate_text(res, lm=lm, similarity_model=False)
    for k in ("flip_rate", "edit_distance", "edit_distance_norm", "bleu", "ppl_ratio",
              "repetition_cf", "nonword_rate_cf", "time_per_sentence_s"):
        assert k in row and row[k] == row[k], k
    assert row["n"] == 3 and 0 <= row["flip_rate"] <= 1
    row2 = evaluate_text(res, classifier=tiny_clf, fluency=False, similarity_model=False)
    assert row2["flip_rate"] == pytest.approx(row["flip_rate"])
    with pytest.raises(TypeError, match="lm=zoo.load"):  # the metrics do not load zoo models
        evaluate_text(res, similarity_model=False)
    with pytest.raises(TypeError, match="text result"):
        from cfwidgets.result import CounterfactualResult

        evaluate_text(CounterfactualResult(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), torch.zeros(1).long(),
                                           torch.ones(1, 2) / 2, torch.ones(1, 2) / 2))


# ------------------------------------------------------------------------ HotFlip
def test_hotflip_substitutes_whole_words(tiny_clf):
    from cfwidgets.methods import HotFlip

    hf = HotFlip(tiny_clf, excluded_words=("film",))
    t = _targets(tiny_clf, SENTS)
    res = hf.explain(SENTS, t, max_flips=3, beam=2, candidates=20)
    assert isinstance(res.x_cf, list) and len(res.x_cf) == 3
    for src, cf, flips, n in zip(res.x, res.x_cf, res.meta["per_row_flips"], res.meta["num_flips"], strict=True):
        assert len(src.split()) == len(cf.split())  # word substitutions only
        assert len(flips) == int(n) <= 3
        for f in flips:
            assert f["from"] != f["to"] and f["to"] != "film" and any(c.isalnum() for c in f["to"])
    # the verdict is on the hard text
    torch.testing.assert_close(res.probs_cf, tiny_clf(res.x_cf).softmax(-1), atol=1e-5, rtol=1e-5)
    assert res.trajectory[0] == res.x and res.trajectory_steps[0] == 0


def test_hotflip_on_a_hf_model(hf_model):
    from cfwidgets.methods import HotFlip

    model, tok = hf_model
    hf = HotFlip(model, tokenizer=tok)
    clf = hf.classifier
    t = _targets(clf, SENTS)
    res = hf.explain(SENTS, t, max_flips=2, beam=2, candidates=10)
    assert len(res.x_cf) == 3 and all(isinstance(s, str) for s in res.x_cf)
    assert res.meta["class_names"] == ["negative", "positive"]


@pytest.mark.parametrize("method_name", ["hotflip", "aip_text"])
def test_bad_text_inputs(method_name, tiny_clf, tiny_gen):
    from cfwidgets.methods import AIPText, HotFlip

    m = HotFlip(tiny_clf) if method_name == "hotflip" else AIPText(tiny_clf, tiny_gen)
    fast = {"max_flips": 1} if method_name == "hotflip" else {"steps": 1}
    t = int(_targets(tiny_clf, SENTS[:1])[0])
    with pytest.raises(ValueError, match="empty batch"):
        m.explain([], t, **fast)
    with pytest.raises(ValueError, match=r"x\[0\] is empty or whitespace"):
        m.explain([""], t, **fast)
    with pytest.raises(ValueError, match="whitespace only"):
        m.explain(["   \n"], t, **fast)
    with pytest.raises(TypeError, match="single str"):
        m.explain(SENTS[0], t, **fast)
    with pytest.raises(TypeError, match=r"x\[1\] must be a str"):
        m.explain([SENTS[0], 3], t, **fast)
    with pytest.raises(TypeError, match="tensor"):
        m.explain(torch.zeros(1, 5), t, **fast)
    with pytest.raises(ValueError, match="unknown class name 'posiitve'"):
        m.explain(SENTS[:1], "posiitve", **fast)
    with pytest.raises(ValueError, match="already predicts"):
        m.explain(SENTS[:1], 1 - t, **fast)
    with pytest.raises(ValueError, match="out of range"):
        m.explain(SENTS[:1], 5, **fast)
    with pytest.raises(TypeError, match="unknown option"):
        m.explain(SENTS[:1], t, no_such_knob=1)


def test_target_by_name(tiny_clf):
    from cfwidgets.methods import HotFlip

    t = int(_targets(tiny_clf, SENTS[:1])[0])
    res = HotFlip(tiny_clf).explain(SENTS[:1], tiny_clf.class_names[t], max_flips=1)
    assert int(res.target[0]) == t


# ------------------------------------------------------------------------ AIP-text
def test_aip_text_gradient_run(tiny_clf, tiny_gen):
    from cfwidgets.methods import AIPText
    from cfwidgets.models.text_lm import TextLM, TextLMConfig

    lm = TextLM(TextLMConfig(n_embd=16, n_layer=1, n_head=2)).eval()
    aip = AIPText(tiny_clf, tiny_gen, lm=lm)
    assert aip.soft_compatible
    t = _targets(tiny_clf, SENTS)
    seen = []
    res = aip.explain(SENTS, t, steps=6, decode_every=3, restarts=2,
                      callback=lambda s, st: seen.append((s, list(st.x_cf))) and False)
    m = res.meta
    assert m["search_mode"] == "gradient" and "Gumbel" in m["search"]
    assert len(res.x_cf) == 3 and all(isinstance(s, str) for s in res.x_cf)
    assert [s for s, _ in seen] == list(range(len(seen))) and len(seen[0][1]) == 3
    assert len(m["per_row_candidates"]) == 3 and all(len(c) == 2 for c in m["per_row_candidates"])
    for cands in m["per_row_candidates"]:
        ranks = [c.rank for c in cands]
        assert ranks == sorted(ranks)
        valid = [c.valid for c in cands]
        assert valid == sorted(valid, reverse=True)  # valid candidates rank first
        assert all(c.ppl_ratio is not None for c in cands)
    row = res.to_dict()["meta"]["per_row_candidates"][0][0]  # plain, JSON-able in to_dict
    assert row["text"] == m["per_row_candidates"][0][0].text and "probs" not in row
    assert m["attribute_names"] == ["sentiment", "length", "negation", "intensifier"]
    assert m["a0"].shape == (3, 4) and m["a_cf"].shape == (3, 4)
    assert float(m["a_cf"].min()) >= 0 and float(m["a_cf"].max()) <= 1
    assert len(m["x_rec"]) == 3 and len(m["per_row_edits"]) == 3
    assert isinstance(res.trajectory, list) and len(res.trajectory) == len(res.trajectory_steps)
    assert all(len(snap) == 3 for snap in res.trajectory)
    torch.testing.assert_close(res.probs_cf, tiny_clf(res.x_cf).softmax(-1), atol=1e-5, rtol=1e-5)
    sub = res[1]
    assert sub.x == res.x[1:2] and len(sub.meta["per_row_candidates"]) == 1


def test_aip_text_locked_attributes_do_not_move(tiny_clf, tiny_gen):
    from cfwidgets.methods import AIPText

    aip = AIPText(tiny_clf, tiny_gen)
    t = _targets(tiny_clf, SENTS[:2])
    res = aip.explain(SENTS[:2], t, steps=4, decode_every=2, attribute_weights={"sentiment": 100.0},
                      restarts=1)
    torch.testing.assert_close(res.meta["a_cf"][:, 0], res.meta["a0"][:, 0])
    res = aip.explain(SENTS[:2], t, steps=3, decode_every=3, optimise="a", restarts=1)
    assert res.meta["config"]["optimise"] == "a"


def test_aip_text_long_input_truncate_or_refuse(tiny_clf, tiny_gen):
    from cfwidgets.methods import AIPText

    aip = AIPText(tiny_clf, tiny_gen)  # the tiny generator reads at most 24 tokens
    long = " ".join(["a very long and rather boring sentence about nothing"] * 6) + " ."
    t = int(_targets(tiny_clf, [long])[0])
    with pytest.warns(UserWarning, match="limit of 24 tokens"):
        res = aip.explain([long, SENTS[1]], [t, int(_targets(tiny_clf, SENTS[1:2])[0])], steps=2,
                          decode_every=2, restarts=1)
    assert res.meta["truncated"] == [0] and len(res.x[0].split()) < len(long.split())
    assert not tiny_gen.too_long([res.x[0]])[0] and long.startswith(res.x[0])
    with pytest.raises(ValueError, match="long_inputs='truncate'"):
        aip.explain([long], t, steps=2, long_inputs="refuse")


def test_aip_text_other_vocabulary_needs_surrogate_or_random(hf_model, tiny_clf, tiny_gen):
    from cfwidgets.methods import AIPText

    model, tok = hf_model
    aip = AIPText(model, tiny_gen, tokenizer=tok)
    assert not aip.soft_compatible
    t = _targets(aip.classifier, SENTS[:2])
    with pytest.raises(ValueError, match="surrogate=zoo.load"):
        aip.explain(SENTS[:2], t, search="gradient", steps=2)
    with pytest.raises(ValueError, match="needs a surrogate"):
        aip.explain(SENTS[:2], t, search="surrogate", steps=2)
    res = aip.explain(SENTS[:2], t, steps=2, population=3, decode_every=1, restarts=1)  # auto -> random
    assert res.meta["search_mode"] == "random" and "gradient-free" in res.meta["search"]
    assert len(res.losses["loss"]) >= 1
    with_sur = AIPText(model, tiny_gen, tokenizer=tok, surrogate=tiny_clf)
    res = with_sur.explain(SENTS[:2], t, steps=2, decode_every=1, restarts=1)  # auto -> surrogate
    assert res.meta["search_mode"] == "surrogate"
    torch.testing.assert_close(res.probs_cf, aip.classifier(res.x_cf).softmax(-1), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="share the generator's tokenizer"):
        AIPText(tiny_clf, tiny_gen, surrogate=aip.classifier)


def test_aip_text_random_search_is_deterministic(tiny_clf, tiny_gen):
    from cfwidgets.methods import AIPText

    aip = AIPText(tiny_clf, tiny_gen)
    t = _targets(tiny_clf, SENTS)
    a = aip.explain(SENTS, t, search="random", steps=2, population=3, restarts=1, generator=5)
    b = aip.explain(SENTS, t, search="random", steps=2, population=3, restarts=1, generator=5)
    single = aip.explain(SENTS[1:2], t[1:2], search="random", steps=2, population=3, restarts=1, generator=5)
    assert a.x_cf == b.x_cf and single.x_cf[0] == a.x_cf[1]


def test_aip_text_refuses_a_non_generator(tiny_clf):
    from cfwidgets.methods import AIPText

    with pytest.raises(TypeError, match="reviews/gen"):
        AIPText(tiny_clf, torch.nn.Linear(2, 2))


# ------------------------------------------------------------------------ HTML
def test_word_diff_and_result_html(tiny_clf):
    from cfwidgets.methods import HotFlip
    from cfwidgets.viz.html import word_diff_html

    h = word_diff_html("the jokes fall flat .", "the jokes soar .")
    assert "<del" in h and "<ins" in h and "soar" in h and "the jokes" in h
    assert "<del" not in word_diff_html("same words", "same words")
    assert "&lt;b&gt;" in word_diff_html("<b>", "x")  # escaped
    res = HotFlip(tiny_clf).explain(SENTS, _targets(tiny_clf, SENTS), max_flips=2,
                                    callback=lambda s, st: s >= 0)
    page = res._repr_html_()
    assert "<table" in page and "stopped" in page and "word diff" in page
    assert res.stopped


def test_text_import_stays_lazy():
    import subprocess
    import sys

    code = ("import sys, cfwidgets; import cfwidgets.methods, cfwidgets.models.text_adapters, "
            "cfwidgets.metrics.text; print('transformers' in sys.modules)")
    with warnings.catch_warnings():
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_adapter_base_is_abstract():
    a = TextClassifierAdapter()
    with pytest.raises(NotImplementedError):
        a.tokenize(["x"])


def test_transfer_edits_applies_only_anchored_changes():
    from cfwidgets.methods.text_candidates import transfer_edits

    src = "the plot drags and the jokes fall flat ."
    rec = "the plot drags and the jokes fall short ."  # reconstruction error at the end
    assert transfer_edits(src, rec, "the plot soars and the jokes fall short .") == (
        "the plot soars and the jokes fall flat .")
    assert transfer_edits(src, rec, rec) == src
    assert transfer_edits("a b c d e", "q r s", "q r t") == "a b c d e"  # nothing anchored
    assert transfer_edits("a b c", "a b c", "a b c d") == "a b c d"  # insertion at the end
    # keep= drops the edits it rejects (AIP: edits that bring in mangled words)
    dec = "the plot soars and the jokes fall flaaat ."
    assert transfer_edits(src, src, dec) == dec
    known = {"the", "plot", "soars", "and", "jokes", "fall", "flat", "."}
    assert transfer_edits(src, src, dec, keep=lambda ws: all(w in known for w in ws)) == (
        "the plot soars and the jokes fall flat .")



def test_repair_words_restores_garbled_copies_only():
    from cfwidgets.methods.text_candidates import repair_words

    src = "jagger obviously relishes every self-mocking moment ."
    vocab = {"jagger", "every", "moment", ".", "hates", "obviously"}
    # a garbled copy comes back; a known new word and an unknown word with no look-alike stay
    assert repair_words(src, "jagger obviously hates every self-wcking moment .", vocab) == (
        "jagger obviously hates every self-mocking moment .")
    assert repair_words(src, "jagger zzqx every moment .", vocab) == "jagger zzqx every moment ."
    assert repair_words(src, src, set()) == src


def test_hotflip_cuts_inputs_longer_than_the_classifier_reads(tiny_clf):
    from cfwidgets.methods import HotFlip

    long = " ".join(["a rather long and winding sentence about a film"] * 8) + " ."
    t = int(_targets(tiny_clf, [long])[0])
    with pytest.warns(UserWarning, match="exceed the classifier's 64 tokens"):
        res = HotFlip(tiny_clf).explain([long], t, max_flips=1)
    assert res.meta["truncated"] == [0] and long.startswith(res.x[0]) and len(res.x[0]) < len(long)
    assert len(res.x_cf[0].split()) == len(res.x[0].split())


def test_result_rows_by_index_list_and_mask(tiny_clf):
    """A result restricted to listed rows (what the per-kind figures use) keeps the rows'
    texts, targets, probabilities and per-row meta together, in the order given."""
    from cfwidgets.methods import HotFlip

    res = HotFlip(tiny_clf).explain(SENTS, _targets(tiny_clf, SENTS), max_flips=2)
    sub = res[[2, 0]]
    assert sub.x == [res.x[2], res.x[0]] and sub.x_cf == [res.x_cf[2], res.x_cf[0]]
    assert sub.target.tolist() == [int(res.target[2]), int(res.target[0])]
    torch.testing.assert_close(sub.probs_cf, res.probs_cf[[2, 0]])
    for k, v in res.meta.items():
        if k.startswith("per_row") and isinstance(v, list) and len(v) == 3:
            assert sub.meta[k] == [v[2], v[0]], k
    mask = torch.tensor([False, True, True])
    assert res[mask].x == res.x[1:] and res[mask].target.tolist() == res.target[1:].tolist()
    with pytest.raises(IndexError, match="3 entries"):
        res[torch.tensor([True, False])]
    with pytest.raises(IndexError, match="out of range"):
        res[[0, 5]]
    img = _image_result()
    assert img[[1]].x.shape == (1, 1, 2, 2) and img[[1]].x[0, 0, 0, 0] == 1


def _image_result():
    """A small image result of 2 rows."""
    from cfwidgets.result import CounterfactualResult

    x = torch.stack([torch.zeros(1, 2, 2), torch.ones(1, 2, 2)])
    return CounterfactualResult(x, x.clone(), torch.tensor([0, 1]), torch.eye(2), torch.eye(2),
                                meta={"per_row_note": ["a", "b"]})


def test_evaluate_text_reports_the_fluency_judge_apart(tiny_clf):
    """The independent fluency judge's perplexity ratio sits beside reviews/lm's and is
    named; a garbled word costs more under a character LM than its clean form."""
    from cfwidgets.methods import HotFlip
    from cfwidgets.metrics.text import evaluate_text
    from cfwidgets.models.text_judges import CharLMJudge
    from cfwidgets.models.text_lm import TextLM, TextLMConfig

    torch.manual_seed(0)
    res = HotFlip(tiny_clf).explain(SENTS, _targets(tiny_clf, SENTS), max_flips=2)
    lm = TextLM(TextLMConfig(n_embd=16, n_layer=1, n_head=2)).eval()
    fj = CharLMJudge(emb=8, hidden=16, layers=1, dropout=0.0).eval()
    with pytest.raises(RuntimeError, match="fit_unigram"):  # SLOR needs its unigram
        fj.perplexity(["a film ."])
    fj.fit_unigram(SENTS)
    row = evaluate_text(res, lm=lm, fluency_judge=fj, similarity_model=False)
    assert row["judges"]["judge_ppl_ratio"] == "CharLMJudge"
    assert row["judges"]["ppl_ratio"] == "TextLM"
    assert row["judge_ppl_ratio"] > 0
    # exp(-SLOR) is no perplexity: only its ratio is reported, for a judge and for an lm
    assert "judge_ppl_source" not in row and "judge_ppl_cf" not in row
    as_lm = evaluate_text(res, lm=fj, similarity_model=False)
    assert as_lm["ppl_ratio"] == row["judge_ppl_ratio"] and "ppl_source" not in as_lm
    assert "ppl_source" in row  # reviews/lm-like models keep their perplexities
    p = fj.perplexity(["a film .", "a film ."])
    assert p.shape == (2,) and torch.allclose(p[0], p[1])
    with pytest.raises(TypeError, match="list of strings"):
        fj.perplexity("a film .")


def test_candidates_that_flip_rank_before_those_that_do_not():
    """Below the confidence, a candidate the classifier assigns to the target outranks a
    closer one that keeps the source's class (a row that never reaches the confidence
    then still returns a flip where it found one)."""
    from cfwidgets.methods.text_candidates import _Draft, rank

    src = "the plot drags and the jokes fall flat ."
    close = _Draft(text="the plot drags and the jokes fall short .", probs=torch.tensor([0.7, 0.3]),
                   a=torch.zeros(4), step=None, restart=0, valid=False, kind="decode")
    flips = _Draft(text="the plot soars and the jokes land well .", probs=torch.tensor([0.3, 0.7]),
                   a=torch.zeros(4), step=None, restart=1, valid=False, kind="decode")
    ranked, _ = rank([[close, flips]], [src], torch.tensor([1]), fluency_weight=0.0,
                     nonword_weight=0.0, ending_weight=0.0)
    assert [c.text for c in ranked[0]] == [flips.text, close.text]
    assert ranked[0][0].edit_distance > ranked[0][1].edit_distance  # not by closeness
