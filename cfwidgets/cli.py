"""Command line: ``cfwidgets demo``, ``cfwidgets zoo ...``, ``cfwidgets explain``, ``cfwidgets bench``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

__all__ = ["main"]

#: data sets of sentences (the image commands refuse them with a pointer to the text methods)
TEXT_DATASETS = ("reviews", "imdb")


class UsageError(Exception):
    """A bad command-line argument: ``main`` prints its message as one line and exits 2."""


def _check_image_dataset(name: str, what: str) -> None:
    from . import zoo
    from .data.images import DATASETS

    if name in DATASETS:
        if f"{name}/cnn" not in zoo.recipes():
            have = sorted(d for d in DATASETS if f"{d}/cnn" in zoo.recipes())
            raise UsageError(f"the zoo has no classifier for --dataset {name!r} ({name}/cnn); "
                             f"data sets with one: {have}.")
        return
    if name in TEXT_DATASETS:
        raise UsageError(
            f"--dataset {name!r} holds sentences, but {what} works on images "
            f"({sorted(DATASETS)}); explain sentences with the text methods, e.g. "
            f"`cfwidgets demo --methods hotflip` or HotFlip.from_zoo('reviews') in Python.")
    raise UsageError(f"unknown --dataset {name!r}; image data sets: {sorted(DATASETS)}.")


def _check_count(flag: str, value: int, low: int, meaning: str = "") -> None:
    if value < low:
        raise UsageError(f"{flag} must be >= {low}{meaning}, got {value}.")


def _parse_knobs(text: str, method_cls) -> dict:
    """``--knobs`` JSON -> a dict of knob overrides, checked against the method's Config."""
    from .config import merge

    if not text:
        return {}
    try:
        knobs = json.loads(text)
    except ValueError as e:
        raise UsageError(f"--knobs is not valid JSON ({e}); give an object, e.g. "
                         f"--knobs '{{\"steps\": 200}}'.") from None
    if not isinstance(knobs, dict):
        raise UsageError(f"--knobs must be a JSON object of knob names and values, e.g. "
                         f"'{{\"steps\": 200}}', got a JSON {type(knobs).__name__}.")
    # {name: weight} dicts (attribute weights) are converted by the method itself
    plain = {k: v for k, v in knobs.items() if not isinstance(v, dict)}
    try:
        merge(method_cls.Config, None, plain)
    except (TypeError, ValueError) as e:
        raise UsageError(f"--knobs: {e}") from None
    return knobs



# --------------------------------------------------------------------------- demo
def _demo(args: argparse.Namespace) -> int:
    import torch
    from tqdm.auto import tqdm

    from . import zoo
    from ._utils import resolve_device
    from .data import load_dataset
    from .methods import METHODS, SKIPPED
    from .metrics import format_table
    from .viz.html import grid_png, report_html, result_html

    t_start = time.perf_counter()
    _check_count("--n", args.n, 1, " (the number of test images)")
    _check_count("--steps", args.steps, 0, " (0 = each method's own budget)")
    _check_count("--workers", args.workers, 0, " (0 = one per CPU core, at most 2)")
    _check_image_dataset(args.dataset, "the demo")
    names = [m.strip() for m in args.methods.split(",")] if args.methods else list(METHODS)
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        print(f"unknown method(s) {unknown}; available: {sorted(METHODS)}", file=sys.stderr)
        return 2
    device = resolve_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    workers = args.workers or max(1, min(2, os.cpu_count() or 1))
    image_names = [n for n in names if METHODS[n].modality == "image"]
    text_names = [n for n in names if METHODS[n].modality != "image"]
    # no more at once than there are jobs (the image methods, the text ones together): one
    # method alone keeps torch's own threads
    workers = max(1, min(workers, len(image_names) + bool(text_names)))

    print(f"cfwidgets demo: {len(names)} method(s) on {args.n} {args.dataset} test images, device {device}"
          + (f", {workers} at a time" if workers > 1 else ""))
    t0 = time.perf_counter()
    clf = zoo.load(f"{args.dataset}/cnn", device=device)
    aes = zoo.load(f"{args.dataset}/ae", device=device)
    oracle = zoo.load(f"{args.dataset}/oracle", device=device) if zoo.recipes().get(f"{args.dataset}/oracle") else None
    t_models = time.perf_counter() - t0
    test = load_dataset(args.dataset, "test")
    idx = torch.linspace(0, len(test) - 1, args.n).long()
    x = test.x[idx]
    with torch.no_grad():
        target = clf(x.to(device)).topk(2, dim=1).indices[:, 1].cpu()

    # the same code path as the comparison dashboard (cfwidgets.analysis.compare), so the
    # report and the dashboard cannot disagree: same budget rule, same judges, same rows
    budget = args.steps or None
    rows, text_rows, sections, failures = [], [], {}, {}
    bar = tqdm(total=len(names), desc="methods", unit="method")
    tick = dict(on_start=lambda cell: bar.set_postfix_str(cell.name), on_done=lambda _cell: bar.update(1))
    threads = torch.get_num_threads()
    if workers > 1 and device.type == "cpu":
        # methods at once, one torch thread each: the demo's batches are a few rows, too
        # small for torch's own threads, so the cores are better used by methods side by side
        torch.set_num_threads(1)
    try:
        comps = _demo_run(image_names, text_names, workers, x, target, budget, aes, oracle,
                          device, args, tick)
    finally:
        torch.set_num_threads(threads)
    bar.close()
    for comp in comps:
        for name, cell in comp.cells.items():
            if cell.result is None:  # keep going: the report says what failed and why
                failures[name] = cell.error or cell.status
                continue
            res, row = cell.result, cell.row
            (out / f"{name}.json").write_text(json.dumps(res.to_dict(), indent=1))
            if comp.modality == "text":
                text_rows.append(row)
                sections[cell.title] = res._repr_html_()
                continue
            rows.append(row)
            sections[row["method"]] = result_html(res, max_rows=args.n)
            strip = torch.cat([res.x, res.x_cf])
            (out / f"{name}.png").write_bytes(grid_png(strip, nrow=len(res), scale=3))

    from .viz.html import table_html

    # one table style for people in the report (worded headings, 3 significant figures,
    # shares as %, a box that scrolls sideways instead of widening the page)
    table = table_html(rows)
    if text_rows:
        table += "<p>Text methods (review sentences, target = the other label):</p>" + table_html(
            text_rows)
    intro = (
        f"<p>{args.n} held-out {args.dataset} images, target = each image's runner-up class. "
        f"Classifier <code>{args.dataset}/cnn</code> (test accuracy "
        f"{clf.zoo_meta['metrics'].get('test_accuracy', float('nan')):.3f}, source "
        f"{clf.zoo_meta.get('source', 'trained now')}). Realism IM1/IM2 from "
        f"<code>{args.dataset}/ae</code>; oracle = <code>{args.dataset}/oracle</code>. "
        f"Device {device}; models ready in {t_models:.1f} s."
        + (f" Methods ran {workers} at a time on one CPU thread each, so each time is its wall time "
           f"while sharing the machine." if workers > 1 else "") + "</p>"
    )
    if text_rows:
        tj = next(c.judges for c in comps if c.modality == "text")
        intro += ("<p>Text: review sentences, target = the other label; "
                  + ", ".join(f"{k} <code>{v}</code>" for k, v in tj.items()) + ".</p>")
    if failures or SKIPPED:
        items = {**failures, **{k: f"skipped (missing dependency): {v}" for k, v in SKIPPED.items()}}
        intro += "<p><b>Not run:</b></p><ul>" + "".join(f"<li>{k}: {v}</li>" for k, v in items.items()) + "</ul>"
    page = report_html("cfwidgets demo report", sections, table, intro)
    (out / "report.html").write_text(page, encoding="utf-8")
    (out / "metrics.json").write_text(json.dumps(rows, indent=1))
    if rows:
        print(format_table(rows))
    if text_rows:
        print(format_table(text_rows))
    for k, v in failures.items():
        print(f"not run: {k}: {v}", file=sys.stderr)
    print(f"report: {out / 'report.html'}  ({time.perf_counter() - t_start:.1f} s in all)")
    return 0 if rows or text_rows else 1


def _demo_run(image_names, text_names, workers, x, target, budget, aes, oracle, device, args, tick):
    """The demo's comparisons: the image methods (``workers`` at a time) and the text ones."""
    from .analysis.compare import Judges, build_methods, run_comparison

    comps = []
    # with more than one worker the text methods run beside the image ones, on a thread of
    # their own (they are short: mostly loading their models)
    text_job = None
    if text_names and workers > 1 and image_names:
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cfwidgets-demo-text")
        text_job = pool.submit(_demo_text, text_names, device, args, tick)
        pool.shutdown(wait=False)
    if image_names:
        judges = Judges(autoencoders=aes, oracle=oracle)
        comps.append(run_comparison(build_methods(image_names, args.dataset, device=device), x, target,
                                    budget=budget, judges=judges, workers=workers,
                                    **tick))
    if text_job is not None:
        comps.append(text_job.result())
    elif text_names:
        comps.append(_demo_text(text_names, device, args, tick))
    return comps


def _demo_text(names, device, args, tick):
    """Text methods in the demo: the first few held-out review sentences of 6 to 25 words
    (needs the ``text`` extra), each asked for its runner-up label, run and scored by the
    comparison code (judges ``reviews/judge`` and ``reviews/lm``). Returns the comparison."""
    import torch

    from .analysis.compare import build_methods, load_judges, run_comparison
    from .data import load_reviews

    methods = build_methods(names, "reviews", device=device)
    ready = [m for m in methods.values() if not isinstance(m, BaseException)]
    # sentences within every text model's limits (a cut sentence may change its label)
    sents = [t for t in load_reviews("test").texts if 6 <= len(t.split()) <= 25][: min(args.n, 4)]
    if ready:
        with torch.no_grad():
            target = ready[0].score_texts(sents).topk(2, dim=1).indices[:, 1].cpu()
    else:
        target = torch.zeros(len(sents), dtype=torch.long)
    return run_comparison(methods, sents, target, budget=args.steps or None,
                          judges=load_judges("reviews", device=device), **tick)


# ---------------------------------------------------------------------------- zoo
def _zoo(args: argparse.Namespace) -> int:
    from . import zoo
    from .zoo.core import skipped_modules

    for name in getattr(args, "names", None) or []:
        if name not in zoo.recipes():
            raise UsageError(f"unknown zoo recipe {name!r}; available: {sorted(zoo.recipes())}.")

    if args.zoo_cmd == "list":
        for name, r in zoo.recipes().items():
            st = zoo.info(name)
            metric = ", ".join(f"{k}={v}" for k, v in (st.get("metrics") or {}).items()
                               if isinstance(v, (int, float)) and not isinstance(v, bool))[:70]
            print(f"{name:24s} v{r.version}  {st['status']:9s}  {metric}")
        for mod, why in skipped_modules().items():
            print(f"(skipped {mod}: {why})")
        return 0
    if args.zoo_cmd == "info":
        for name in args.names:
            print(json.dumps(zoo.info(name), indent=2, sort_keys=True))
        return 0
    if args.zoo_cmd == "build":
        names = list(zoo.recipes()) if args.all else args.names
        if not names:
            print("name one or more recipes, or --all", file=sys.stderr)
            return 2
        for name in names:
            t0 = time.perf_counter()
            model = zoo.build(name, force=args.force, reduced=args.reduced, device=args.device)
            meta = getattr(model, "zoo_meta", {})
            print(f"{name}: {meta.get('metrics')} ({time.perf_counter() - t0:.1f} s)")
            recipe = zoo.get_recipe(name)
            gate = recipe.reduced_check if args.reduced else recipe.check
            problem = gate(meta.get("metrics", {})) if gate else None
            if problem:
                print(f"  WARNING: {name} misses its quality gate: {problem}", file=sys.stderr)
                if args.ship:
                    print(f"  not shipped: {name} fails its quality gate", file=sys.stderr)
                    continue
            if args.ship:
                from .zoo.core import ship

                print(f"  shipped to {ship(name)}")
        return 0
    raise AssertionError(args.zoo_cmd)


# ------------------------------------------------------------------------ explain
def _explain(args: argparse.Namespace) -> int:
    """Explain a data set split batch by batch, streaming chunks to a folder that a rerun
    resumes (see :mod:`cfwidgets.batch`)."""
    from .batch import MixedRunError, RunBusyError, explain_dataset, load_results
    from .methods import get_method

    _check_count("--n", args.n, 0, " (0 = the whole split)")
    _check_count("--batch-size", args.batch_size, 1)
    try:
        cls = get_method(args.method)
    except KeyError as e:
        raise UsageError(f"--method: {e.args[0]}") from None
    if cls.modality != "image":
        raise UsageError(f"--method {args.method!r} explains sentences; `cfwidgets explain` runs the "
                         f"image methods (use `cfwidgets demo --methods {args.method}` or the Python API).")
    _check_image_dataset(args.dataset, f"the image method {args.method!r}")
    if args.split not in ("train", "test", "all"):
        raise UsageError(f"--split must be 'train', 'test' or 'all', got {args.split!r}.")
    target = _parse_target(args.target)
    knobs = _parse_knobs(args.knobs, cls)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {str(out)!r} is a file; give a folder (the run writes chunks and a "
                         f"manifest there).")
    try:
        path = explain_dataset(args.method, args.dataset, target, split=args.split,
                               batch_size=args.batch_size, n=args.n or None, out=out,
                               device=args.device, seed=args.seed, progress=True,
                               backend=args.backend, address=args.address, **knobs)
    except ImportError as e:  # --backend ray without Ray installed
        raise UsageError(str(e)) from None
    except MixedRunError as e:
        raise UsageError(str(e)) from None
    except RunBusyError as e:
        print(f"cfwidgets explain: error: {e}", file=sys.stderr)
        return 1
    except ValueError as e:  # e.g. a method without zoo models for this data set, a class >= K
        raise UsageError(f"{args.method} on --dataset {args.dataset!r}: {e.args[0] if e.args else e}") from None
    res = load_results(path)
    done = res.explained
    print(f"{len(res)} rows in {path} ({int(res.success[done].sum())}/{int(done.sum())} reached "
          f"their target, {int(res.skipped.sum())} skipped: already predicted as the target); "
          f"read them with cfwidgets.batch.load_results({str(path)!r})")
    return 0


def _parse_target(text: str):
    """``--target``: a rule name or a class index."""
    from .batch import TARGET_RULES

    if text in TARGET_RULES:
        return text
    if text.isdigit():
        return int(text)
    raise UsageError(f"--target must be one of {', '.join(TARGET_RULES)} or a class index (e.g. 3), "
                     f"got {text!r}.")


# -------------------------------------------------------------------------- bench
def _bench(args: argparse.Namespace) -> int:
    from .bench import bench_wachter

    bench_wachter(n=args.n, steps=args.steps, device=args.device, repeats=args.repeats)
    return 0


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    p = argparse.ArgumentParser(prog="cfwidgets", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    d = sub.add_parser("demo", help="explain a few test images with every method; write an HTML report")
    d.add_argument("--out", default="cfwidgets-report", help="output folder (default: ./cfwidgets-report)")
    d.add_argument("--device", default="auto", help="auto | cpu | cuda")
    d.add_argument("--dataset", default="mnist", help="mnist | fashion")
    d.add_argument("--n", type=int, default=6, help="number of test images")
    d.add_argument("--methods", default="", help="comma-separated subset of methods")
    d.add_argument("--steps", type=int, default=0, help="override every method's step budget")
    d.add_argument("--workers", type=int, default=0,
                   help="image methods run at once, the text ones beside them (0 = one per CPU core, at most 2; 1 = all one after another)")
    d.set_defaults(fn=_demo)

    z = sub.add_parser("zoo", help="list, inspect and build the model zoo")
    zsub = z.add_subparsers(dest="zoo_cmd", required=True)
    zsub.add_parser("list", help="recipes and their status")
    zi = zsub.add_parser("info", help="metadata of a checkpoint")
    zi.add_argument("names", nargs="+")
    zb = zsub.add_parser("build", help="train recipes (loads a valid cached one unless --force)")
    zb.add_argument("names", nargs="*")
    zb.add_argument("--all", action="store_true")
    zb.add_argument("--force", action="store_true", help="retrain even if a valid checkpoint exists")
    zb.add_argument("--reduced", action="store_true", help="reduced budget (not cached)")
    zb.add_argument("--ship", action="store_true", help="copy the checkpoint into the package (developers)")
    zb.add_argument("--device", default="auto")
    z.set_defaults(fn=_zoo)

    e = sub.add_parser("explain", help="explain a data set split in batches streamed to a folder "
                                       "(a rerun resumes an interrupted run)")
    e.add_argument("--method", default="wachter")
    e.add_argument("--dataset", default="mnist")
    e.add_argument("--split", default="test")
    e.add_argument("--target", default="next",
                   help="next ((label + 1) mod K) | random | runner-up | a class index")
    e.add_argument("--n", type=int, default=0, help="first n items (0 = all)")
    e.add_argument("--batch-size", type=int, default=256)
    e.add_argument("--knobs", default="", help='JSON of knob overrides, e.g. \'{"steps": 200}\'')
    e.add_argument("--seed", type=int, default=0, help="run seed (batch i is seeded from it and i)")
    e.add_argument("--out", default="cfwidgets-results", help="output folder (chunks + manifest)")
    e.add_argument("--device", default="auto")
    e.add_argument("--backend", default="local", choices=["local", "ray"],
                   help="local: batch after batch here; ray: one Ray task per batch")
    e.add_argument("--address", default=None,
                   help="with --backend ray: the cluster to join (auto, ray://host:10001)")
    e.set_defaults(fn=_explain)

    b = sub.add_parser("bench", help="time the Wachter method against a hand-written loop")
    b.add_argument("--n", type=int, default=100)
    b.add_argument("--steps", type=int, default=100)
    b.add_argument("--repeats", type=int, default=3)
    b.add_argument("--device", default="auto")
    b.set_defaults(fn=_bench)

    args = p.parse_args(argv)
    from .zoo.core import ZooError

    try:
        return int(args.fn(args) or 0)
    except UsageError as e:
        print(f"cfwidgets {args.cmd}: error: {e}", file=sys.stderr)
        return 2
    except ZooError as e:
        print(f"cfwidgets {args.cmd}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
