"""The five pipelines. Defaults are the in-cluster ones (a volume at /data/infergate, the
services' cluster names); ``python -m pipelines run`` overrides them for a local run."""

# (no `from __future__ import annotations`: kfp reads the annotations as types)

from kfp import dsl

from pipelines import components as c

WORKDIR = "/data/infergate"
REDIS = "redis://redis:6379/0"
GATEWAY = "http://infergate-gateway:8080"


@dsl.pipeline(name="features", description="Generate or ingest the source table, validate it (schema, ranges, "
              "null rates, drift), feast apply + materialize, check online against offline")
def features(workdir: str = WORKDIR, source: str = "", rows: int = 10000, seed: int = 7,
             max_null_rate: float = 0.05, max_psi: float = 0.25, online: str = "sqlite",
             redis_url: str = REDIS, project: str = "infergate", sample: int = 200):
    src = c.load_source(workdir=workdir, source=source, rows=rows, seed=seed)
    val = c.validate(workdir=workdir, table=src.outputs["table"], max_null_rate=max_null_rate, max_psi=max_psi)
    app = c.apply_materialize(workdir=workdir, table=src.outputs["table"], online=online, redis_url=redis_url,
                              project=project).after(val)
    c.check_online(workdir=workdir, repo=app.output, table=src.outputs["table"], sample=sample, seed=seed)


@dsl.pipeline(name="train", description="Point-in-time training set from Feast, scikit-learn classifier, "
              "holdout vs the champion, MLflow logging, register as challenger when it beats it by the margin")
def train(workdir: str = WORKDIR, mlflow_uri: str = "", model_name: str = "clf", margin: float = 0.05,
          seed: int = 11, hidden: int = 32, max_iter: int = 80, label_delay_s: int = 3600):
    ts = c.training_set(workdir=workdir, label_delay_s=label_delay_s, seed=seed)
    tr = c.train(workdir=workdir, dataset=ts.outputs["dataset"], seed=seed, hidden=hidden, max_iter=max_iter)
    c.evaluate_register(workdir=workdir, model=tr.outputs["model"], holdout=tr.outputs["holdout"],
                        mlflow_uri=mlflow_uri, model_name=model_name, margin=margin)


@dsl.pipeline(name="synthetic", description="WGAN-GP on the accepted feature table, quality report, "
              "publish the generator and a synthetic table only when the report passes the gate")
def synthetic(workdir: str = WORKDIR, mlflow_uri: str = "", steps: int = 1500, hidden: int = 256, seed: int = 0,
              holdout: int = 2000, max_seconds: float = 0.0, rows: int = 10000, require_gate: bool = False):
    tbl = c.feature_table(workdir=workdir)
    gan = c.train_gan(workdir=workdir, table=tbl.outputs["table"], steps=steps, seed=seed, holdout=holdout,
                      max_seconds=max_seconds, hidden=hidden)
    c.gate_publish(workdir=workdir, generator=gan.outputs["generator"], mlflow_uri=mlflow_uri, rows=rows,
                   seed=seed, require_gate=require_gate)


@dsl.pipeline(name="rollout", description="Deploy the challenger, ramp it under the guardrails with a simulated "
              "client reporting outcomes, promote or roll back")
def rollout(workdir: str = WORKDIR, mlflow_uri: str = "", gateway: str = GATEWAY, redis_url: str = REDIS,
            prefix: str = "infergate:", model_name: str = "clf", experiment: str = "clf-demo", variant: str = "b",
            plan: str = "50,100", hold_s: float = 5.0, rps: float = 40.0):
    pre = c.preflight(workdir=workdir, mlflow_uri=mlflow_uri, gateway=gateway, redis_url=redis_url,
                      model_name=model_name)
    dep = c.deploy(workdir=workdir, mlflow_uri=mlflow_uri, gateway=gateway, model_name=model_name,
                   experiment=experiment, variant=variant, plan=plan).after(pre)
    rmp = c.ramp(workdir=workdir, mlflow_uri=mlflow_uri, gateway=gateway, redis_url=redis_url, prefix=prefix,
                 model_name=model_name, experiment=experiment, variant=variant, plan=plan, hold_s=hold_s,
                 rps=rps).after(dep)
    c.promote_or_rollback(workdir=workdir, mlflow_uri=mlflow_uri, gateway=gateway, model_name=model_name,
                          experiment=experiment, variant=variant).after(rmp)


@dsl.pipeline(name="ab-report", description="Prediction log joined with outcomes: SRM, per-variant metric with "
              "confidence intervals and the test used, latency; Markdown/HTML report logged to MLflow")
def ab_report(workdir: str = WORKDIR, mlflow_uri: str = "", redis_url: str = "", prefix: str = "",
              experiment: str = "", alpha: float = 0.001):
    col = c.collect(workdir=workdir, redis_url=redis_url, prefix=prefix, experiment=experiment)
    an = c.analyse(workdir=workdir, joined=col.outputs["joined"], alpha=alpha)
    c.report(workdir=workdir, analysis=an.outputs["analysis"], mlflow_uri=mlflow_uri)


PIPELINES = {"features": features, "train": train, "synthetic": synthetic, "rollout": rollout,
             "ab-report": ab_report}
ORDER = tuple(PIPELINES)
