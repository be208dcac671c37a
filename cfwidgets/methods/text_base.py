"""What the text counterfactual methods share: sentences in, sentences out.

:class:`TextCounterfactualMethod` replaces the image input checks of
:class:`~cfwidgets.methods.base.CounterfactualMethod` by checks of a batch of strings
(a non-empty list of non-blank ``str``), wraps the classifier in the common text
interface (:func:`~cfwidgets.models.text_adapters.as_text_classifier`) and keeps
everything else of the base class (targets by index or class name, eval mode and frozen
parameters during the run, seeds, timing, the result type). ``x`` / ``x_cf`` of the
result are lists of strings, ``trajectory`` a list (one entry per snapshot) of such lists.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from .._utils import make_generator
from ..config import merge
from ..models.text_adapters import TextClassifierAdapter, as_text_classifier, check_texts
from ..protocols import StepCallback
from ..result import CounterfactualResult
from .base import CounterfactualMethod, check_callback, prepared

__all__ = ["TextCounterfactualMethod", "cut_to_fit"]


def cut_to_fit(text: str, too_long: Callable[[str], bool]) -> str:
    """The longest prefix of whole words of ``text`` (at least one word) that is not
    ``too_long`` (a model's token limit), by binary search over the word count."""
    ws = text.split()
    lo, hi = 1, len(ws)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if too_long(" ".join(ws[:mid])):
            hi = mid - 1
        else:
            lo = mid
    return " ".join(ws[:lo])


class TextCounterfactualMethod(CounterfactualMethod):
    """Base class of the text methods (AIP-text, HotFlip)."""

    modality = "text"

    def __init__(self, classifier, /, *, device=None, tokenizer=None, **components: Any) -> None:
        clf = as_text_classifier(classifier, tokenizer)
        super().__init__(clf, device=device, **components)

    @property
    def classifier_adapter(self) -> TextClassifierAdapter:
        return self.classifier  # type: ignore[return-value]

    @property
    def input_shape(self):  # no image shape
        return None

    def fit_inputs(self, x: Any, cfg: Any = None) -> tuple[list[str], list[int]]:
        """Validate a batch of sentences; return them as the method reads them (normalised
        for the zoo models) and the rows cut to fit a model's limit (none here; the
        result's ``meta["truncated"]``). Per call: nothing is kept on the method."""
        return self.classifier_adapter.prepare(check_texts(x)), []

    def check_inputs(self, x: Any, cfg: Any = None) -> list[str]:
        """The sentences as the method reads them (see :meth:`fit_inputs`)."""
        return self.fit_inputs(x, cfg)[0]

    def explain(
        self,
        x: Sequence[str],
        target: int | Sequence[int] | torch.Tensor | str,
        config: Any = None,
        *,
        callback: StepCallback | None = None,
        generator: torch.Generator | int | None = None,
        **overrides: Any,
    ) -> CounterfactualResult:
        """Counterfactual sentences for ``x`` (a list of strings) and class ``target``
        (index or class name, one for all or one per sentence). Knobs as for every
        method; see the subclass's ``Config``."""
        cfg = merge(self.Config, config, overrides)
        check_callback(callback)
        self._check_devices()
        texts, truncated = self.fit_inputs(x, cfg)
        dev = self.device
        gen, seed = make_generator(generator)
        with prepared(self.modules().values()) as switched:
            with torch.no_grad():
                logits = self.classifier(texts)
            self._check_logits(logits, len(texts))
            probs = logits.float().softmax(-1)
            target_t = self.check_target(target, len(texts), probs.shape[1]).to(dev)
            names = self.class_names or []

            def labels(rows: list[int]) -> str:
                what = [names[int(target_t[r])] if names else int(target_t[r]) for r in rows[:5]]
                return f" ({what})"

            self._refuse_same_class(target_t, probs, detail=labels)
            out, wall = self._timed_explain(texts, target_t, cfg, probs, callback, gen, dev)
        out.meta["truncated"] = truncated
        return self._pack(texts, target_t, probs, out, cfg, seed, wall, switched)

    @torch.no_grad()
    def score_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Class probabilities ``(B, K)`` of hard texts (empty strings scored as ``"."``)."""
        return self.classifier([t if t.strip() else "." for t in texts]).float().softmax(-1)
