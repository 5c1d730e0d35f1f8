"""The pipelines' steps as plain functions: what each Kubeflow component runs.

Each takes the run's work dir first (``@task`` records it there) and paths of its input and
output artifacts; everything durable between pipelines lives under the work dir (on Kubeflow,
a volume): ``feast/`` (the Feast repo), ``accepted/`` (the last accepted source table),
``mlflow/`` (the embedded MLflow store unless a URI is given), ``rollout.json`` (the last
rollout's timeline and where its gateway logs predictions).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.context import StepFailed, mlflow_uri, require_gateway, require_mlflow, require_redis, task

ACCEPTED = "accepted/user_features.parquet"
EXPERIMENT = "infergate-pipelines"      # the MLflow experiment of the pipelines' runs


def _log_run(uri: str, name: str, params: dict, metrics: dict, files: list[Path], tags: dict | None = None) -> str:
    """One MLflow run with params, metrics and files; returns its id."""
    import contextlib
    import sys

    import mlflow

    from registry.settings import artifact_root
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    exp_id = exp.experiment_id if exp else client.create_experiment(EXPERIMENT, artifact_location=artifact_root(uri))
    with contextlib.redirect_stdout(sys.stderr), mlflow.start_run(experiment_id=exp_id, run_name=name) as run:
        mlflow.log_params(params)
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None})
        for k, v in (tags or {}).items():
            mlflow.set_tag(k, v)
        for f in files:
            if f.is_dir():
                mlflow.log_artifacts(str(f), artifact_path=f.name)
            else:
                mlflow.log_artifact(str(f))
        return run.info.run_id


# -- features ------------------------------------------------------------------------------

@task("load-source")
def load_source(workdir: str, source: str, rows: int, seed: int, out: str) -> dict:
    """The source table: ``source`` (parquet) when given, else ``rows`` generated users."""
    import pandas as pd

    from features.repo.datagen import generate_frame
    if source:
        path = Path(source)
        if not path.is_file():
            raise StepFailed(f"source: {path} is not a file")
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # noqa: BLE001 - any unreadable file: say which and why
            raise StepFailed(f"source: {path} is not a readable parquet file: {exc}") from None
    else:
        frame = generate_frame(rows, seed)
    if "event_timestamp" in frame.columns and "created" not in frame.columns:
        frame["created"] = frame["event_timestamp"]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(out, index=False)
    return {"rows": len(frame), "source": source or f"generate_frame({rows}, seed={seed})"}


@task("validate")
def validate_table(workdir: str, table: str, report_out: str, max_null_rate: float, max_psi: float) -> dict:
    """Schema, ranges, null rates, drift vs the last accepted table; fails naming the columns."""
    import pandas as pd

    from pipelines.validate import Limits, summary, validate
    frame = pd.read_parquet(table)
    acc_path = Path(workdir) / ACCEPTED
    accepted = pd.read_parquet(acc_path) if acc_path.is_file() else None
    rep = validate(frame, accepted, Limits(max_null_rate=max_null_rate, max_psi=max_psi))
    Path(report_out).parent.mkdir(parents=True, exist_ok=True)
    Path(report_out).write_text(json.dumps(rep, indent=1))
    (Path(workdir) / "validation.json").write_text(json.dumps(rep, indent=1))
    if not rep["passed"]:
        raise StepFailed(f"source table refused ({len(rep['failures'])} failed checks): {summary(rep)}")
    return rep


@task("apply-materialize")
def apply_materialize(workdir: str, table: str, online: str, redis_url: str, project: str) -> str:
    """``feast apply`` over the validated table, then materialize it into the online store."""
    import pandas as pd

    from features.repo.workspace import Workspace
    if online == "redis":
        require_redis(redis_url)
    elif online != "sqlite":
        raise StepFailed(f"online: must be redis or sqlite, got {online!r}")
    repo = Path(workdir).resolve() / "feast"
    ws = Workspace(repo, project=project, online=online, redis_url=redis_url)
    store = ws.apply(pd.read_parquet(table))
    ws.materialize(store, progress=False)
    return str(repo)


@task("check-online")
def check_online(workdir: str, repo: str, table: str, sample: int, seed: int) -> dict:
    """Online values of ``sample`` users equal the offline table's latest row; then accept it."""
    import pandas as pd

    from features.repo.datagen import FEATURE_NAMES
    from features.repo.definitions import VIEW_NAME
    from features.repo.workspace import Workspace
    frame = pd.read_parquet(table)
    latest = frame.sort_values("event_timestamp").groupby("user_id").tail(1).set_index("user_id")
    rng = np.random.default_rng(seed)
    ids = rng.choice(latest.index.to_numpy(), size=min(sample, len(latest)), replace=False)
    store = Workspace(Path(repo)).store()
    got = store.get_online_features(features=[f"{VIEW_NAME}:{n}" for n in FEATURE_NAMES],
                                    entity_rows=[{"user_id": int(i)} for i in ids]).to_dict()
    online = np.array([[np.nan if v is None else v for v in got[n]] for n in FEATURE_NAMES], dtype=np.float32).T
    offline = latest.loc[ids, list(FEATURE_NAMES)].to_numpy(np.float32)
    same = np.isclose(online, offline, rtol=1e-6, atol=0, equal_nan=True)
    bad = [FEATURE_NAMES[j] for j in np.where(~same.all(axis=0))[0]]
    if bad:
        raise StepFailed(f"online store disagrees with the offline table on {int((~same).any(axis=1).sum())} "
                         f"of {len(ids)} sampled users, columns: {', '.join(bad)}")
    acc = Path(workdir) / ACCEPTED
    acc.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(table, acc)
    return {"sampled": len(ids), "mismatches": 0, "accepted": str(acc)}


# -- train -----------------------------------------------------------------------------------

@task("training-set")
def training_set(workdir: str, out: str, label_delay_s: int, seed: int) -> dict:
    """Labels (the generator's segment rule) joined to the features as of each label's time,
    with Feast's point-in-time join; plus the 4 request-side inputs (noise the model must ignore)."""
    import pandas as pd

    from features.repo.datagen import FEATURE_NAMES, segment_label
    from features.repo.definitions import VIEW_NAME
    from features.repo.workspace import Workspace
    from runtime.modelgen import REQUEST_WIDTH
    acc, repo = Path(workdir) / ACCEPTED, Path(workdir).resolve() / "feast"
    if not acc.is_file() or not (repo / "feature_store.yaml").is_file():
        raise StepFailed(f"no accepted feature table in {workdir}: run the features pipeline first")
    table = pd.read_parquet(acc)
    labels = pd.DataFrame({"user_id": table["user_id"].to_numpy(),
                           "event_timestamp": table["event_timestamp"] + pd.to_timedelta(label_delay_s, unit="s"),
                           "label": segment_label(table)})
    store = Workspace(repo).store()
    joined = store.get_historical_features(entity_df=labels,
                                           features=[f"{VIEW_NAME}:{n}" for n in FEATURE_NAMES]).to_df()
    missing = int(joined[list(FEATURE_NAMES)].isna().all(axis=1).sum())
    if missing == len(joined):
        raise StepFailed("the point-in-time join found no features for any label")
    rng = np.random.default_rng(seed)
    for i in range(REQUEST_WIDTH):
        joined[f"request_{i}"] = rng.standard_normal(len(joined)).astype(np.float32)
    joined = joined.sort_values("user_id").reset_index(drop=True)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    joined.to_parquet(out, index=False)
    return {"rows": len(joined), "labels_without_features": missing}


@task("train")
def train_model(workdir: str, dataset: str, model_out: str, holdout_out: str, seed: int, hidden: int,
                max_iter: int) -> dict:
    """scikit-learn MLP (registry/train.py) on the training set, exported for Triton."""
    import pandas as pd

    from features.repo.datagen import FEATURE_NAMES
    from registry.train import fit_export
    from runtime.modelgen import REQUEST_WIDTH
    frame = pd.read_parquet(dataset)
    cols = list(FEATURE_NAMES) + [f"request_{i}" for i in range(REQUEST_WIDTH)]
    x = frame[cols].to_numpy(np.float32)
    y = frame["label"].to_numpy(np.int64)
    metrics, x_te, y_te = fit_export(x, y, Path(model_out), seed=seed, hidden=hidden, max_iter=max_iter)
    Path(holdout_out).parent.mkdir(parents=True, exist_ok=True)
    with open(holdout_out, "wb") as f:
        np.savez(f, x=x_te, y=y_te)
    return metrics


def _folder_model(folder: Path):
    """The folder's own model.py behind the registry's pyfunc wrapper (what Triton runs)."""
    from types import SimpleNamespace

    from registry.pyfunc_model import TritonVersionModel
    m = TritonVersionModel()
    m.load_context(SimpleNamespace(artifacts={"triton": str(folder)}))
    return m


def _scores(probs: np.ndarray, y: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import log_loss
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-7, 1)
    p = p / p.sum(axis=1, keepdims=True)
    return {"accuracy": float((p.argmax(axis=1) == y).mean()),
            "log_loss": float(log_loss(y, p, labels=list(range(p.shape[1]))))}


@task("evaluate-register")
def evaluate_register(workdir: str, model_dir: str, holdout: str, uri: str, model: str, margin: float,
                      report_out: str) -> dict:
    """Holdout accuracy of the new model vs the current ``champion`` (the demo's random-weight
    version 1 when the registry has none yet); log everything to MLflow; register the new
    model as ``challenger`` only when its accuracy beats the champion's by ``margin``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import confusion_matrix

    from registry.errors import NotFound
    from registry.signature import Signature
    from registry.store import ModelStore
    from runtime.triton import DEFAULT_REPOSITORY
    uri = mlflow_uri(workdir, uri)
    require_mlflow(uri)
    store = ModelStore(uri)
    try:
        champ = store.resolve(model, alias="champion")
        seeded = False
    except NotFound:
        demo = DEFAULT_REPOSITORY / model / "1"
        champ = store.register(model, demo, Signature.for_folder(demo), alias="champion",
                               tags={"source": f"model_repo/{model}/1 (random-weight demo version)"})
        seeded = True
    data = np.load(holdout)
    x, y = data["x"], data["y"]
    champ_scores = _scores(store.load_pyfunc(champ).predict(x), y)
    new_probs = _folder_model(Path(model_dir)).predict(None, x)
    new_scores = _scores(new_probs, y)
    delta = new_scores["accuracy"] - champ_scores["accuracy"]
    better = delta >= margin
    out = Path(report_out)
    out.mkdir(parents=True, exist_ok=True)
    cm = confusion_matrix(y, np.asarray(new_probs).argmax(axis=1), labels=list(range(new_probs.shape[1])))
    fig, ax = plt.subplots(figsize=(4, 3.5))
    ax.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("label")
    ax.set_title(f"holdout confusion (accuracy {new_scores['accuracy']:.3f})")
    fig.tight_layout()
    fig.savefig(out / "confusion.png", dpi=90)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.bar(["champion v" + champ.version, "new"], [champ_scores["accuracy"], new_scores["accuracy"]],
           color=["#999", "#2a7"])
    ax.axhline(champ_scores["accuracy"] + margin, ls="--", c="k", lw=0.8, label=f"bar (+{margin})")
    ax.set_ylim(0, 1)
    ax.set_ylabel("holdout accuracy")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "vs_champion.png", dpi=90)
    plt.close(fig)
    result = {"model": model, "champion_version": champ.version, "champion_seeded_from_demo": seeded,
              "champion": champ_scores, "new": new_scores, "accuracy_delta": round(delta, 6), "margin": margin,
              "holdout_rows": int(len(y)), "registered": None}
    if better:
        ref = store.register(model, Path(model_dir), Signature.for_folder(Path(model_dir)), alias="challenger",
                             tags={"holdout_accuracy": f"{new_scores['accuracy']:.4f}",
                                   "beats_champion_by": f"{delta:.4f}"})
        result["registered"] = {"version": ref.version, "alias": "challenger"}
    (out / "evaluation.json").write_text(json.dumps(result, indent=1))
    run_id = _log_run(uri, "train", {"model": model, "margin": margin, "holdout_rows": len(y),
                                     "champion_version": champ.version},
                      {"holdout_accuracy": new_scores["accuracy"], "holdout_log_loss": new_scores["log_loss"],
                       "champion_accuracy": champ_scores["accuracy"], "champion_log_loss": champ_scores["log_loss"],
                       "accuracy_delta": delta},
                      [out / "confusion.png", out / "vs_champion.png", out / "evaluation.json", Path(model_dir)],
                      {"registered": "yes" if better else "no (did not beat the champion by the margin)"})
    result["mlflow_run"] = run_id
    return result


# -- synthetic -------------------------------------------------------------------------------

@task("feature-table")
def feature_table(workdir: str, out: str) -> dict:
    """The accepted feature table's 16 feature columns (the GAN's training data)."""
    import pandas as pd

    from features.repo.datagen import FEATURE_NAMES
    acc = Path(workdir) / ACCEPTED
    if not acc.is_file():
        raise StepFailed(f"no accepted feature table in {workdir}: run the features pipeline first")
    frame = pd.read_parquet(acc, columns=list(FEATURE_NAMES))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(out, index=False)
    return {"rows": len(frame)}


@task("train-gan")
def train_gan(workdir: str, table: str, export_out: str, steps: int, seed: int, holdout: int,
              max_seconds: float, hidden: int) -> dict:
    """WGAN-GP (synthetic/train.py) on the table; export + quality report + plots."""
    from synthetic.datasets import load_dataset
    from synthetic.plots import write_plots
    from synthetic.quality import evaluate
    from synthetic.train import TrainConfig, train
    src = Path(export_out).parent / "table.parquet"   # load_dataset tells parquet from CSV by the suffix
    src.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(table, src)
    tbl = load_dataset("user_features", table=src, holdout=holdout, seed=seed)
    res = train(tbl, TrainConfig(steps=steps, seed=seed, eval_every=0, max_seconds=max_seconds or None,
                                     hidden=hidden),
                progress=False)
    out = Path(export_out)
    res.sampler.save(out)
    rep = evaluate(res.sampler, tbl)
    data = res.sampler.sample(rep["rows"]["synthetic"], rep["sample_seed"])
    write_plots({k: tbl.holdout[k] for k in res.sampler.columns},
                {k: data[:, i] for i, k in enumerate(res.sampler.columns)}, out / "plots", tbl.name)
    (out / "report.json").write_text(json.dumps(rep, indent=1, sort_keys=True) + "\n")
    return {"steps_done": res.steps_done, "seconds": round(res.seconds, 1), "c2st_auc": rep["c2st_auc"],
            "gate": rep["gate"]}


@task("gate-publish")
def gate_publish(workdir: str, export: str, uri: str, rows: int, seed: int, table_out: str,
                 require_gate: bool) -> dict:
    """Register the generator; publish it and the synthetic table only when its report passes
    the gate (synthetic/quality.py bars). ``require_gate``: a failed gate fails the run."""
    from synthetic.sampler import Sampler
    from synthetic.store import GateFailed, Store
    uri = mlflow_uri(workdir, uri)
    require_mlflow(uri)
    rep = json.loads((Path(export) / "report.json").read_text())
    store = Store(uri)
    version = store.add_version("user_features", Path(export), rep, None)
    result: dict[str, Any] = {"version": version, "gate": rep["gate"], "published": False, "rows": 0}
    try:
        store.publish("user_features", version)
    except GateFailed as exc:
        Path(table_out).parent.mkdir(parents=True, exist_ok=True)
        Path(table_out).write_text("")  # an empty artifact: nothing was published
        if require_gate:
            raise StepFailed(f"not published: {exc}") from None
        result["reason"] = str(exc)
        return result
    import pandas as pd
    sampler = Sampler.load(Path(export))
    data = sampler.sample(rows, seed)
    Path(table_out).parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(data, columns=list(sampler.columns)).to_parquet(table_out, index=False)
    result.update(published=True, rows=rows)
    return result


# -- rollout ---------------------------------------------------------------------------------

def _lifecycle(uri: str, gateway: str):
    from registry.gateway_client import GatewayAdmin, token_from_env
    from registry.lifecycle import Lifecycle
    from registry.store import ModelStore
    require_mlflow(uri)
    return Lifecycle(ModelStore(uri), GatewayAdmin(gateway, token_from_env()))


@task("preflight")
def preflight(workdir: str, uri: str, gateway: str, redis_url: str, model: str) -> dict:
    """MLflow, Redis, the gateway and every Triton replica answer; a challenger exists."""
    from registry.errors import NotFound
    from registry.store import ModelStore
    uri = mlflow_uri(workdir, uri)
    require_mlflow(uri)
    require_redis(redis_url)
    triton = require_gateway(gateway)
    try:
        ref = ModelStore(uri).resolve(model, alias="challenger")
    except NotFound:
        raise StepFailed(f"no {model}@challenger in MLflow at {uri}: run the train pipeline first") from None
    return {"challenger": ref.version, "replicas": [r["url"] for r in triton["replicas"]]}


@task("deploy")
def deploy(workdir: str, uri: str, gateway: str, model: str, experiment: str, variant: str, weight: float) -> dict:
    lc = _lifecycle(mlflow_uri(workdir, uri), gateway)
    ref = lc.store.resolve(model, alias="challenger")
    out = lc.deploy(ref, experiment, variant, weight)
    return {"version": ref.version, "triton_version": out.get("triton_version"), "weight": weight}


@task("ramp")
def ramp(workdir: str, uri: str, gateway: str, redis_url: str, prefix: str, model: str, experiment: str,
         variant: str, plan: str, hold_s: float, rps: float) -> dict:
    """Each step of ``plan``: set the weight, hold under the guardrails while a simulated client
    sends requests and reports their outcomes. The verdict goes to the next step."""
    import time

    from pipelines.traffic import Traffic
    from registry.rollout import BAD_STATES, Rollout, RolloutLock, parse_plan
    lc = _lifecycle(mlflow_uri(workdir, uri), gateway)
    ref = lc.store.resolve(model, alias="challenger")
    weights = parse_plan(plan)
    lock = RolloutLock(experiment, redis_url, prefix)
    r = Rollout(lc, ref, experiment, variant, weights, hold_s, lock)
    steps: list[dict[str, Any]] = []
    verdict = "promote"
    with Traffic(gateway, Path(workdir) / ACCEPTED, model, rps) as traffic, lock:
        cfg, _ = lc.experiment(experiment)
        for i, w in enumerate(weights):
            lc.set_weight(experiment, variant, w, f"pipelines: rollout {ref.uri} step {i + 1} at {w:g}%")
            lock.renew()
            t0 = time.time()
            state, figures, split, seconds = r._hold(cfg["model"])
            steps.append({"step": i + 1, "weights": split, "start": t0, "end": time.time(),
                          "guardrails": state, "variants": figures})
            if state in BAD_STATES:
                verdict = "rollback"
                break
    timeline = {"experiment": experiment, "variant": variant, "model": model, "version": ref.version,
                "redis_url": redis_url, "prefix": prefix, "steps": steps, "verdict": verdict,
                "traffic": traffic.summary()}
    (Path(workdir) / "rollout.json").write_text(json.dumps(timeline, indent=1))
    if traffic.summary()["answered"] == 0:
        raise StepFailed(f"no request was answered by the gateway during the ramp: {traffic.summary()}")
    return timeline


@task("promote-or-rollback")
def finish(workdir: str, uri: str, gateway: str, model: str, experiment: str, variant: str) -> dict:
    timeline = json.loads((Path(workdir) / "rollout.json").read_text())
    lc = _lifecycle(mlflow_uri(workdir, uri), gateway)
    ref = lc.store.resolve(model, alias="challenger")
    if timeline["verdict"] == "promote":
        out = lc.promote(ref, experiment, variant)
    else:
        out = lc.rollback(experiment, variant, f"pipelines: guardrails stopped the rollout of {ref.uri}")
    timeline["result"] = out
    (Path(workdir) / "rollout.json").write_text(json.dumps(timeline, indent=1, default=str))
    return {"verdict": timeline["verdict"], **{k: v for k, v in out.items() if isinstance(v, (str, int, float))}}


# -- ab-report -------------------------------------------------------------------------------

@task("collect")
def collect(workdir: str, redis_url: str, prefix: str, experiment: str, out: str) -> dict:
    from pipelines.abtest import collect as _collect
    timeline_path = Path(workdir) / "rollout.json"
    timeline = json.loads(timeline_path.read_text()) if timeline_path.is_file() else {}
    redis_url = redis_url or timeline.get("redis_url", "")
    prefix = prefix or timeline.get("prefix", "")
    experiment = experiment or timeline.get("experiment", "")
    if not (redis_url and prefix and experiment):
        raise StepFailed("no rollout.json in the work dir: pass redis_url, prefix and experiment")
    require_redis(redis_url)
    return _collect(redis_url, prefix, experiment, timeline, Path(out))


@task("analyse")
def analyse(workdir: str, dataset: str, alpha: float, out: str) -> dict:
    from pipelines.abtest import analyse as _analyse
    return _analyse(Path(dataset), alpha, Path(out))


@task("report")
def report(workdir: str, analysis: str, uri: str, md_out: str, html_out: str) -> dict:
    from pipelines.abtest import render
    uri = mlflow_uri(workdir, uri)
    require_mlflow(uri)
    doc = json.loads((Path(analysis) / "analysis.json").read_text())
    files = render(doc, Path(analysis), Path(md_out), Path(html_out))
    run_id = _log_run(uri, "ab-report", {"experiment": doc["experiment"], "test": doc["test"]},
                      {f"{v}_{k}": s[k] for v, s in doc["variants"].items()
                       for k in ("units", "outcome_mean", "latency_p99_ms") if s.get(k) is not None}
                      | {"srm_p_value": doc["srm"]["p_value"] or 1.0, "p_value": doc.get("p_value") or 1.0},
                      files)
    return {"mlflow_run": run_id, "files": [f.name for f in files]}
