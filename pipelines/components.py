"""Kubeflow lightweight Python components: each one imports the project and calls its step
(pipelines/steps.py). They run in the project's image on Kubeflow (``IMAGE``, which has the
package and kfp installed) and in this venv under ``kfp.local``. A component returns its step's
summary as JSON; artifacts carry tables, models and reports between the steps of a pipeline."""

# (no `from __future__ import annotations`: kfp reads the annotations as types)

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Model, Output

IMAGE = "infergate/pipelines-python:0.1.0"  # the gateway image + this extra ("python": kfp.local does not warn)


def component(fn):
    return dsl.component(base_image=IMAGE, install_kfp_package=False)(fn)


# -- features -------------------------------------------------------------------------------

@component
def load_source(workdir: str, source: str, rows: int, seed: int, table: Output[Dataset]) -> str:
    import json

    from pipelines.steps import load_source as step
    return json.dumps(step(workdir, source, rows, seed, table.path))


@component
def validate(workdir: str, table: Input[Dataset], max_null_rate: float, max_psi: float,
             report: Output[Artifact]) -> str:
    import json

    from pipelines.steps import validate_table as step
    rep = step(workdir, table.path, report.path, max_null_rate, max_psi)
    return json.dumps({"passed": rep["passed"], "rows": rep["rows"]})


@component
def apply_materialize(workdir: str, table: Input[Dataset], online: str, redis_url: str, project: str) -> str:
    from pipelines.steps import apply_materialize as step
    return step(workdir, table.path, online, redis_url, project)


@component
def check_online(workdir: str, repo: str, table: Input[Dataset], sample: int, seed: int) -> str:
    import json

    from pipelines.steps import check_online as step
    return json.dumps(step(workdir, repo, table.path, sample, seed))


# -- train ----------------------------------------------------------------------------------

@component
def training_set(workdir: str, label_delay_s: int, seed: int, dataset: Output[Dataset]) -> str:
    import json

    from pipelines.steps import training_set as step
    return json.dumps(step(workdir, dataset.path, label_delay_s, seed))


@component
def train(workdir: str, dataset: Input[Dataset], seed: int, hidden: int, max_iter: int,
          model: Output[Model], holdout: Output[Dataset]) -> str:
    import json

    from pipelines.steps import train_model as step
    return json.dumps(step(workdir, dataset.path, model.path, holdout.path, seed, hidden, max_iter))


@component
def evaluate_register(workdir: str, model: Input[Model], holdout: Input[Dataset], mlflow_uri: str,
                      model_name: str, margin: float, report: Output[Artifact]) -> str:
    import json

    from pipelines.steps import evaluate_register as step
    return json.dumps(step(workdir, model.path, holdout.path, mlflow_uri, model_name, margin, report.path))


# -- synthetic ------------------------------------------------------------------------------

@component
def feature_table(workdir: str, table: Output[Dataset]) -> str:
    import json

    from pipelines.steps import feature_table as step
    return json.dumps(step(workdir, table.path))


@component
def train_gan(workdir: str, table: Input[Dataset], steps: int, seed: int, holdout: int, max_seconds: float,
              hidden: int, generator: Output[Model]) -> str:
    import json

    from pipelines.steps import train_gan as step
    return json.dumps(step(workdir, table.path, generator.path, steps, seed, holdout, max_seconds, hidden))


@component
def gate_publish(workdir: str, generator: Input[Model], mlflow_uri: str, rows: int, seed: int,
                 require_gate: bool, synthetic_table: Output[Dataset]) -> str:
    import json

    from pipelines.steps import gate_publish as step
    return json.dumps(step(workdir, generator.path, mlflow_uri, rows, seed, synthetic_table.path, require_gate))


# -- rollout --------------------------------------------------------------------------------

@component
def preflight(workdir: str, mlflow_uri: str, gateway: str, redis_url: str, model_name: str) -> str:
    import json

    from pipelines.steps import preflight as step
    return json.dumps(step(workdir, mlflow_uri, gateway, redis_url, model_name))


@component
def deploy(workdir: str, mlflow_uri: str, gateway: str, model_name: str, experiment: str, variant: str,
           plan: str) -> str:
    import json

    from pipelines.steps import deploy as step
    from registry.rollout import parse_plan
    return json.dumps(step(workdir, mlflow_uri, gateway, model_name, experiment, variant, parse_plan(plan)[0]))


@component
def ramp(workdir: str, mlflow_uri: str, gateway: str, redis_url: str, prefix: str, model_name: str,
         experiment: str, variant: str, plan: str, hold_s: float, rps: float) -> str:
    import json

    from pipelines.steps import ramp as step
    out = step(workdir, mlflow_uri, gateway, redis_url, prefix, model_name, experiment, variant, plan, hold_s, rps)
    return json.dumps({"verdict": out["verdict"], "steps": len(out["steps"]), "traffic": out["traffic"]})


@component
def promote_or_rollback(workdir: str, mlflow_uri: str, gateway: str, model_name: str, experiment: str,
                        variant: str) -> str:
    import json

    from pipelines.steps import finish as step
    return json.dumps(step(workdir, mlflow_uri, gateway, model_name, experiment, variant))


# -- ab-report ------------------------------------------------------------------------------

@component
def collect(workdir: str, redis_url: str, prefix: str, experiment: str, joined: Output[Dataset]) -> str:
    import json

    from pipelines.steps import collect as step
    return json.dumps(step(workdir, redis_url, prefix, experiment, joined.path))


@component
def analyse(workdir: str, joined: Input[Dataset], alpha: float, analysis: Output[Artifact]) -> str:
    import json

    from pipelines.steps import analyse as step
    return json.dumps(step(workdir, joined.path, alpha, analysis.path))


@component
def report(workdir: str, analysis: Input[Artifact], mlflow_uri: str, markdown: Output[Markdown],
           html: Output[HTML]) -> str:
    import json

    from pipelines.steps import report as step
    return json.dumps(step(workdir, analysis.path, mlflow_uri, markdown.path, html.path))
