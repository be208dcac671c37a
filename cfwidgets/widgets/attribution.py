"""``AttributionWidget``: one-vs-one attributions ("why c and not t?") with a row of
baselines, the GANMEX counterfactual baseline itself, and the perturbation curves.

Self-contained (core ipywidgets + matplotlib only; it does not build on the
counterfactual widget base): an input picker, a target-class dropdown, the attribution
method, the baselines to compare (checkboxes), IG steps, and a Run button. Views:

- the input, the GANMEX baseline ``G(x, t)`` and the map of every chosen baseline on *one*
  symmetric colour scale (red: the pixel argues for ``c`` over ``t``; blue: for ``t``);
- the deletion curves of ``p_t`` (top pixels replaced by each baseline's pixels) of the
  chosen baselines, with their areas in the legend.

``widget.run()`` computes synchronously and returns the figures' data
(``widget.maps``, ``widget.curves``, ``widget.baselines``), so tests and notebooks can
assert what the widget shows.

Examples::

    from cfwidgets import data
    from cfwidgets.methods.ganmex import GANMEX
    from cfwidgets.widgets.attribution import AttributionWidget
    g = GANMEX.from_zoo("mnist")
    w = AttributionWidget(g, data.load_mnist("test"), index=30, target=8)
    w                                  # or w.run() in a script
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..attribution import ATTRIBUTION_METHODS, BASELINES, attribute, perturbation_curves

__all__ = ["AttributionWidget"]


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


class AttributionWidget:
    """Baselines side by side for one input and one target class.

    Args:
        ganmex: a :class:`~cfwidgets.methods.ganmex.GANMEX` method (its classifier is
            explained; its translator gives the GANMEX baseline).
        dataset: an ``ImageDataset`` (or an ``(N, C, H, W)`` tensor) to pick inputs from.
        index: the initial input (a row of ``dataset``).
        target: the initial target class (default: the runner-up).
        baselines: the baselines compared at first.
        method: the attribution method at first.
    """

    def __init__(self, ganmex, dataset: Any, *, index: int = 0, target: int | None = None,
                 baselines: Sequence[str] = ("ganmex", "zero", "blur", "mdts"),
                 method: str = "integrated_gradients", n_steps: int = 32, data: Any = None) -> None:
        import ipywidgets as W

        from ..methods.ganmex import GANMEX

        if not isinstance(ganmex, GANMEX):
            raise TypeError(f"ganmex must be a GANMEX method (GANMEX.from_zoo('mnist')), got "
                            f"{type(ganmex).__name__}.")
        unknown = [b for b in baselines if b not in BASELINES]
        if unknown:
            raise ValueError(f"unknown baselines {unknown}; choose from {list(BASELINES)}.")
        if method not in ATTRIBUTION_METHODS:
            raise ValueError(f"unknown attribution method {method!r}; choose from {list(ATTRIBUTION_METHODS)}.")
        self.ganmex = ganmex
        self.classifier = ganmex.classifier
        self.images: Tensor = dataset.x if hasattr(dataset, "x") else torch.as_tensor(dataset)
        if self.images.ndim != 4 or len(self.images) == 0:
            raise ValueError("dataset must hold images (N, C, H, W).")
        self.data = data
        names = getattr(self.classifier, "class_names", None) or [str(i) for i in range(ganmex.translator.num_classes)]
        self.class_names = list(names)
        self.maps: dict[str, Tensor] = {}
        self.baselines: dict[str, Tensor] = {}
        self.curves: dict[str, dict[str, Tensor]] = {}
        self.error: str | None = None

        self.index_w = W.BoundedIntText(value=int(index), min=0, max=len(self.images) - 1,
                                        description="input")
        self.target_w = W.Dropdown(options=[(n, i) for i, n in enumerate(self.class_names)],
                                   description="target")
        self.method_w = W.Dropdown(options=list(ATTRIBUTION_METHODS), value=method, description="method")
        self.steps_w = W.IntSlider(value=int(n_steps), min=4, max=256, description="IG steps")
        self.baseline_ws = {b: W.Checkbox(value=b in baselines, description=b, indent=False,
                                          layout=W.Layout(width="110px")) for b in BASELINES}
        self.run_w = W.Button(description="Run", button_style="primary")
        self.maps_view = W.Image(format="png")
        self.curves_view = W.Image(format="png")
        self.status = W.HTML()
        self.run_w.on_click(lambda _: self._safe_run())
        self._set_default_target(target)
        self.index_w.observe(lambda ch: self._set_default_target(None), names="value")
        self.box = W.VBox([
            W.HBox([self.index_w, self.target_w, self.method_w, self.steps_w]),
            W.HBox(list(self.baseline_ws.values())),
            W.HBox([self.run_w, self.status]),
            self.maps_view, self.curves_view,
        ])

    # ------------------------------------------------------------------ state
    @property
    def x(self) -> Tensor:
        return self.images[int(self.index_w.value)][None]

    @property
    def source(self) -> int:
        with torch.no_grad():
            return int(self.classifier(self.x.to(self.ganmex.device)).argmax(1))

    @property
    def target(self) -> int:
        return int(self.target_w.value)

    @target.setter
    def target(self, value: int) -> None:
        self.target_w.value = int(value)

    @property
    def chosen(self) -> list[str]:
        return [b for b, w in self.baseline_ws.items() if w.value]

    def _set_default_target(self, target: int | None) -> None:
        if target is None:
            with torch.no_grad():
                target = int(self.classifier(self.x.to(self.ganmex.device)).topk(2, 1).indices[0, 1])
        self.target_w.value = int(target)

    # -------------------------------------------------------------------- run
    def _safe_run(self) -> None:
        try:
            self.run()
        except (ValueError, TypeError, RuntimeError) as e:
            self.error = str(e)
            self.status.value = f"<span style='color:#b00'>{self.error}</span>"

    def run(self) -> dict[str, Tensor]:
        """Compute the maps and curves of the chosen baselines and redraw; returns the maps."""
        if not self.chosen:
            raise ValueError("choose at least one baseline.")
        c, t = self.source, self.target
        if c == t:
            raise ValueError(f"the classifier already predicts {self.class_names[t]!r}: pick another target.")
        self.error = None
        x = self.x.to(self.ganmex.device)
        tt = torch.tensor([t], device=x.device)
        cc = torch.tensor([c], device=x.device)
        self.maps, self.baselines, self.curves = {}, {}, {}
        for b in self.chosen:
            a, base = attribute(self.classifier, x, tt, baseline=b, method=self.method_w.value,
                                translator=self.ganmex, source=cc, n_steps=int(self.steps_w.value),
                                data=self.data, return_baseline=True)
            self.maps[b], self.baselines[b] = a[0].cpu(), base[0].cpu()
            self.curves[b] = {k: v.cpu() for k, v in perturbation_curves(
                self.classifier, x, a, base, tt, cc, steps=20).items()}
        if "ganmex" not in self.baselines:
            from ..attribution import make_baseline

            self.baselines["ganmex"] = make_baseline("ganmex", self.classifier, x, tt,
                                                     translator=self.ganmex)[0].cpu()
        self._draw(c, t)
        self.status.value = (f"why <b>{self.class_names[c]}</b> and not <b>{self.class_names[t]}</b>: "
                             f"{self.method_w.value}, {len(self.maps)} baselines")
        return self.maps

    @property
    def vmax(self) -> float:
        """The one colour scale of the row of maps: the largest |attribution| among them."""
        return max(float(m.abs().max()) for m in self.maps.values()) if self.maps else 1.0

    def _draw(self, c: int, t: int) -> None:
        import matplotlib.pyplot as plt

        n = len(self.maps) + 2
        fig, axes = plt.subplots(1, n, figsize=(1.7 * n, 2.0))
        axes[0].imshow(self.x[0, 0], cmap="gray", vmin=0, vmax=1)
        axes[0].set_title(f"x: {self.class_names[c]}", fontsize=8)
        axes[1].imshow(self.baselines["ganmex"][0, 0], cmap="gray", vmin=0, vmax=1)
        axes[1].set_title(f"G(x, {self.class_names[t]})", fontsize=8)
        vmax = self.vmax or 1.0
        im = None
        for ax, (b, m) in zip(axes[2:], self.maps.items(), strict=True):
            im = ax.imshow(m.sum(0), cmap="bwr", vmin=-vmax, vmax=vmax)
            ax.set_title(b, fontsize=8)
        for ax in axes:
            ax.set_xticks([])
            ax.set_yticks([])
        if im is not None:
            fig.colorbar(im, ax=list(axes[2:]), fraction=0.02, pad=0.01)
        self.maps_view.value = _png(fig)
        fig, ax = plt.subplots(figsize=(4.2, 2.4))
        for b, cur in self.curves.items():
            ax.plot(cur["fractions"], cur["p_target"][0], label=f"{b} (AUC {float(cur['auc_target'][0]):.2f})")
        ax.set_xlabel("share of top pixels replaced by the baseline's")
        ax.set_ylabel(f"p({self.class_names[t]})")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=7)
        self.curves_view.value = _png(fig)

    # ---------------------------------------------------------------- display
    def _ipython_display_(self):  # pragma: no cover - needs a front end
        from IPython.display import display

        display(self.box)
