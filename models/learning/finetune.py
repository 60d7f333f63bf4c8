"""Fine-tune the active model on the clinic's corrections; judge the candidate against it.

    python -m models.learning.finetune --config dermpacs.yaml --run RUN_ID   (started by `dermpacs learn train`)

A run is a folder ``<data_dir>/learning/runs/<run>/`` (private) holding ``run.json``: the
app, the training and held-out case ids frozen at the start (so a resumed run trains on
the same photographs), the base model (id, version, weights hash) and the recipe; and its
state (queued, training, evaluating, done, failed) with progress. Training is the shared
engine ``models.facial.train.train`` (same loss, augmentation, letterboxing, checkpoints), started
from the active weights with the learning section's schedule; ``--resume`` continues from
its ``checkpoint.pt``. The candidate is then evaluated next to the active model on the
held-out corrections (never trained on) and on a fixed synthetic suite (generic skill must
not be forgotten), and written into the registry with a model card that lists counts,
dates and the recipe, never a patient identifier or UID.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any


from .dataset import Case, TrainingSet, make_private_dir, write_private
from .registry import ModelRegistry, ModelVersion
from .trainers import TRAINERS

SYNTHETIC_SEED = 15_015  # the synthetic suite is the same for every candidate and every node
REPLAY_SEED = 15_016  # replayed synthetic training samples: never the evaluation suite
ENGINES = {"facial_vitiligo": "models.facial.train.train", "vitiligo_lesion": "models.lesion (data, networks, loss)",
           "skin_prick": "models.prick.train.train"}
TRAINABLE_APPS = tuple(TRAINERS)  # apps with a trainer adapter (models/learning/trainers.py)


class LearningError(RuntimeError):
    """A learning step that cannot run; the message says why."""


# -- runs -----------------------------------------------------------------------------------------
def runs_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "learning" / "runs"


def read_run(data_dir: Path, run_id: str) -> dict[str, Any]:
    path = runs_dir(data_dir) / run_id / "run.json"
    if not path.exists():
        raise LearningError(f"no training run {run_id!r}")
    return json.loads(path.read_text())


def write_run(data_dir: Path, run: dict[str, Any]) -> None:
    write_private(runs_dir(data_dir) / run["id"] / "run.json", json.dumps(run, indent=2).encode())


def progress(data_dir: Path, run: dict[str, Any]) -> dict[str, Any]:
    """The run's state with iterations done (from the engine's train_log.jsonl) and liveness."""
    folder = runs_dir(data_dir) / run["id"]
    done = 0
    log = folder / "out" / "train_log.jsonl"
    if log.exists():
        lines = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
        done = lines[-1]["iteration"] if lines else 0
    alive = _alive(run.get("pid"))
    state = run["state"]
    if state in ("queued", "training", "evaluating") and not alive:
        state = "interrupted"
    return {"id": run["id"], "app": run["app"], "state": state, "iterations_done": done,
            "iterations": run["recipe"]["iterations"], "candidate": run.get("candidate"),
            "error": run.get("error"), "started": run.get("started")}


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie child of this process counts as dead
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def create_run(config, app: str) -> dict[str, Any]:
    """Freeze the split and the recipe of a new run (no training yet)."""
    if app not in TRAINABLE_APPS:
        raise LearningError(f"learning for the {app} app is not available in this release "
                            f"(trainable: {', '.join(TRAINABLE_APPS)})")
    learning = config.learning
    training_set = TrainingSet(config.data_dir, learning.holdout_percent)
    training_set.apply_retention(learning.retention_days)
    train, held_out = training_set.split(app)
    if len(train) < learning.min_train_cases:
        raise LearningError(f"{len(train)} correction(s) to train on; at least {learning.min_train_cases} needed")
    if not held_out:
        raise LearningError(f"no held-out correction yet ({len(train)} for training, "
                            f"{learning.holdout_percent} % are held out): a candidate could not be judged")
    for running in list_runs(config.data_dir):
        if running["app"] == app and running["state"] in ("queued", "training", "evaluating"):
            raise LearningError(f"run {running['id']} is still {running['state']} for {app}")
    base = ModelRegistry(config.models_dir).active(app)
    run_id = dt.datetime.now(dt.timezone.utc).strftime(f"{app}-%Y%m%dT%H%M%S")
    run = {
        "id": run_id, "app": app, "state": "queued", "created": time.time(),
        "train_cases": [c.case_id for c in train], "held_out_cases": [c.case_id for c in held_out],
        "base": {"id": base.id, "version": base.version, "weights_sha256": base.weights_sha256,
                 "weights": str(base.weights)},
        "recipe": {"iterations": learning.iterations, "learning_rate": learning.learning_rate,
                   "batch_size": learning.batch_size, "input_size": learning.input_size,
                   "holdout_percent": learning.holdout_percent, "engine": ENGINES[app],
                   "synthetic_eval_samples": learning.synthetic_eval_samples,
                   "replay_synthetic": learning.replay_synthetic},
    }
    make_private_dir(runs_dir(config.data_dir) / run_id)
    write_run(config.data_dir, run)
    return run


def list_runs(data_dir: Path) -> list[dict[str, Any]]:
    folder = runs_dir(data_dir)
    if not folder.is_dir():
        return []
    return [json.loads((p / "run.json").read_text()) for p in sorted(folder.iterdir()) if (p / "run.json").exists()]


def start_background(config_path: Path | None, data_dir: Path, run_id: str) -> int:
    """Run the training in its own process (nice, own session): the command returns at once."""
    args = [sys.executable, "-m", "models.learning.finetune", "--run", run_id, "--data-dir", str(data_dir)]
    if config_path is not None:
        args += ["--config", str(config_path)]
    folder = runs_dir(data_dir) / run_id
    log = open(folder / "train.log", "ab")
    os.chmod(folder / "train.log", 0o600)
    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(["nice", "-n", "10", *args], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True, cwd=repo, env=env)
    log.close()
    run = read_run(data_dir, run_id)
    run["pid"] = proc.pid
    write_run(data_dir, run)
    return proc.pid


# -- training and evaluation -----------------------------------------------------------------------
def execute(config, run_id: str, audit=None) -> dict[str, Any]:
    """Train (or resume), evaluate, register the candidate; returns the finished run."""
    data_dir = Path(config.data_dir)
    run = read_run(data_dir, run_id)
    run.update(state="training", pid=os.getpid(), started=run.get("started") or time.time(), error=None)
    write_run(data_dir, run)
    try:
        registry = ModelRegistry(config.models_dir)
        base = _base_version(registry, run)
        training_set = TrainingSet(data_dir, config.learning.holdout_percent)
        cases = {c.case_id: c for c in training_set.cases(run["app"])}
        train_cases = [cases[c] for c in run["train_cases"] if c in cases]
        held_out = [cases[c] for c in run["held_out_cases"] if c in cases]
        if not train_cases or not held_out:
            raise LearningError("the run's corrections are gone (retention?)")
        folder = runs_dir(data_dir) / run_id
        train_data = training_set.materialize(train_cases, folder / "train_data")
        trainer = TRAINERS[run["app"]]
        trainer.replay(train_data, round(len(train_cases) * run["recipe"].get("replay_synthetic", 0.0)), REPLAY_SEED)
        held_data = training_set.materialize(held_out, folder / "held_out_data")
        version = f"{base.version.split('-local')[0]}-local.{registry.next_version_number(run['app'])}"
        weights = trainer.train(run["recipe"], base.weights, train_data, folder / "out", version,
                                f"{base.name} fine-tuned on local corrections from {base.id} ({base.version})")
        run["state"] = "evaluating"
        write_run(data_dir, run)
        evaluation = evaluate_pair(weights, base.weights, held_data, run["recipe"]["synthetic_eval_samples"],
                                   run["app"])
        evaluation["baseline"] = {"id": base.id, "version": base.version, "weights_sha256": base.weights_sha256}
        evaluation["held_out_cases"] = sorted(run["held_out_cases"])
        info = {"run": run_id, "parent": base.id, "evaluation": evaluation,
                "data": data_summary(train_cases, held_out), "recipe": run["recipe"]}
        card = model_card(run["app"], version, base, info)
        candidate = registry.add_candidate(run["app"], weights, info, card)
        run.update(state="done", candidate=candidate.id, finished=time.time())
        write_run(data_dir, run)
        if audit:
            audit("candidate_trained", run=run_id, app=run["app"], candidate=candidate.id, version=candidate.version,
                  weights_sha256=candidate.weights_sha256, base=base.id, verdict=evaluation["verdict"])
        rule = config.learning.auto_promote
        if rule is not None:
            ok, reason = promotion_check(evaluation, config.learning.max_synthetic_drop, rule)
            if ok:
                registry.activate(candidate.id)
                if audit:
                    audit("model_promoted", app=run["app"], id=candidate.id, version=candidate.version,
                          weights_sha256=candidate.weights_sha256, by="rule", reason=reason)
            elif audit:
                audit("promotion_refused", app=run["app"], id=candidate.id, by="rule", reason=reason)
        return run
    except BaseException as exc:
        run.update(state="failed", error=f"{type(exc).__name__}: {exc}")
        write_run(data_dir, run)
        traceback.print_exc()
        raise
    finally:  # the run's copies of patient photographs (hard links) do not outlive it
        import shutil

        for sub in ("train_data", "held_out_data"):
            shutil.rmtree(runs_dir(data_dir) / run_id / sub, ignore_errors=True)


def _base_version(registry: ModelRegistry, run: dict[str, Any]) -> ModelVersion:
    base = registry.get(run["base"]["id"])
    if base.weights_sha256 != run["base"]["weights_sha256"]:
        raise LearningError(f"the base model {base.id} changed since the run started")
    return base


def evaluate_pair(candidate: Path, active: Path, held_out_folder: Path, synthetic_n: int,
                  app: str = "facial_vitiligo") -> dict[str, Any]:
    """Candidate vs active on the held-out corrections and on the synthetic suite (same samples)."""
    trainer = TRAINERS[app]
    held = trainer.held_out(held_out_folder)
    synthetic = trainer.synthetic(synthetic_n, SYNTHETIC_SEED) if synthetic_n else []
    result: dict[str, Any] = {}
    for label, weights in (("candidate", candidate), ("active", active)):
        identity, held_scores = trainer.score(weights, held)
        result[label] = {**identity, "held_out": held_scores,
                         "synthetic": trainer.score(weights, synthetic)[1] if synthetic else None}
    d_held = result["candidate"]["held_out"]["mean_dice"] - result["active"]["held_out"]["mean_dice"]
    d_syn = (result["candidate"]["synthetic"]["mean_dice"] - result["active"]["synthetic"]["mean_dice"]
             if synthetic else 0.0)
    result["delta"] = {"held_out_mean_dice": d_held, "synthetic_mean_dice": d_syn}
    result["verdict"] = "better" if d_held > 0 else ("equal" if d_held == 0 else "worse")
    return result


def promotion_check(evaluation: dict[str, Any], max_synthetic_drop: float, rule=None) -> tuple[bool, str]:
    """Never promote a worse candidate; with a rule, only a clearly better one on enough cases."""
    d_held = evaluation["delta"]["held_out_mean_dice"]
    d_syn = evaluation["delta"]["synthetic_mean_dice"]
    n = evaluation["candidate"]["held_out"]["n"]
    if d_held <= 0:
        return False, (f"not better than the active model on the {n} held-out correction(s): "
                       f"mean Dice {d_held:+.4f}")
    if d_syn < -max_synthetic_drop:
        return False, (f"forgets generic skill: synthetic-suite mean Dice {d_syn:+.4f} "
                       f"(allowed drop {max_synthetic_drop})")
    if rule is not None:
        if n < rule.min_cases:
            return False, f"rule: {n} held-out correction(s), the rule needs {rule.min_cases}"
        if d_held < rule.min_improvement:
            return False, f"rule: held-out mean Dice {d_held:+.4f} < required {rule.min_improvement:+.4f}"
    return True, f"held-out mean Dice {d_held:+.4f} on {n} correction(s); synthetic {d_syn:+.4f}"


def reevaluate_if_stale(config, candidate: ModelVersion) -> dict[str, Any]:
    """The evaluation against the *current* active model and held-out set (re-run if either changed)."""
    registry = ModelRegistry(config.models_dir)
    active = registry.active(candidate.app)
    evaluation = candidate.info.get("evaluation") or {}
    training_set = TrainingSet(config.data_dir, config.learning.holdout_percent)
    _, held_out = training_set.split(candidate.app)
    current_held = sorted(c.case_id for c in held_out)
    if (evaluation.get("baseline", {}).get("weights_sha256") == active.weights_sha256
            and evaluation.get("held_out_cases") == current_held):
        return evaluation
    if not held_out:
        raise LearningError("no held-out corrections to judge the candidate on")
    folder = runs_dir(config.data_dir) / f"promote-{candidate.id}-{int(time.time())}"
    held_data = training_set.materialize(held_out, folder / "held_out_data")
    evaluation = evaluate_pair(candidate.weights, active.weights, held_data,
                               config.learning.synthetic_eval_samples, candidate.app)
    evaluation["baseline"] = {"id": active.id, "version": active.version, "weights_sha256": active.weights_sha256}
    evaluation["held_out_cases"] = current_held
    registry.update_info(candidate.id, evaluation=evaluation)
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    return evaluation


# -- the model card ----------------------------------------------------------------------------------
def data_summary(train: list[Case], held_out: list[Case]) -> dict[str, Any]:
    """Counts and dates only: no names, IDs or UIDs."""
    dates = sorted(d for d in (c.meta.get("photograph_date") for c in train + held_out) if d)
    creators = sorted({c.meta.get("creator", "?").split(" / ")[0] for c in train + held_out})
    return {"local_photographs_train": len(train), "local_photographs_held_out": len(held_out),
            "photograph_date_range": [_date(dates[0]), _date(dates[-1])] if dates else None,
            "correction_sources": creators}


def _date(text: str) -> str:
    return f"{text[:4]}-{text[4:6]}-{text[6:8]}" if len(text) >= 8 and text.isdigit() else text


def model_card(app: str, version: str, base: ModelVersion, info: dict[str, Any]) -> str:
    """The candidate's card, in the one format of ``models/model_card.py`` (Speed left out:
    nothing is benchmarked on the node that trains it). Counts and dates only, no identifiers."""
    from models.model_card import title

    e, d, r = info["evaluation"], info["data"], info["recipe"]
    row = "| {} | {:.4f} | {:.4f} | {:.2f} | {} |"

    def rows(key: str) -> list[str]:
        out = []
        for label in ("active", "candidate"):
            m = e[label][key]
            if m:
                out.append(row.format(f"{label} ({e[label]['version']})", m["mean_dice"], m["pooled_dice"],
                                      m["f_vitiligo_abs_error_median_pp"], m["n"]))
        return out

    dates = d["photograph_date_range"]
    return "\n".join([
        title(base.name, version),
        "",
        f"Local model of `{app}`, fine-tuned on this node from `{base.id}` ({base.name} {base.version}, "
        f"weights SHA-256 `{base.weights_sha256}`) on dermatologists' corrected segmentations stored in the "
        "local PACS.",
        "",
        "**Not for clinical use until validated locally.** This card lists counts and dates only; "
        "the training photographs stay on this node (private, pruned by the retention policy).",
        "",
        "Trained only on our own data: this node's corrected photographs (Data) and samples from dermpacs' "
        f"own synthetic generator (replay, Recipe), starting from `{base.id}`, whose card states its own "
        "training data.",
        "",
        "## Data",
        f"- local photographs used for training: {d['local_photographs_train']}",
        f"- local photographs held out for evaluation (never trained on): {d['local_photographs_held_out']}",
        f"- photograph dates: {dates[0]} to {dates[1]}" if dates else "- photograph dates: not recorded",
        f"- corrections made with: {', '.join(d['correction_sources'])}",
        "",
        "## Recipe",
        f"- engine `{r['engine']}` (the app's own loss and augmentation on the shared training engine), "
        f"{r.get('replay_synthetic', 0)} synthetic sample(s) replayed per local photograph",
        f"- start: the active model; {r['iterations']} iterations, batch {r['batch_size']}, AdamW lr "
        f"{r['learning_rate']} (poly decay), input {r['input_size'] or 'as the base model'}",
        f"- held-out share: {r['holdout_percent']} % of photographs, fixed by a hash of each photograph",
        "",
        "## Evaluation: candidate vs the model active when it was trained",
        "",
        "Held-out local corrections:",
        "",
        "| model | mean Dice | pooled Dice | median F-Vitiligo error (pp) | n |",
        "|---|---|---|---|---|",
        *rows("held_out"),
        "",
        f"Synthetic suite (seed {SYNTHETIC_SEED}, generic skill):",
        "",
        "| model | mean Dice | pooled Dice | median F-Vitiligo error (pp) | n |",
        "|---|---|---|---|---|",
        *rows("synthetic"),
        "",
        f"Verdict on the held-out set: **{e['verdict']}** (mean Dice {e['delta']['held_out_mean_dice']:+.4f}; "
        f"synthetic {e['delta']['synthetic_mean_dice']:+.4f}).",
        "",
        "## Intended use",
        f"A candidate to replace the active `{app}` model on this node, once an administrator (or the "
        "configured promotion rule) has compared it with the active one on the numbers above and it has "
        "been validated locally.",
        "",
        "## Limitations",
        f"- Judged on {d['local_photographs_held_out']} held-out local photograph(s) from the same node, "
        "cameras and correctors as the training set: not an external validation.",
        f"- Everything the card of `{base.id}` ({base.name} {base.version}) lists as limitations still applies.",
        "- Speed not measured here: the network is the base model's (its card gives its speed), at the input "
        "size in Recipe.",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    from dicom.service.config import load_config
    from dicom.service.store import JobStore

    p = argparse.ArgumentParser(prog="python -m models.learning.finetune", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True)
    p.add_argument("--config", type=Path)
    p.add_argument("--data-dir", type=Path)
    args = p.parse_args(argv)
    config = load_config(args.config, data_dir=args.data_dir)
    store = JobStore(config.database)
    try:
        run = execute(config, args.run, audit=store.audit)
    finally:
        store.close()
    print(json.dumps({"run": run["id"], "state": run["state"], "candidate": run.get("candidate")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
