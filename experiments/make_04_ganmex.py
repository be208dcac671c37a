"""Writes notebooks/04_ganmex.ipynb (cells below); run it from the repository root, then
execute the notebook (jupyter nbconvert --to notebook --execute --inplace)."""
from pathlib import Path

import nbformat as nbf

cells = []
def md(s): cells.append(nbf.v4.new_markdown_cell(s.strip("\n")))
def code(s): cells.append(nbf.v4.new_code_cell(s.strip("\n")))

md(r"""
# GANMEX: why a 3 and not an 8?

Integrated Gradients, DeepLIFT, occlusion and their kin measure how the output changes
between an input `x` and a **baseline** `b`. With the usual baselines (a black image, a blur,
noise) the question they answer is "why class `c` at all?". For two similar classes the
question a user asks is **one-vs-one**: *why is this a 3 and not an 8?*

GANMEX (Shih, Tien & Karnin, ICML 2021, arXiv 2011.06015) answers it with a
class-conditional translator `G(x, t)` trained **with the classifier under explanation
inside the adversarial game**: the critic's class head is the frozen classifier, so
`G(x, 8)` is the closest realistic image the classifier calls an 8. That image is the
baseline; the explained quantity is the logit difference `f_3 - f_8`.

Training follows the authors' code (`pinjutien/GANMEX`): WGAN-GP (penalty 10),
self-consistency L1, class cross-entropy weight 1000, no cycle term, Adam (0.9, 0.999).
Deviations for a few minutes on two CPU cores, all measured (see `cfwidgets.zoo.recipes.ganmex`
and `cfwidgets.models.translator`): 28x28 with a quarter of the channels and 3 residual
blocks; 600 steps at batch 64; learning rates x10; self-consistency weight 1000 (the
authors' flag note: "Current Best = 1000"); the translator predicts a change from `x`
(starts at the identity) and upsamples by nearest neighbour + conv.
""")

code(r"""
%matplotlib inline
import time
import warnings

import matplotlib.pyplot as plt
import torch

from cfwidgets import data, zoo
from cfwidgets.attribution import (attribute, cascading_randomisation, make_baseline,
                                   mass_in_region, perturbation_curves, perturbation_scores,
                                   shapes_difference_region)
from cfwidgets.methods.ganmex import GANMEX
from cfwidgets.zoo.recipes.ganmex import judge_for, translation_report

warnings.filterwarnings("ignore", category=UserWarning)
torch.set_num_threads(1)
t_start = time.perf_counter()

g = GANMEX.from_zoo("mnist", device="cpu")       # mnist/cnn + the translator trained against it
clf = g.classifier
meta = g.translator.zoo_meta
m = meta["metrics"]
print(f"translator: {meta['params']:,} params, {m['steps']} steps in {m['train_seconds_total'] / 60:.1f} min")
print(f"held-out translations to every other class: classifier success {m['success']:.3f}, "
      f"independent judge ({m['judge']}) agrees {m['judge_agreement']:.3f}, mean L1 change {m['mean_l1']:.3f}")
""")

code(r"""
# measured again here, on other held-out digits than the recipe's
test = data.load_mnist("test")
rep = translation_report(g.translator, clf, judge_for("mnist")[0], test.x[1::10])
print(rep)
assert rep["success"] >= 0.9 and rep["judge_agreement"] > 0.5
""")

md(r"""
## 1. Threes against eights

Six held-out 3s. Top: the digit and its GANMEX baseline `G(x, 8)`. Below: the Integrated
Gradients map of `f_3 - f_8` for each baseline, all on **one colour scale** per row (red:
the pixel argues for 3 over 8; blue: for 8). With the zero and blur baselines the map covers
the whole stroke, the parts a 3 shares with an 8 included; with the GANMEX baseline it
concentrates on the gaps that would close a 3 into an 8.
""")

code(r"""
threes = test.x[test.y == 3]
with torch.no_grad():
    threes = threes[clf(threes).argmax(1) == 3][:6]
eights = torch.full((len(threes),), 8)
names = ["ganmex", "zero", "blur", "mdts", "eg", "wachter"]
maps, bases = {}, {}
for b in names:
    maps[b], bases[b] = attribute(clf, threes, eights, baseline=b, translator=g, n_steps=64,
                                  return_baseline=True)

fig, axes = plt.subplots(len(threes), 2 + len(names), figsize=(1.3 * (2 + len(names)), 1.35 * len(threes)))
for i in range(len(threes)):
    v = max(float(maps[b][i].abs().max()) for b in names)
    axes[i, 0].imshow(threes[i, 0], cmap="gray", vmin=0, vmax=1)
    axes[i, 1].imshow(bases["ganmex"][i, 0, 0], cmap="gray", vmin=0, vmax=1)
    for j, b in enumerate(names):
        axes[i, 2 + j].imshow(maps[b][i, 0], cmap="bwr", vmin=-v, vmax=v)
for ax, title in zip(axes[0], ["x", "G(x, 8)"] + names):
    ax.set_title(title, fontsize=8)
for ax in axes.flat:
    ax.set_xticks([]); ax.set_yticks([])
plt.tight_layout()
with torch.no_grad():
    p8 = clf(bases["ganmex"][:, 0]).softmax(-1)[:, 8]
print("p(8) of the GANMEX baselines:", [round(float(p), 3) for p in p8])
assert bool((p8 > 0.5).all())
""")

md(r"""
### Shirt against T-shirt

The same question on Fashion-MNIST, with the translator trained against `fashion/cnn`
(the weakest of the three: its edits are blob-like; judge agreement in the output below).
""")

code(r"""
gf = GANMEX.from_zoo("fashion", device="cpu")
ft = data.load_dataset("fashion", "test")
shirts = ft.x[ft.y == 6]
with torch.no_grad():
    shirts = shirts[gf.classifier(shirts).argmax(1) == 6][:4]
tee = torch.zeros(len(shirts), dtype=torch.long)          # class 0: T-shirt/top
print("fashion translator:", {k: gf.translator.zoo_meta["metrics"][k] for k in ("success", "judge_agreement", "mean_l1")})
fnames = ["ganmex", "zero", "blur", "mdts"]
fmaps, fbases, fscores = {}, {}, {}
for b in fnames:
    fmaps[b], fbases[b] = attribute(gf.classifier, shirts, tee, baseline=b, translator=gf, n_steps=64,
                                    return_baseline=True)
    fscores[b] = perturbation_scores(gf.classifier, shirts, fmaps[b], fbases[b], tee, steps=20)
fig, axes = plt.subplots(len(shirts), 2 + len(fnames), figsize=(1.3 * (2 + len(fnames)), 1.35 * len(shirts)))
for i in range(len(shirts)):
    v = max(float(fmaps[b][i].abs().max()) for b in fnames)
    axes[i, 0].imshow(shirts[i, 0], cmap="gray", vmin=0, vmax=1)
    axes[i, 1].imshow(fbases["ganmex"][i, 0, 0], cmap="gray", vmin=0, vmax=1)
    for j, b in enumerate(fnames):
        axes[i, 2 + j].imshow(fmaps[b][i, 0], cmap="bwr", vmin=-v, vmax=v)
for ax, title in zip(axes[0], ["x: shirt", "G(x, T-shirt)"] + fnames):
    ax.set_title(title, fontsize=8)
for ax in axes.flat:
    ax.set_xticks([]); ax.set_yticks([])
plt.tight_layout()
print("deletion AUC of p(T-shirt):", {b: round(sc["deletion_auc_target"], 3) for b, sc in fscores.items()})
assert fscores["ganmex"]["deletion_auc_target"] > max(fscores[b]["deletion_auc_target"] for b in ("zero", "blur"))
""")

md(r"""
Read with care: these `G(x, T-shirt)` are not realistic T-shirts. After 600 steps the
Fashion translator paints what moves `fashion/cnn` (a bright band at the hem, a dark arc
at the collar, the sleeves dimmed), so the GANMEX map here shows the classifier's cues for
"T-shirt" rather than a garment difference a person would name; the perturbation figure
is high because the baseline carries those cues.
""")

md(r"""
## 2. Perturbation faithfulness: baselines x attribution methods

24 held-out digits, each against its runner-up class (the most similar other class). Rank
the pixels by attribution, replace the top `k` % by the baseline's pixels (`k` = 0..100),
and follow `p_t` (it should rise early: **deletion AUC of p_t, higher is better**) and
`p_c` (it should drop early: **deletion AUC of p_c, lower is better**); the insertion
counterpart puts `x`'s top pixels into the baseline (**insertion AUC of p_c, higher is
better**).

Read with care: at `k` = 100 % the image *is* the baseline, so a baseline of the target
class (MDTS, EG, Wachter, GANMEX) ends its `p_t` curve high whatever the map; the fair
comparison is among those four, and there GANMEX's curves rise soonest.
""")

code(r"""
idx = torch.linspace(0, len(test) - 1, 24).long()
xs = test.x[idx]
with torch.no_grad():
    top = clf(xs).topk(2, 1).indices
src, tgt = top[:, 0], top[:, 1]
methods = ["integrated_gradients", "deeplift", "occlusion"]
baselines = ["ganmex", "zero", "blur", "noise", "train_mean", "mdts", "eg", "wachter"]
table = {}
for meth in methods:
    for b in baselines:
        a, base = attribute(clf, xs, tgt, baseline=b, method=meth, translator=g, n_steps=32,
                            return_baseline=True)
        table[(meth, b)] = perturbation_scores(clf, xs, a, base, tgt, src, steps=20)

def show(metric, better):
    print(f"{metric} ({better} is better)")
    print(f"{'baseline':>11} " + " ".join(f"{mm[:12]:>12}" for mm in methods))
    for b in baselines:
        print(f"{b:>11} " + " ".join(f"{table[(mm, b)][metric]:12.3f}" for mm in methods))
    print()

show("deletion_auc_target", "higher")
show("deletion_auc_source", "lower")
show("insertion_auc_source", "higher")
""")

code(r"""
# the paper's headline, on this sample: GANMEX beats every other baseline at raising p_t
for meth in methods:
    best = max(baselines, key=lambda b: table[(meth, b)]["deletion_auc_target"])
    print(meth, "best deletion AUC of p_t:", best)
for meth in ("integrated_gradients", "deeplift"):
    for b in baselines[1:]:
        assert table[(meth, "ganmex")]["deletion_auc_target"] > table[(meth, b)]["deletion_auc_target"], (meth, b)
""")

code(r"""
# the curves behind the numbers (Integrated Gradients)
fig, ax = plt.subplots(1, 2, figsize=(9, 3))
for b in ["ganmex", "zero", "blur", "mdts", "wachter"]:
    a, base = attribute(clf, xs, tgt, baseline=b, translator=g, n_steps=32, return_baseline=True)
    cur = perturbation_curves(clf, xs, a, base, tgt, src, steps=20)
    ax[0].plot(cur["fractions"], cur["p_target"].mean(0), label=b)
    ax[1].plot(cur["fractions"], cur["p_source"].mean(0), label=b)
ax[0].set_title("p_t as top pixels take the baseline's values"); ax[1].set_title("p_c")
for a_ in ax:
    a_.set_xlabel("share of pixels replaced")
ax[0].legend(fontsize=7)
plt.tight_layout()
""")

md(r"""
## 3. Cascading randomisation

Re-initialise the classifier's layers from the output back to the input (on a copy) and
compare the maps with the trained model's (Adebayo et al. 2018). A map that explains the
model should change: **lower similarity is better**. The baseline stays the one computed
with the trained translator. Over all pixels the rank correlation of the absolute maps
stays near 1 for every baseline that shares pixels with `x` (the pixels where `x` equals
the baseline get exactly zero attribution in every model); `spearman_abs_support` ranks
only the pixels where either map is non-zero.
""")

code(r"""
xr, sr, tr_ = xs[:12], src[:12], tgt[:12]
rand = {}
for b in ["ganmex", "zero", "blur", "mdts"]:
    base = make_baseline(b, clf, xr, tr_, translator=g)
    rand[b] = cascading_randomisation(clf, lambda model: attribute(model, xr, tr_, baseline=base, source=sr, n_steps=16))
print(f"{'baseline':>8} {'layer':>8} {'sp. abs':>8} {'sp. abs supp.':>13} {'sp. signed':>10} {'SSIM':>6}")
for b, stages in rand.items():
    for s in stages:
        print(f"{b:>8} {s['layer']:>8} {float(s['spearman_abs'].mean()):8.2f} {float(s['spearman_abs_support'].mean()):13.2f} "
              f"{float(s['spearman_signed'].mean()):10.2f} {float(s['ssim'].mean()):6.2f}")
for s in rand["ganmex"]:
    assert float(s["spearman_signed"].mean()) < 0.5 and float(s["ssim"].mean()) < 0.8
assert float(rand["ganmex"][-1]["ssim"].mean()) < float(rand["zero"][-1]["ssim"].mean())
""")

md(r"""
The signed maps decorrelate as soon as the output layer is re-initialised, for every
baseline. SSIM is lower with GANMEX than with the zero baseline (the paper's direction),
but on the non-zero pixels the zero-baseline maps change *more* than the GANMEX ones:
`x - G(x, t)` is fixed and shapes the GANMEX map for any model. Measured, not tuned.

## 4. Ground truth on the synthetic shapes

For a shape with known factors, the same factors rendered as the target shape tell which
pixels separate the two classes. The share of the map's mass inside that region:
""")

code(r"""
gs = GANMEX.from_zoo("shapes", device="cpu")
st = data.load_dataset("shapes", "test")
xq, yq, fq = st.x[:48], st.y[:48], st.extra["factors"][:48]
tq = (yq + 1) % 4
region = shapes_difference_region(yq, fq, tq)                        # the shared ink left out
older = shapes_difference_region(yq, fq, tq, exclude_shared=False)   # a 1 px dilation fills it back
print("shapes translator:", {k: gs.translator.zoo_meta["metrics"][k] for k in ("success", "judge_agreement", "mean_l1")})
share = {}
for b in ["ganmex", "zero", "blur", "mdts"]:
    a = attribute(gs.classifier, xq, tq, baseline=b, translator=gs, n_steps=32)
    share[b] = float(mass_in_region(a, region).mean())
    print(f"{b:>7}: mass inside the region {share[b]:.3f} "
          f"(older region: {float(mass_in_region(a, older).mean()):.3f})")
assert share["ganmex"] > max(share["zero"], share["blur"]) + 0.15   # the paper's expectation, with room
with torch.no_grad():
    bq = gs.translator(xq[:6], tq[:6])
fig, ax = plt.subplots(2, 6, figsize=(7, 2.6))
for i in range(6):
    ax[0, i].imshow(xq[i, 0], cmap="gray", vmin=0, vmax=1)
    ax[1, i].imshow(bq[i, 0], cmap="gray", vmin=0, vmax=1)
    ax[0, i].set_title(st.class_names[int(yq[i])], fontsize=8)
    ax[1, i].set_title("G(x, " + st.class_names[int(tq[i])] + ")", fontsize=8)
for a_ in ax.flat:
    a_.axis("off")
plt.tight_layout()
""")

md(r"""
Two shapes with the same factors share a third to two thirds of `x`'s ink. That ink does not
separate the classes, so the region leaves it out; a 1 px dilation of the differing pixels
used to hand it back (the older figures in brackets), and the region then held 0.98 of
`x`'s ink, where a zero-baseline map lives: zero scored near 1 by construction.

With the region done right, the GANMEX map is the one that points where the two shapes
differ, as the paper expects. The shapes translator is built for it (a deviation, see
`cfwidgets.models.translator.TemplateTranslator`): it reads the shape's size, rotation,
position, stroke and brightness and redraws the target's outline in place (the images
above), starting from the `shapes/cvae` templates and then trained in the GANMEX game
against `shapes/cnn`. The convolutional StarGAN-style translator first trained here erased
outlines and drew target strokes elsewhere, and scored 0.40, below the zero baseline.
Over every ordered pair of classes, GANMEX also puts less mass on the shared ink than zero
(0.21 against 0.53) and over three times as much on the target's missing strokes (0.46
against 0.13; `experiments/ganmex_shapes_region.py` breaks it down by pair).

## 5. The widget

Input, target class, attribution method, the baselines as a row of maps on one colour scale,
the GANMEX baseline itself, and the perturbation curves of the chosen baselines.
""")

code(r"""
from cfwidgets.widgets.attribution import AttributionWidget

w = AttributionWidget(g, test, index=int(idx[9]), baselines=("ganmex", "zero", "blur", "mdts"))
res = w.run(block=True)    # the Run button runs it in the background
assert set(w.maps) == {"ganmex", "zero", "blur", "mdts"} and not res.stopped
auc = {b: float(cur["auc_target"][0]) for b, cur in w.curves.items()}
print("deletion AUC of p_t:", {b: round(v, 2) for b, v in auc.items()})
assert auc["ganmex"] > max(auc["zero"], auc["blur"])
w
""")

code(r"""
print(f"notebook ran in {time.perf_counter() - t_start:.0f} s")
""")

nb = nbf.v4.new_notebook()
nb["cells"] = cells
nb["metadata"] = {"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
                  "language_info": {"name": "python", "version": "3.11"}}
nbf.write(nb, str(Path("notebooks/04_ganmex.ipynb")))
print("written")
