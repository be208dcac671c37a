"""TextCounterfactualWidget without a kernel (tiny random models): input, run, views,
method switch, attribute weights, errors, static fallback."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("ipywidgets")

SENTS = ["the plot drags and the jokes fall flat .", "a wonderful , moving film .",
         "an utterly charming comedy with a big heart ."]


@pytest.fixture(scope="module")
def methods():
    from cfwidgets.methods import AIPText, HotFlip
    from cfwidgets.models.text_adapters import ZooTextClassifier
    from cfwidgets.models.text_classifier import TextClassifier, TextClassifierConfig
    from cfwidgets.models.text_generator import TextGenerator, TextGeneratorConfig

    torch.manual_seed(0)
    clf = ZooTextClassifier(TextClassifier(TextClassifierConfig(
        hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64))).eval()
    gen = TextGenerator(TextGeneratorConfig(d_model=32, encoder_layers=1, decoder_layers=1, heads=2,
                                            ffn_dim=64, latent_dim=8, max_len=24)).eval()
    return {"AIP": AIPText(clf, gen), "HotFlip": HotFlip(clf)}


def test_widget_runs_and_shows_a_word_diff(methods):
    import numpy as np

    from cfwidgets.data.text import TextDataset
    from cfwidgets.widgets.text import TextCounterfactualWidget

    data = TextDataset(SENTS, np.array([0, 1, 1]), np.zeros((3, 4), np.float32), np.arange(3),
                       ["negative", "positive"], ["sentiment", "length", "negation", "intensifier"],
                       "test", "test")
    w = TextCounterfactualWidget(methods, data, defaults={"steps": 4, "decode_every": 2, "restarts": 2})
    assert w.text_area.value == SENTS[0] and "label" in w.input_info.value
    w.index = 1
    assert w.text_area.value == SENTS[1]
    w.set_text("The plot drags and the jokes fall flat.")
    assert w.current_input() == ["The plot drags and the jokes fall flat."]
    assert w.target != int(w._probs_before.argmax())
    w.set_weight("length", lock=True)
    assert w.attribute_weights[1] == 100.0 and w.weight_sliders["length"].disabled
    assert w.explain_kwargs()["attribute_weights"][1] == 100.0
    res = w.run(block=True)
    assert res is w.result and isinstance(res.x_cf[0], str)
    assert res.meta["config"]["attribute_weights"][1] == 100.0
    assert "cfw-diff" in w.after_view.value and "before:" in w.before_view.value
    assert "candidates" in w.candidates_view.value and "unknown words" in w.candidates_view.value
    n_rows = w.candidates_view.value.count("<tr>") - 1
    distinct = {" ".join(c.text.split()) for c in res.meta["per_row_candidates"][0]}
    assert n_rows == len(distinct)  # one row per distinct candidate (repeats folded, counted)
    assert "edits / length" in w.metrics_view.value
    assert w.trajectory_slider.max == len(res.trajectory) - 1
    w.trajectory_slider.value = 0  # scrub to the start: shows the first hard decode
    assert "step 0" in w.after_view.value or len(res.trajectory) == 1
    page = w.static_html()
    assert "word diff" in page and "<table" in page
    # switch to HotFlip: the attribute weights hide, its knobs appear
    w.method_dropdown.value = "HotFlip"
    assert w.weight_box.layout.display == "none" and "max_flips" in w.knob_controls
    res2 = w.run(block=True)
    assert res2.meta["method"] == "hotflip" and "word flips" in w.candidates_view.value
    assert "attribute_weights" not in w.explain_kwargs()


def test_widget_errors_are_shown_not_raised(methods):
    from cfwidgets.widgets.text import TextCounterfactualWidget

    w = TextCounterfactualWidget(methods["HotFlip"], SENTS)
    w.set_text("   ")
    assert w.error is None or "whitespace" not in str(w.error)
    w.run(block=False)
    w.wait(60)
    assert isinstance(w.error, ValueError) and "whitespace" in str(w.error)
    assert "ValueError" in w.error_box.value
    with pytest.raises(TypeError, match="text methods"):
        from cfwidgets.methods import Wachter

        TextCounterfactualWidget(Wachter(torch.nn.Linear(2, 2)), SENTS)
