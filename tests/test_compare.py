"""The comparison dashboard (issue 15): registry-driven cells, the sortable table, exports,
failures kept in their cell, Stop for all, the judges' independence, the drawing path."""

from __future__ import annotations

import json
import threading
import time

import pytest
import torch

from cfwidgets import data, zoo
from cfwidgets.analysis.compare import (
    Judges,
    budget_overrides,
    build_methods,
    load_judges,
    registered,
    run_comparison,
)
from cfwidgets.data.drawing import center_of_mass, mnist_like
from cfwidgets.methods import METHODS, Wachter
from cfwidgets.viz.compare import cell_html

BUDGET = 5


class LateMethod(Wachter):
    """A method registered after the dashboard was written."""

    name = "late_test"
    title = "Late (test)"


class BrokenMethod(Wachter):
    name = "broken_test"
    title = "Broken (test)"

    def _explain(self, x, target, cfg, *, probs, callback, generator):
        raise RuntimeError("boom: this test method always fails")


class SlowMethod(Wachter):
    """Wachter that never reaches its confidence and sleeps a little per step."""

    name = "slow_test"
    title = "Slow (test)"

    def _explain(self, x, target, cfg, *, probs, callback, generator):
        def cb(step, state):
            time.sleep(0.01)
            return callback(step, state) if callback else False

        return super()._explain(x, target, cfg, probs=probs, callback=cb, generator=generator)


@pytest.fixture(scope="module")
def mnist():
    return data.load_mnist("test")


@pytest.fixture(scope="module")
def judges():
    return load_judges("mnist", device="cpu")


def _disc_updates(overrides: dict) -> int:
    """DISC's updates in all: the query fit, two intermediate stages, the final stage."""
    return overrides["init_fit_steps"] + 2 * overrides["stage_steps"] + overrides["steps"]


def _widget(mnist, **kw):
    from cfwidgets.widgets import CompareWidget

    return CompareWidget(data=mnist, device="cpu", budget=kw.pop("budget", BUDGET), **kw)


def test_every_registered_image_method_gets_a_cell_including_a_late_one(mnist, monkeypatch):
    monkeypatch.setitem(METHODS, LateMethod.name, LateMethod)
    images = registered("image")
    assert {"wachter", "gci", "aip", "diffeomorphic", "ganmex", "late_test"} <= set(images)
    assert "hotflip" not in images and "hotflip" in registered("text")
    w = _widget(mnist)
    assert list(w.comparison.cells) == images
    comp = w.run(block=True)
    assert {n: c.status for n, c in comp.cells.items()} == {n: "done" for n in images}
    # every method got the same budget, through its own budget knob
    assert all(c.overrides == {"steps": BUDGET} for n, c in comp.cells.items() if n != "disc")
    # DISC's updates come from three knobs (query fit, stages, final): split to the same total
    assert _disc_updates(comp.cells["disc"].overrides) == BUDGET
    assert all(int(c.result.steps.max()) <= BUDGET for c in comp.cells.values())
    # each cell shows its method's after image and difference map
    for n, v in w.cells.items():
        assert v.body.value.count("data:image/png;base64,") == 2, n
    # the table names the independent judges of the judged columns
    assert "oracle agrees (mnist/oracle)" in w.table.value
    assert "IM1 realism (mnist/ae)" in w.table.value
    assert comp.judges == {"realism": "mnist/ae", "oracle": "mnist/oracle"}


def test_table_sorts_by_a_metric(mnist):
    w = _widget(mnist, methods=["wachter", "gci", "diffeomorphic", "ganmex"], budget=30)
    comp = w.run(block=True)
    l1 = {r["method"]: r["l1"] for r in comp.rows()}
    assert len(set(l1.values())) == 4
    w.sort("l1")  # best first = the smallest change first
    order = [r["method"] for r in comp.rows("l1")]
    assert order == sorted(l1, key=l1.get)
    shown = [w.table.value.index(f">{m}<") for m in order]
    assert shown == sorted(shown)
    w.sort("l1", best_first=False)
    shown = [w.table.value.index(f">{m}<") for m in order]
    assert shown == sorted(shown, reverse=True)
    with pytest.raises(ValueError, match="cannot sort by"):
        w.sort("nope")


def test_export_dict_and_html_contain_every_method(mnist, tmp_path):
    w = _widget(mnist, methods=["wachter", "gci", "ganmex"])
    w.run(block=True)
    d = w.to_dict()
    assert set(d["methods"]) == {"wachter", "gci", "ganmex"}
    json.dumps(d)  # plain data
    for name, m in d["methods"].items():
        assert m["status"] == "done" and len(m["x_cf"]) == 1, name
        assert m["metrics"]["validity"] in (0.0, 1.0) and "oracle" in m["metrics"]
    assert d["judges"]["oracle"] == "mnist/oracle" and d["budget"] == BUDGET
    page = w.export_html(tmp_path / "cmp.html")
    assert (tmp_path / "cmp.html").read_text() == page
    assert page.startswith("<!doctype html>") and "<script" not in page
    for title in ("Wachter (pixels)", "GCI (attributes)", "GANMEX (translator)"):
        assert page.count(title) >= 2, title  # its cell and its table row
    # input + after + difference per method: the page holds its images itself
    assert page.count("data:image/png;base64,") == 1 + 2 * 3


def test_a_failing_method_shows_its_error_and_the_others_run(mnist, monkeypatch):
    monkeypatch.setitem(METHODS, BrokenMethod.name, BrokenMethod)
    w = _widget(mnist, methods=["wachter", "broken_test", "gci"])
    comp = w.run(block=True)
    assert comp.cells["broken_test"].status == "failed"
    assert "boom: this test method always fails" in comp.cells["broken_test"].error
    assert "RuntimeError" in w.cells["broken_test"].body.value
    assert "boom" in w.cells["broken_test"].body.value
    assert comp.cells["wachter"].status == comp.cells["gci"].status == "done"
    assert [r["method"] for r in comp.rows()] == ["Wachter (pixels)", "GCI (attributes)"]
    assert w.error is None and "1 failed" in w.status.value
    # a method without zoo models for the data set fails at construction, in its cell too
    built = build_methods(["gci", "wachter"], "fashion", device="cpu")
    assert isinstance(built["gci"], ValueError)
    comp = run_comparison(built, data.load_fashion("test").x[:1], 3, budget=BUDGET)
    assert comp.cells["gci"].status == "failed" and "GCI.from_zoo" in comp.cells["gci"].error
    assert comp.cells["wachter"].status == "done"


def test_stop_stops_all(mnist, monkeypatch):
    monkeypatch.setitem(METHODS, SlowMethod.name, SlowMethod)
    w = _widget(mnist, methods=["slow_test", "wachter", "gci"], budget=2000)
    w.run(block=False)
    t0 = time.monotonic()
    while w.comparison.cells["slow_test"].step < 3 and time.monotonic() - t0 < 60:
        time.sleep(0.02)
    assert w.running
    w.stop()
    w.wait(60)
    assert not w.running
    cells = w.comparison.cells
    assert cells["slow_test"].status == "stopped" and cells["slow_test"].result.stopped
    assert cells["slow_test"].step < 2000
    assert cells["wachter"].status == cells["gci"].status == "not run"
    assert cells["wachter"].result is None
    assert "stopped" in w.status.value and w.stop_button.disabled and not w.run_button.disabled


def test_a_judge_the_method_steers_with_does_not_score_it(mnist):
    m = Wachter(zoo.load("mnist/cnn", device="cpu"))
    aes = zoo.load("mnist/ae", device="cpu")
    for oracle in (m.classifier, zoo.load("mnist/cnn", device="cpu")):  # same object, same zoo model
        comp = run_comparison({"wachter": m}, mnist.x[:1], 3, budget=BUDGET,
                              judges=Judges(autoencoders=aes, oracle=oracle))
        row = comp.cells["wachter"].row
        assert comp.cells["wachter"].status == "done"
        assert "oracle" not in row and row["not_judged_by"] == ["mnist/cnn"]
        assert "im1" in row  # the independent judge still scores it
        assert "not judged by mnist/cnn" in cell_html(comp, "wachter")


def test_budget_is_clipped_to_each_methods_range():
    from cfwidgets.methods import GANMEX, HotFlip

    assert budget_overrides(Wachter, 300) == {"steps": 300}
    assert budget_overrides(GANMEX, 5000) == {"steps": 512}
    assert budget_overrides(HotFlip, 300) == {"max_flips": 20}
    assert budget_overrides(Wachter, None) == {}
    from cfwidgets.methods.disc import DISC

    assert budget_overrides(DISC, 530) == {"init_fit_steps": 150, "stage_steps": 40, "steps": 300}
    assert _disc_updates(budget_overrides(DISC, 100)) == 100
    with pytest.raises(ValueError, match="positive int"):
        budget_overrides(Wachter, 0)


def test_open_cell_opens_the_methods_own_widget_with_its_result(mnist):
    from cfwidgets.widgets import CounterfactualWidget
    from cfwidgets.widgets.attributes import AttributeWidget
    from cfwidgets.widgets.attribution import AttributionWidget
    from cfwidgets.widgets.diffeomorphic import DiffeomorphicWidget
    from cfwidgets.widgets.disc import DISCWidget

    w = _widget(mnist, index=7)
    comp = w.run(block=True)
    kinds = {"wachter": CounterfactualWidget, "gci": AttributeWidget, "aip": AttributeWidget,
             "diffeomorphic": DiffeomorphicWidget, "ganmex": AttributionWidget, "disc": DISCWidget}
    for name, kind in kinds.items():
        opened = w.open_cell(name)
        assert type(opened) is kind, name
        # same input, same target, and the comparison's result already shown
        assert torch.equal(opened.current_input(), mnist.x[7:8]) and opened.target == w.target
        assert opened.result is comp.cells[name].result
        assert opened.knob_values()["steps"] == comp.cells[name].overrides["steps"]
        assert {k: opened.knob_values()[k] for k in comp.cells[name].overrides} == comp.cells[name].overrides
    assert w.opened is opened and len(w.detail.children) == 2


def test_drawing_feeds_the_same_pipeline(mnist):
    pytest.importorskip("anywidget")
    w = _widget(mnist, methods=["wachter", "ganmex"])
    assert w.canvas is not None and w.source.value == "data set"
    digit = mnist.x[3, 0]
    big = torch.zeros(112, 112)
    big[10:66, 40:96] = torch.nn.functional.interpolate(digit[None, None], size=(56, 56))[0, 0]
    w.canvas.set_image(big)  # as if drawn: off-centre and 2x MNIST's size
    assert w.source.value == "drawing"
    x = w.current_input()
    assert x.shape == (1, 1, 28, 28)
    comp = w.run(block=True)
    assert torch.equal(comp.cells["wachter"].result.x, x)
    assert all(c.status == "done" for c in comp.cells.values())
    w.canvas.clear()
    with pytest.raises(ValueError, match="nothing drawn"):
        w.current_input()


def test_mnist_like_centres_by_mass_and_scales_into_a_20_box():
    img = torch.zeros(100, 100)
    img[5:45, 60:70] = 1.0  # an L, off-centre: 40 rows x 25 cols
    img[35:45, 70:85] = 1.0
    out = mnist_like(img)
    assert out.shape == (1, 28, 28)
    ink = out[0] > 0.05
    rows, cols = ink.any(1).nonzero().flatten(), ink.any(0).nonzero().flatten()
    assert int(rows[-1] - rows[0] + 1) == 20  # the longer side fills the 20x20 box
    assert 12 <= int(cols[-1] - cols[0] + 1) <= 14  # the aspect ratio kept: 25/40 * 20
    cy, cx = center_of_mass(out[0])
    assert abs(cy - 13.5) <= 0.5 and abs(cx - 13.5) <= 0.5  # centre of mass, not of the box
    # an L's centre of mass is not its box's centre: the box sits off the field's centre
    c0, c1 = int(cols[0]), int(cols[-1])
    assert abs((c0 + c1) / 2 - 13.5) >= 1.0
    # uint8 input, and a blank canvas is refused clearly
    assert torch.allclose(mnist_like((img * 255).to(torch.uint8)), out, atol=1e-2)
    with pytest.raises(ValueError, match="draw a digit first"):
        mnist_like(torch.zeros(50, 50))
    with pytest.raises(ValueError, match="one grey image"):
        mnist_like(torch.zeros(2, 3, 50, 50))


def test_a_redrawn_mnist_digit_is_still_recognised(mnist):
    clf = zoo.load("mnist/cnn", device="cpu")
    x = mnist.x[:20, 0]
    canvas = torch.zeros(20, 120, 120)
    for i in range(20):  # big and off-centre, as a person might draw
        canvas[i, 5:89, 30:114] = torch.nn.functional.interpolate(x[i][None, None], size=(84, 84))[0, 0]
    redrawn = torch.stack([mnist_like(c) for c in canvas])
    with torch.no_grad():
        same = (clf(redrawn).argmax(1) == clf(x[:, None]).argmax(1)).float().mean()
    assert same >= 0.9


@pytest.mark.slow
def test_sentences_compare_with_word_diffs():
    pytest.importorskip("transformers")
    from cfwidgets.widgets import CompareWidget

    sents = ["a gorgeous , witty , seductive movie .", "the plot is dull and the acting is worse ."]
    w = CompareWidget(["hotflip"], sents, budget=3, device="cpu")
    assert w.modality == "text" and w.dataset == "reviews"
    comp = w.run(block=True)
    cell = comp.cells["hotflip"]
    assert cell.status == "done" and cell.overrides == {"max_flips": 3}
    assert "cfw-diff" in w.cells["hotflip"].body.value
    assert "judge agrees (reviews/judge)" in w.table.value
    w.sentence_box.value = "an utterly charming and funny film ."
    assert w.current_input() == ["an utterly charming and funny film ."]
    assert w.comparison.cells["hotflip"].status == "pending"


def test_run_comparison_is_usable_from_a_script(mnist, judges):
    events = []
    stop = threading.Event()
    comp = run_comparison(build_methods(["wachter", "ganmex"], "mnist", device="cpu"), mnist.x[:2],
                          torch.tensor([3, 5]), budget=BUDGET, judges=judges, stop=stop,
                          on_start=lambda c: events.append(("start", c.name)),
                          on_done=lambda c: events.append(("done", c.name)))
    assert events == [("start", "wachter"), ("done", "wachter"), ("start", "ganmex"), ("done", "ganmex")]
    assert comp.rows()[0]["n"] == 2 and comp.done


def test_methods_on_threads_give_the_serial_results_and_leave_shared_models_as_they_were(mnist):
    """workers=2 (the demo's default on 2 cores): the same figures as one after another, and
    the classifier the methods share keeps its requires_grad flags and gets no gradient."""
    from cfwidgets.methods import AIP, GCI

    clf, cvae = zoo.load("mnist/cnn", device="cpu"), zoo.load("mnist/cvae", device="cpu")
    methods = {"wachter": Wachter(clf), "gci": GCI(clf, cvae), "aip": AIP(clf, cvae)}
    names = list(methods)
    x, t = mnist.x[:3], torch.tensor([3, 5, 1])
    flags = [p.requires_grad for p in clf.parameters()]
    serial = run_comparison(methods, x, t, budget=40)
    both = run_comparison(methods, x, t, budget=40, workers=2)
    for name in names:
        a, b = serial.cells[name].result, both.cells[name].result
        assert both.cells[name].status == "done"
        assert torch.equal(a.success, b.success) and torch.allclose(a.x_cf, b.x_cf, atol=1e-5), name
    assert [p.requires_grad for p in clf.parameters()] == flags
    assert all(p.grad is None for p in clf.parameters()) and not clf.training


def test_prepared_restores_what_the_first_run_found_when_runs_overlap():
    """Two runs that share a model and end in the other order (threads): the model stays
    frozen and in eval mode while either still runs, and comes back as it was."""
    from cfwidgets.methods.base import prepared

    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.1))
    net.train()
    net[0].bias.requires_grad_(False)
    first, second = prepared([net]), prepared([net[0], net])
    with pytest.warns(UserWarning, match="train mode"):
        first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # the first run ends while the second still runs
    assert not net.training and not net[1].training
    assert not any(p.requires_grad for p in net.parameters())
    second.__exit__(None, None, None)
    assert net.training and net[1].training
    assert net[0].weight.requires_grad and not net[0].bias.requires_grad
