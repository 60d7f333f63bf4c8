"""`dermpacs learn ...` and `dermpacs models ...`: collect corrections, fine-tune, promote, roll back.

    dermpacs learn collect  [--json]                  harvest corrected SEGs from the PACS (C-FIND/C-GET)
    dermpacs learn train    --app APP [--wait] [--resume RUN]
    dermpacs learn status   [--json]                  training set and runs (progress)
    dermpacs models list    [--app APP] [--json]
    dermpacs models promote ID
    dermpacs models rollback [--app APP]

All take ``--config``/``--data-dir`` like ``dermpacs status``; every change is audited.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable


def add_parsers(sub, config_args: Callable[[argparse.ArgumentParser], None]) -> None:
    learn = sub.add_parser("learn", help="learn from clinicians' corrected SEGs")
    learn_sub = learn.add_subparsers(dest="learn_command", required=True)
    collect = learn_sub.add_parser("collect", help="harvest corrected SEGs from the PACS (C-FIND/C-GET)")
    config_args(collect)
    collect.add_argument("--json", action="store_true")
    train = learn_sub.add_parser("train", help="fine-tune a candidate from the active model (in the background)")
    config_args(train)
    train.add_argument("--app", required=True)
    train.add_argument("--wait", action="store_true", help="train in this process and wait for the result")
    train.add_argument("--resume", metavar="RUN", help="continue an interrupted run")
    status = learn_sub.add_parser("status", help="local training set and training runs")
    config_args(status)
    status.add_argument("--json", action="store_true")

    models = sub.add_parser("models", help="model versions: list, promote, roll back")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    listing = models_sub.add_parser("list", help="shipped, candidate and active versions per app")
    config_args(listing)
    listing.add_argument("--app")
    listing.add_argument("--json", action="store_true")
    promote = models_sub.add_parser("promote", help="make a candidate the active version (never a worse one)")
    config_args(promote)
    promote.add_argument("id")
    rollback = models_sub.add_parser("rollback", help="back to the previously active version")
    config_args(rollback)
    rollback.add_argument("--app")


def run(args: argparse.Namespace, config) -> int:
    from dicom.service.store import JobStore

    config.data_dir.mkdir(parents=True, exist_ok=True)
    store = JobStore(config.database)
    try:
        if args.command == "learn":
            return {"collect": _collect, "train": _train, "status": _status}[args.learn_command](args, config, store)
        return {"list": _list, "promote": _promote, "rollback": _rollback}[args.models_command](args, config, store)
    finally:
        store.close()


def _fail(message: str, code: int = 2) -> int:
    print(f"dermpacs: {message}", file=sys.stderr)
    return code


def _collect(args, config, store) -> int:
    from dicom.service.harvest import Harvester, HarvestError

    try:
        report = Harvester(config, store).collect()
    except HarvestError as exc:
        return _fail(str(exc), 1)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        d = report.as_dict()
        print(f"studies queried {d['studies_queried']}, SEGs found {d['seg_found']}, fetched {d['seg_fetched']}, "
              f"filed {d['filed']}, refused {len(d['refused'])}")
        for item in d["refused"]:
            print(f"  refused {item['sop_instance_uid']}: {item['reason']}")
    return 0


def _train(args, config, store) -> int:
    from .finetune import LearningError, create_run, execute, progress, read_run, start_background

    try:
        if args.resume:
            run = read_run(config.data_dir, args.resume)
            state = progress(config.data_dir, run)["state"]
            if state not in ("interrupted", "failed"):
                return _fail(f"run {run['id']} is {state}; only an interrupted or failed run resumes")
        else:
            run = create_run(config, args.app)
            store.audit("training_started", run=run["id"], app=run["app"], base=run["base"]["id"],
                        train_cases=len(run["train_cases"]), held_out_cases=len(run["held_out_cases"]))
    except LearningError as exc:
        return _fail(str(exc), 1)
    if args.wait:
        run = execute(config, run["id"], audit=store.audit)
        print(json.dumps(progress(config.data_dir, run)))
        return 0 if run["state"] == "done" else 1
    pid = start_background(args.config, config.data_dir, run["id"])
    print(f"training run {run['id']} started in the background (pid {pid}); "
          f"follow it with `dermpacs learn status`")
    return 0


def _status(args, config, store) -> int:
    from .dataset import TrainingSet
    from .finetune import list_runs, progress

    training_set = TrainingSet(config.data_dir, config.learning.holdout_percent)
    apps = {}
    for app in training_set.apps():
        train, held = training_set.split(app)
        apps[app] = {"train": len(train), "held_out": len(held)}
    runs = [progress(config.data_dir, r) for r in list_runs(config.data_dir)]
    if args.json:
        print(json.dumps({"training_set": apps, "runs": runs}, indent=2))
        return 0
    print("training set: " + (", ".join(f"{a} {c['train']} train + {c['held_out']} held out"
                                        for a, c in apps.items()) or "empty"))
    for r in runs:
        print(f"  run {r['id']}: {r['state']} {r['iterations_done']}/{r['iterations']} iterations"
              + (f", candidate {r['candidate']}" if r["candidate"] else "") + (f" ({r['error']})" if r["error"] else ""))
    return 0


def _list(args, config, store) -> int:
    from .registry import ModelRegistry

    versions = ModelRegistry(config.models_dir).list(args.app)
    if args.json:
        print(json.dumps([v.as_dict() for v in versions], indent=2, default=str))
        return 0
    for v in versions:
        evaluation = v.info.get("evaluation")
        verdict = ""
        if evaluation:
            verdict = (f"  held-out mean Dice {evaluation['candidate']['held_out']['mean_dice']:.3f} vs "
                       f"{evaluation['active']['held_out']['mean_dice']:.3f} ({evaluation['verdict']})")
        print(f"{'*' if v.state == 'active' else ' '} {v.id:<24} {v.state:<9} {v.name} {v.version} "
              f"sha256 {v.weights_sha256[:12]}{verdict}")
    return 0


def _promote(args, config, store) -> int:
    from .finetune import LearningError, promotion_check, reevaluate_if_stale
    from .registry import ModelRegistry, RegistryError

    registry = ModelRegistry(config.models_dir)
    try:
        candidate = registry.get(args.id)
        if candidate.state == "shipped":
            return _fail("the shipped model is reached with `dermpacs models rollback`")
        if candidate.state == "active":
            return _fail(f"{candidate.id} is already active")
        evaluation = reevaluate_if_stale(config, candidate)
        ok, reason = promotion_check(evaluation, config.learning.max_synthetic_drop)
        if not ok:
            store.audit("promotion_refused", app=candidate.app, id=candidate.id, by="operator", reason=reason)
            return _fail(f"{candidate.id} not promoted: {reason}", 1)
        previous = registry.active(candidate.app)
        registry.activate(candidate.id)
    except (RegistryError, LearningError) as exc:
        return _fail(str(exc))
    store.audit("model_promoted", app=candidate.app, id=candidate.id, version=candidate.version,
                weights_sha256=candidate.weights_sha256, previous=previous.id, by="operator", reason=reason)
    print(f"{candidate.app}: {candidate.id} ({candidate.name} {candidate.version}) is active; "
          f"the next analysis uses it ({reason})")
    return 0


def _rollback(args, config, store) -> int:
    from .registry import ModelRegistry, RegistryError

    registry = ModelRegistry(config.models_dir)
    app = args.app
    if app is None:
        promoted = [a for a in {v.app for v in registry.list()} if registry.active_id(a) != f"{a}-shipped"]
        if len(promoted) != 1:
            return _fail("name the app with --app" if promoted else "no app runs a promoted model")
        app = promoted[0]
    try:
        current, target = registry.rollback(app)
    except RegistryError as exc:
        return _fail(str(exc))
    active = registry.active(app)
    store.audit("model_rolled_back", app=app, id=current, to=target, version=active.version,
                weights_sha256=active.weights_sha256)
    print(f"{app}: {current} retired; {target} ({active.name} {active.version}) is active")
    return 0


__all__ = ["add_parsers", "run"]
