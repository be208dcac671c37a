"""Issue 12, kernel-free: what a person met in the browser walk-through, one test each
(build the widget, set values, call the handlers, assert on the widget's state / HTML).

Image widgets use the tiny linear classifier of ``test_widgets``; the text widget the
tiny random text models of ``test_text_cf_widget``; the attribute and diffeomorphic
widgets the zoo's MNIST models (as their own tests do)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import ipywidgets as W
import pytest
import torch
from test_text_cf_widget import SENTS, methods  # noqa: F401 - the tiny text methods fixture
from test_widgets import Tiny, make_widget

from cfwidgets.viz import html as vh

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def descendants(w) -> list:
    """Every widget under ``w`` (children and accordion/tab pages)."""
    out, todo = [], [w]
    while todo:
        x = todo.pop()
        out.append(x)
        todo.extend(getattr(x, "children", ()) or ())
    return out


def shown(w) -> list:
    """The widgets a person can see: descendants not hidden with display none."""
    out, todo = [], [w]
    while todo:
        x = todo.pop()
        lay = getattr(x, "layout", None)
        if lay is not None and lay.display == "none":
            continue
        out.append(x)
        todo.extend(getattr(x, "children", ()) or ())
    return out


# ----------------------------------------------------------------- header
@pytest.fixture(scope="module")
def attr_widget():
    from cfwidgets.data import load_mnist
    from cfwidgets.widgets.attributes import AttributeWidget

    return AttributeWidget.from_zoo("mnist", load_mnist("test").subset(10, seed=0),
                                    defaults={"steps": 40})


def test_header_follows_the_attribute_method_switch(attr_widget):
    w = attr_widget
    w.method_dropdown.value = "gci"
    assert "GCI" in w.header.value and "Liu" in w.header.value
    w.run(block=True)
    w.method_dropdown.value = "aip"
    try:
        assert "ready" in w.status.value and w.result is None  # the old method's result is gone
        assert "AIP (latent" in w.header.value and "Yang" in w.header.value
        assert "GCI" not in w.header.value and "Kailkhura" not in w.header.value
    finally:
        w.method_dropdown.value = "gci"


def test_header_follows_the_text_method_switch(methods):  # noqa: F811
    from cfwidgets.widgets.text import TextCounterfactualWidget

    w = TextCounterfactualWidget(methods, SENTS)
    assert "AIP on text" in w.header.value
    w.method_dropdown.value = "HotFlip"
    assert "HotFlip" in w.header.value and "Ebrahimi" in w.header.value
    assert "AIP" not in w.header.value


# ------------------------------------------------------------------ target
def test_the_predicted_class_is_not_offered_as_a_target():
    w = make_widget()
    for i in range(w.n_inputs):
        w.index = i
        pred = int(w._probs_before.argmax())
        offered = [v for _, v in w.target_dropdown.options]
        assert pred not in offered and len(offered) == len(w.class_names) - 1
        assert w.target != pred
    with pytest.raises(ValueError, match="already predicts") as e:
        w.target = pred
    assert "topk" not in str(e.value) and "choose another target" in str(e.value)


# ------------------------------------------------------------------ counts
def test_loss_chart_and_status_count_the_same_steps():
    w = make_widget(defaults={"steps": 60, "lr": 0.05})
    res = w.run(block=True)
    used = int(res.steps[0])
    assert bool(res.success[0]) and f"in {used} steps" in w.status.value
    assert len(res.losses["loss"]) == used + 1  # losses of steps 0 .. used
    assert f">step {used}</text>" in w.loss_view.value  # the x axis ends at that step
    assert f"{used + 1} steps" not in w.loss_view.value
    # a run that uses its whole budget: the chart ends at the budget too
    w.set_knobs(steps=5, lr=1e-4, confidence=0.9999)
    res = w.run(block=True)
    assert not bool(res.success[0]) and "in 5 steps" in w.status.value
    assert ">step 5</text>" in w.loss_view.value


def test_target_change_empties_the_progress_bar():
    w = make_widget()
    res = w.run(block=True)
    assert w.progress.bar_style == "success" and w.progress.value == w.progress.max
    w.target = [k for k in range(3) if k not in (w.target, int(res.pred[0]))][0]
    assert "ready" in w.status.value
    assert w.progress.value == 0 and w.progress.bar_style == ""


# --------------------------------------------------------------- scrubbing
def test_scrubbing_reuses_rendered_frames():
    clf = Tiny()
    w = make_widget(clf, defaults={"steps": 40, "record_every": 2, "confidence": 0.9999})
    res = w.run(block=True)
    T = len(res.trajectory)
    before = clf.calls
    for i in [*range(T), *reversed(range(T))]:  # there and back: each frame rendered once
        w.trajectory_slider.value = i
        assert w.error is None
    assert clf.calls - before <= 1  # one batched call for every snapshot's probabilities
    assert len(w.path.cache) == T  # every snapshot encoded once
    w.trajectory_slider.value = 0
    assert w.after_image.value == w._png(res.trajectory[0, 0])
    assert "class='cfw-marker'" in w.loss_view.value  # the position is marked on the curve


# -------------------------------------------------------- layout, app mode
def test_layout_steps_first_the_rest_in_advanced():
    w = make_widget()
    col = list(w.control_panel.children)
    kids = [descendants(c) for c in col]
    where = {name: next(i for i, d in enumerate(kids) if obj in d)
             for name, obj in (("target", w.target_dropdown), ("steps", w.knob_controls["steps"].widget),
                               ("run", w.run_button), ("lr", w.knob_controls["lr"].widget),
                               ("seed", w.seed_box))}
    assert where["target"] < where["steps"] < where["run"] < where["lr"] == where["seed"]
    adv = col[where["lr"]]
    assert isinstance(adv, W.Accordion) and adv.get_title(0) == "Advanced" and adv.selected_index is None
    w.knob_controls["lr"].value = 0.02  # closed or open, the same control keeps its value
    adv.selected_index = 0
    adv.selected_index = None
    assert w.knob_values()["lr"] == pytest.approx(0.02)


def test_app_mode_shows_only_what_a_person_needs():
    w = make_widget(app=True, defaults={"steps": 80})
    visible = shown(w)
    for hidden in (w.device_dropdown, w.seed_box, w.preview_slider, *[c.widget for c in w.knob_controls.values()]):
        assert hidden not in visible
    for needed in (w.target_dropdown, w.run_button, w.stop_button, w.progress, w.index_slider):
        assert needed in visible
    assert "cfw-intro" in w.header.value and "voila" not in w.header.value.lower()
    assert w.knob_values()["steps"] == 80  # defaults still apply
    assert w.run(block=True) is not None


# --------------------------------------------------------------- numbers
def test_numbers_for_people():
    assert vh.fmt(0.97312, "%") == "97.3 %" and vh.fmt(1.0, "%") == "100 %"
    assert vh.fmt(0.0794412) == "0.0794" and vh.fmt(-0.02711) == "-0.0271" and vh.fmt(2.5, "s") == "2.5 s"
    line = vh.metrics_html({"sparsity": 0.0004, "l1": 0.0123456, "target_prob": 0.08912})
    assert "0.04 %" in line and "&gt; 0.05" in line  # not "changed px 0.0 %"
    assert "8.91 %" in line and "0.0123" in line
    svg = vh.loss_svg({"a very long loss name": [3.91234, 1.0]}, width=200)
    assert "3.91234" not in svg and "a very long" in svg and "a very long loss name" not in svg


def test_metrics_table_for_people():
    rows = [{"method": "AIP", "flip_rate": 1.0, "edit_distance_norm": 0.07944, "delta": -0.02711,
             "x": ["a long sentence"]}]
    t = vh.table_html(rows)
    assert "flip_rate" not in t and "flipped" in t and "100 %" in t and "7.94 %" in t
    assert "-0.0271" in t and "a long sentence" not in t and "overflow-x:auto" in t


def test_labels_fit_their_boxes():
    from cfwidgets.widgets.controls import DESCRIPTION_WIDTH

    w = make_widget()
    room = int(DESCRIPTION_WIDTH.rstrip("px"))
    for c in w.knob_controls.values():  # ~7 px a character at 13 px
        assert 7 * len(c.widget.description or "") <= room, c.widget.description
    assert 7 * len("gan inversion steps") <= room
    w.run(block=True)
    assert "white-space:nowrap" in w.trajectory_label.value


# --------------------------------------------------------------- text widget
def test_text_widget_info_line_for_a_typed_sentence(methods):  # noqa: F811
    from cfwidgets.widgets.text import TextCounterfactualWidget

    w = TextCounterfactualWidget(methods["HotFlip"], SENTS)
    assert f"#0 of {len(SENTS)}" in w.input_info.value
    w.set_text("my own words about this film .")
    assert "#0 of" not in w.input_info.value and "your sentence" in w.input_info.value
    w.set_text(SENTS[0])  # back to the data's sentence
    assert f"#0 of {len(SENTS)}" in w.input_info.value


def test_live_loss_leaves_out_steps_without_a_loss(methods):  # noqa: F811
    from cfwidgets.widgets.text import TextCounterfactualWidget

    w = TextCounterfactualWidget(methods["AIP"], SENTS)
    t = torch.tensor
    w.runner.live_losses = {"loss": [t(1.5), t(0.0), t(0.5)], "class": [t(1.0), t(0.0), t(0.25)]}
    assert w.runner.live_loss_values() == {"loss": [1.5, 0.5], "class": [1.0, 0.25]}
    w.loss.show(w.runner.live_loss_values())
    assert "loss 0.5<" in w.loss_view.value


def _cand(text, valid, rank, p):
    from cfwidgets.methods.text_candidates import Candidate

    return Candidate(text=text, valid=valid, rank=rank, p_target=p, edit_distance=1, edit_norm=0.1,
                     ppl_ratio=1.2, nonword_rate=0.0, keeps_end=True, kind="decode", restart=0,
                     step=4, score=0.1)


def test_candidates_valid_first_repeats_folded_and_wrapped():
    from cfwidgets.widgets.text import candidates_html

    src = "the plot drags ."
    res = SimpleNamespace(x=[src], meta={"ranked_by": "edits", "per_row_candidates": [[
        _cand("the plot sings .", False, 0, 0.36), _cand("the plot flies .", True, 1, 0.90),
        _cand("the plot flies .", True, 2, 0.90)]]})
    page = candidates_html(res, 0)
    assert page.count("<tr>") == 1 + 2  # heading + two distinct sentences
    assert page.index("flies") < page.index("sings")  # valid above invalid
    assert "&times;2" in page and "overflow-x:auto" in page and "90 %" in page


def test_text_run_shows_no_transformers_future_warning(methods):  # noqa: F811
    from cfwidgets.widgets.text import TextCounterfactualWidget

    m = methods["HotFlip"]
    w = TextCounterfactualWidget(m, SENTS, defaults={"max_flips": 2})
    orig = m.explain

    def noisy(*a, **k):
        warnings.warn("`past_key_values` is deprecated and will be removed", FutureWarning, stacklevel=1)
        return orig(*a, **k)

    m.explain = noisy
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            w.run(block=True)
    finally:
        del m.explain
    assert w.result is not None
    assert not [x for x in seen if "past_key_values" in str(x.message)]


# ----------------------------------------------------------- attribute widget
def test_attribute_bars_use_the_difference_map_colours():
    from cfwidgets.analysis.views import attribute_bars_html

    meta = {"attribute_names": ["up", "down"], "attribute_units": ["px", "px"],
            "attribute_kinds": ["continuous", "continuous"], "attribute_changes": torch.tensor([[1.0, -1.0]]),
            "attributes_before": torch.tensor([[1.0, 1.0]]), "attributes_after": torch.tensor([[2.0, 0.0]]),
            "attribute_deltas": torch.tensor([[1.0, -1.0]])}
    page = attribute_bars_html(SimpleNamespace(meta=meta), 0)
    up, down = page.split("<tr>")[1], page.split("<tr>")[2]
    red, blue = "#c0392b", "#2f6fb0"  # RdBu_r: red = more (ink added), blue = less
    assert red in up and blue not in up and blue in down and red not in down


def test_attribute_numbers_agree_after_a_run(attr_widget):
    w = attr_widget
    res = w.run(block=True)
    p = vh.fmt(float(res.target_prob[0]), "%")
    assert f"p(target) <b>{p}</b>" in w.metrics_view.value
    assert f"p(target) {p}" in w.whatif_info.value  # the what-if starts at the counterfactual
    assert f"p(target) {p}" in w.walk_label.value
    if not bool(res.success[0]):
        assert f"p(target) {p}" in w.after_label.value
    # the front end echoes the what-if values rounded to its slider steps: not a what-if
    shown = w.after_image.value
    for c in w.whatif_controls.values():
        if isinstance(c, W.FloatSlider):
            c.value = round(c.value / c.step) * c.step
    assert "what-if" not in w.after_label.value and w.after_image.value == shown
    # a real move of a slider is one
    name, c = next((n, c) for n, c in w.whatif_controls.items() if isinstance(c, W.FloatSlider))
    c.value = c.min if c.value > (c.min + c.max) / 2 else c.max
    assert "what-if" in w.after_label.value


# ------------------------------------------------------- diffeomorphic widget
@pytest.fixture(scope="module")
def diffeo():
    from cfwidgets import zoo
    from cfwidgets.data import load_mnist
    from cfwidgets.widgets.diffeomorphic import DiffeomorphicWidget

    load = lambda n: zoo.load(n, device="cpu", progress=False)  # noqa: E731
    return DiffeomorphicWidget(load("mnist/cnn"), {"flow": load("mnist/flow"), "gan": load("mnist/gan")},
                               load_mnist("test").x[:3],
                               defaults={"steps": 30, "gan_inversion_steps": 20, "record_every": 3})


def test_diffeomorphic_path_charts_after_a_run(diffeo):
    w = diffeo
    w.generator = "flow"
    w.pixel_baseline = True
    res = w.run(block=True)
    steps = res.trajectory_steps
    page = w.path_view.value
    assert "bits/dim along the path" in page and "p(target) along the path" in page
    assert ">pixels " in page and ">flow " in page  # both curves named in the legend
    assert f">step {steps[-1]}</text>" in page and f"{len(steps)} steps" not in page
    w.trajectory_slider.value = 0  # scrubbing marks the position (step 0: the left edge) on both charts
    assert w.path_view.value.count("class='cfw-marker' x1='6.0'") == 2
    assert "class='cfw-marker'" in w.loss_view.value


def test_diffeomorphic_stop_keeps_the_run_captions(diffeo):
    w = diffeo
    w.generator = "gan"
    w.pixel_baseline = True
    assert "(preview)" in w.rec_label.value  # before a run: the short inversion
    stop_at = 3

    def stopper(step, _state):
        if step == stop_at:
            w.stop()

    w.on_step(stopper)
    try:
        res = w.run(block=True)
    finally:
        w.runner.listeners.remove(stopper)
    assert res.stopped
    assert "(preview)" not in w.rec_label.value and "this run" in w.rec_label.value
    assert w.pixel_result is None and w.pixel_note.layout.display != "none"
    assert "not run" in w.pixel_note.value and "stopped" in w.pixel_note.value


# ------------------------------------------------------------------ notebooks
def test_notebook_01_draws_the_path_figure():
    nb = json.loads((NOTEBOOKS / "01_diffeomorphic.ipynb").read_text())
    cell = next(c for c in nb["cells"] if c["cell_type"] == "code" and "bits_per_dim(r.trajectory" in "".join(c["source"]))
    kinds = [k for o in cell.get("outputs", []) for k in o.get("data", {})]
    texts = ["".join(o.get("data", {}).get("text/plain", "")) for o in cell.get("outputs", [])]
    assert "image/png" in kinds, kinds
    assert not any(t.startswith("<Figure size") for t in texts)
