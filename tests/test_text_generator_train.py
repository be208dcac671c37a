"""One test per training option of the text generator (cfwidgets.zoo.text_generator_train),
on a tiny model and a batch of three sentences: each option changes what its doc says and
nothing when it is off. (The full loop on a small corpus: test_text_models, slow.)"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from cfwidgets.data.text import EOS_ID, MASK_ID, text_attributes
from cfwidgets.models.text_classifier import TextClassifier, TextClassifierConfig, pad_batch
from cfwidgets.models.text_generator import TextGenerator, TextGeneratorConfig
from cfwidgets.models.text_generator_data import AttributeMasker, GeneratorCorpus, make_batch
from cfwidgets.zoo.text_generator_train import (
    TrainConfig,
    consistency_step,
    punctuation_tokens,
    reconstruction_step,
)

TEXTS = ["the jokes fall flat , sadly .", "a wonderful , moving film !", "not a very good movie ."]
LEXICON = {"flat": -2.0, "sadly": -1.0, "wonderful": 2.0, "moving": 1.0, "good": 1.0}


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    gen = TextGenerator(TextGeneratorConfig(d_model=32, encoder_layers=1, decoder_layers=1, heads=2,
                                            ffn_dim=64, latent_dim=8)).eval()
    clf = TextClassifier(TextClassifierConfig(hidden_size=32, num_layers=1, num_heads=2,
                                              intermediate_size=64)).eval()
    masker = AttributeMasker(lexicon=LEXICON)
    corpus = GeneratorCorpus(TEXTS, text_attributes(TEXTS, np.array([0.0, 1.0, 0.0])), masker, 48)
    return gen, clf, masker, corpus


def _batch(tiny, p_attr=(1.0, 1.0, 1.0), p_token=0.0):
    gen, clf, masker, corpus = tiny
    src, tgt, kept, a = make_batch(corpus, [0, 1, 2], masker, np.random.default_rng(0), p_attr, p_token)
    src, sm = pad_batch(src)
    tgt, tm = pad_batch(tgt)
    pos_kind, _ = pad_batch([(k + 1).astype(np.int32) for k in kept])
    return src, sm, tgt, tm, a, pos_kind


def _consistency(tiny, cfg, seed=0):
    gen, clf, masker, _ = tiny
    src, sm, tgt, tm, a, pos_kind = _batch(tiny)
    torch.manual_seed(seed)
    _, _, z, zm, real = reconstruction_step(gen, cfg, src, sm, tgt, tm, a)
    loss, stats, probs = consistency_step(
        gen, clf, cfg, z=z, zm=zm, a=a, tgt=tgt, tm=tm, real=real, kept=pos_kind == 2,
        attr_slot=pos_kind == 1, punct=punctuation_tokens(masker.tok, gen.config.vocab_size),
        gumbel_gen=torch.Generator().manual_seed(seed))
    gen.eval()  # the greedy prefix leaves the generator in train mode, as in training
    return loss, stats, probs, tgt, real, pos_kind


def _one_hot_at(probs, tgt, where):
    """(B, T-1) True where the classifier read the source's own token as a one-hot."""
    return probs[:, 1:].gather(-1, tgt[:, 1:, None])[..., 0].eq(1.0) & where


CFG = TrainConfig(latent_noise=0.0, p_word_dropout=0.0, copy_weight=0.0, consistency_weight=1.0)


# ------------------------------------------------------------------ the batch
def test_p_attr_mask_masks_attribute_words_per_class(tiny):
    src_all = _batch(tiny, p_attr=(1.0, 1.0, 1.0))[0]
    src_none = _batch(tiny, p_attr=(0.0, 0.0, 0.0))[0]
    src_neg_only = _batch(tiny, p_attr=(0.0, 1.0, 0.0))[0]
    n_mask = lambda s: int((s == MASK_ID).sum())  # noqa: E731
    # flat, sadly, wonderful, moving, good (sentiment) + not (negation) + very (intensifier)
    assert n_mask(src_all) == 7 and n_mask(src_none) == 0 and n_mask(src_neg_only) == 1


def test_p_token_mask_masks_other_tokens(tiny):
    src_none = _batch(tiny, p_attr=(0.0, 0.0, 0.0), p_token=0.0)[0]
    src_all = _batch(tiny, p_attr=(0.0, 0.0, 0.0), p_token=1.0)[0]
    real = src_none > 4
    assert not (src_none == MASK_ID).any() and bool((src_all[real] == MASK_ID).all())


# ------------------------------------------------------------------ reconstruction
def test_latent_noise_perturbs_z_only_when_on(tiny):
    gen = tiny[0]
    src, sm, tgt, tm, a, _ = _batch(tiny)
    z_clean = gen.encode(src, sm)[0]
    for noise, changed in ((0.0, False), (0.5, True)):
        torch.manual_seed(0)
        z = reconstruction_step(gen, TrainConfig(latent_noise=noise, p_word_dropout=0.0), src, sm, tgt, tm, a)[2]
        assert (not torch.allclose(z, z_clean)) == changed
        if changed:
            assert 0.3 < float((z - z_clean).std()) < 0.7


def test_p_word_dropout_replaces_decoder_inputs_by_mask(tiny, monkeypatch):
    gen = tiny[0]
    src, sm, tgt, tm, a, _ = _batch(tiny)
    seen = []
    orig = gen.decode_logits
    monkeypatch.setattr(gen, "decode_logits", lambda z, a_, d, m: seen.append(d.clone()) or orig(z, a_, d, m))
    for p in (0.0, 1.0):
        reconstruction_step(gen, TrainConfig(latent_noise=0.0, p_word_dropout=p), src, sm, tgt, tm, a)
    words = tgt[:, :-1] > 4
    assert not (seen[0] == MASK_ID).any() and bool((seen[1][words] == MASK_ID).all())
    assert torch.equal(seen[1][~words], tgt[:, :-1][~words])  # specials and pads stay


# ------------------------------------------------------------------ consistency
def test_consistency_positions_masked_fixes_all_but_attribute_words(tiny):
    _, _, probs, tgt, real, pos_kind = _consistency(tiny, CFG)
    slot = pos_kind[:, 1:] == 1
    assert not _one_hot_at(probs, tgt, real).any()  # "all": the decoder's soft tokens everywhere
    _, _, probs_m, tgt, real, _ = _consistency(tiny, replace(CFG, consistency_positions="masked"))
    assert bool(_one_hot_at(probs_m, tgt, real & ~slot).eq(real & ~slot).all())
    assert not _one_hot_at(probs_m, tgt, real & slot).any() and bool((real & slot).any())


def test_eos_weight_adds_its_term_and_fixes_the_end(tiny):
    _, stats, probs, tgt, real, _ = _consistency(tiny, CFG)
    at_eos = (tgt[:, 1:] == EOS_ID) & real
    assert "eos" not in stats and not _one_hot_at(probs, tgt, at_eos).any()
    loss_e, stats_e, probs_e, *_ = _consistency(tiny, replace(CFG, eos_weight=2.0))
    assert stats_e["eos"] > 0 and bool(_one_hot_at(probs_e, tgt, at_eos).eq(at_eos).all())
    # the term enters with its weight: loss = eos_weight * eos + weight * con
    assert float(loss_e) == pytest.approx(2.0 * stats_e["eos"] + stats_e["con"], rel=1e-5)


def test_protect_punctuation_extends_the_eos_treatment(tiny):
    base = replace(CFG, eos_weight=1.0)
    _, _, probs, tgt, real, _ = _consistency(tiny, base)
    punct = punctuation_tokens(tiny[2].tok, tiny[0].config.vocab_size)[tgt[:, 1:]] & real
    assert bool(punct.any()) and not _one_hot_at(probs, tgt, punct).any()
    _, _, probs_p, *_ = _consistency(tiny, replace(base, protect_punctuation=True))
    assert bool(_one_hot_at(probs_p, tgt, punct).eq(punct).all())


def test_copy_weight_adds_the_copy_term(tiny):
    loss0, stats0, *_ = _consistency(tiny, CFG)
    loss1, stats1, *_ = _consistency(tiny, replace(CFG, copy_weight=3.0))
    assert "copy" not in stats0 and stats1["copy"] > 0
    assert float(loss1 - loss0) == pytest.approx(3.0 * stats1["copy"], rel=1e-4)


def test_consistency_weight_scales_the_classifier_term(tiny):
    loss1, stats1, *_ = _consistency(tiny, CFG)
    loss_half, stats_half, *_ = _consistency(tiny, replace(CFG, consistency_weight=0.5))
    assert stats1["con"] == pytest.approx(stats_half["con"])
    assert float(loss_half) == pytest.approx(0.5 * float(loss1), rel=1e-5)


def test_consistency_tau_sharpens_the_soft_decode(tiny):
    peak = {tau: float(_consistency(tiny, replace(CFG, consistency_tau=tau))[2]
                       [:, 1:].max(-1).values.mean()) for tau in (2.0, 0.1)}
    assert peak[0.1] > peak[2.0]


def test_consistency_prefix_greedy_decodes_its_own_prefix(tiny):
    cfg = replace(CFG, consistency_prefix="greedy", copy_weight=1.0, eos_weight=1.0)
    loss, stats, probs, tgt, *_ = _consistency(tiny, cfg)
    # no source teacher-forcing: the copy and [EOS] guards (source positions) do not apply
    assert set(stats) == {"con", "con_acc"} and float(loss) == pytest.approx(stats["con"])
    assert probs.shape[-1] == tiny[0].config.vocab_size


# ------------------------------------------------------------------ schedule, record, checks
def test_lr_schedule_warms_up_then_decays_to_a_tenth():
    cfg = TrainConfig(lr=1.0, warmup=10, steps=100)
    assert cfg.lr_at(0) == pytest.approx(0.1 * (0.1 + 0.9 * 0.5 * (1 + np.cos(0))))
    assert cfg.lr_at(9) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * 0.09)))
    assert cfg.lr_at(100) == pytest.approx(0.1) and cfg.lr_at(50) == pytest.approx(0.55)


def test_consistency_start_and_every():
    cfg = TrainConfig(consistency_start=4, consistency_every=3)
    assert [s for s in range(12) if cfg.consistency_due(s)] == [6, 9]
    assert not any(TrainConfig(consistency_weight=0.0).consistency_due(s) for s in range(2000))


def test_hparams_record_the_weight_shaping_options():
    hp = TrainConfig(p_attr_mask=[0.8, 0.4, 0.2], seed=3).hparams()
    assert hp["p_attr_mask"] == [0.8, 0.4, 0.2] and hp["seed"] == 3
    assert not {"max_seconds", "eval_every", "eval_n", "log_every", "save_every_s"} & set(hp)
    assert len(hp) == 21


@pytest.mark.parametrize("bad", [{"consistency_positions": "some"}, {"consistency_prefix": "beam"},
                                 {"sentiment_source": "gold"}, {"p_attr_mask": (0.5,)},
                                 {"rt_fraction": 0.0}, {"batch_size": 1}])
def test_bad_options_are_refused_up_front(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        TrainConfig(**bad)
