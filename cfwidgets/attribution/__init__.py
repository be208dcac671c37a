"""One-vs-one attributions ("why class c and not t?") with counterfactual baselines, and
the GANMEX paper's evaluations of them.

- :func:`attribute`: Captum's Integrated Gradients, DeepLIFT, occlusion, ... of the logit
  difference ``f_c - f_t`` relative to a baseline (zero, blur, noise, training mean, MDTS,
  EG references, the Wachter counterfactual, the GANMEX counterfactual, or a tensor);
- :func:`make_baseline`: the baselines themselves;
- :mod:`~cfwidgets.attribution.evaluation`: perturbation curves (deletion / insertion),
  cascading randomisation (Spearman, SSIM), attribution mass in a known region.

Needs Captum (``pip install 'cfwidgets[attribution]'``).
"""

from .baselines import BASELINES, gaussian_blur, make_baseline, training_data
from .core import ATTRIBUTION_METHODS, LogitDifference, attribute, source_and_target
from .evaluation import (
    cascading_randomisation,
    mass_in_region,
    perturbation_curves,
    perturbation_scores,
    randomisable_layers,
    shapes_difference_region,
    spearman,
    ssim,
)

__all__ = [
    "ATTRIBUTION_METHODS",
    "BASELINES",
    "LogitDifference",
    "attribute",
    "cascading_randomisation",
    "gaussian_blur",
    "make_baseline",
    "mass_in_region",
    "perturbation_curves",
    "perturbation_scores",
    "randomisable_layers",
    "shapes_difference_region",
    "source_and_target",
    "spearman",
    "ssim",
    "training_data",
]
