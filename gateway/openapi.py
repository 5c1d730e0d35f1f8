"""The gateway's OpenAPI 3.0 document (served at /openapi.json).

Pure data, built once per process (`openapi_document()` is cached: treat the dict as
read-only). Every route is listed with every status it can answer; errors share one
schema, `{"error": <one of httpcommon.errors.CODES>, "message": <text>}`, and every 429
and 503 error carries `Retry-After`.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from httpcommon.errors import CODES

__all__ = ["openapi_document"]

_ERR = "#/components/responses/"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _ERR + name}


def _json_response(description: str, schema: dict[str, Any], headers: dict | None = None) -> dict:
    out: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


_ERROR = {"$ref": "#/components/schemas/Error"}
_RETRY_AFTER = {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}}  # always sent with 429/503

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "message"],
        "properties": {
            "error": {"type": "string", "enum": list(CODES),
                      "description": "stable machine-readable code (httpcommon/errors.py: CODES)"},
            "message": {"type": "string"},
        },
    },
    "UnitId": {
        "description": "the randomisation unit; strings of 1-256 characters or integers",
        "oneOf": [{"type": "string", "minLength": 1, "maxLength": 256}, {"type": "integer"}],
    },
    "Entity": {
        "type": "object", "minProperties": 1,
        "description": "join keys of the online-feature entity, e.g. {\"user_id\": 42}",
        "additionalProperties": {"oneOf": [{"type": "integer"}, {"type": "string"}]},
    },
    "V1InferRequest": {
        "type": "object",
        "required": ["model", "unit_id", "inputs"],
        "properties": {
            "model": {"type": "string", "minLength": 1, "example": "clf"},
            "unit_id": {"$ref": "#/components/schemas/UnitId"},
            "entity": {"$ref": "#/components/schemas/Entity"},
            "inputs": {"oneOf": [
                {"type": "array", "items": {"type": "number"},
                 "description": "a one-input model: the request-side columns with an entity, else the full "
                                "input vector"},
                {"type": "object", "minProperties": 1,
                 "description": "any model: named inputs, one instance each (no batch dimension; a model with "
                                "max_batch_size 0 takes its tensors whole), nested lists of the input's "
                                "datatype (BYTES as strings, BOOL as booleans)",
                 "additionalProperties": {"oneOf": [{"type": "array"}, {"type": "number"}, {"type": "string"},
                                                    {"type": "boolean"}]},
                 "example": {"INPUT_IDS": [101, 7592, 102], "ATTENTION_MASK": [1, 1, 1]}}]},
            "timings": {"type": "boolean", "default": False},
        },
    },
    "V1InferResponse": {
        "type": "object",
        "required": ["model", "experiment", "variant", "model_version", "outputs"],
        "properties": {
            "model": {"type": "string"},
            "experiment": {"type": "string"},
            "variant": {"type": "string"},
            "model_version": {"type": "string"},
            "outputs": {"type": "object", "description": "every output by name, one instance each (nested lists; "
                                                        "BYTES as strings)",
                        "additionalProperties": {"oneOf": [{"type": "array"}, {"type": "number"},
                                                           {"type": "string"}, {"type": "boolean"}]}},
            "features": {"type": "object", "properties": {
                "missing_entity": {"type": "boolean"}, "null_count": {"type": "integer"},
                "defaulted": {"type": "boolean"}}},
            "timings_ms": {"type": "object", "additionalProperties": {"type": "number"}},
        },
    },
    "V2Tensor": {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string", "example": "INPUT"},
            "datatype": {"type": "string", "example": "FP32",
                         "enum": ["BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64",
                                  "FP16", "FP32", "FP64", "BYTES"]},
            "shape": {"type": "array", "items": {"type": "integer"}, "example": [1, 20]},
            "data": {"type": "array", "description": "flat or nested values, row-major: numbers, booleans (BOOL) "
                                                     "or strings (BYTES)",
                     "items": {"oneOf": [{"type": "number"}, {"type": "boolean"}, {"type": "string"},
                                         {"type": "array"}]}},
            "parameters": {"type": "object", "properties": {
                "binary_data_size": {"type": "integer", "minimum": 0}}},
        },
    },
    "V2InferRequest": {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {"type": "object", "description": "unit_id, entity join keys, binary_data_output",
                           "properties": {"unit_id": {"$ref": "#/components/schemas/UnitId"},
                                          "binary_data_output": {"type": "boolean"}}},
            "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/V2Tensor"}},
            "outputs": {"type": "array", "description": "the outputs to answer with, in this order (default: all); "
                                                       "each in binary when its binary_data is true (default: the "
                                                       "request's binary_data_output)",
                        "items": {"type": "object", "required": ["name"], "properties": {
                            "name": {"type": "string"},
                            "parameters": {"type": "object", "properties": {"binary_data": {"type": "boolean"}}}}}},
        },
    },
    "V2InferResponse": {
        "type": "object",
        "required": ["model_name", "model_version", "outputs"],
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "parameters": {"type": "object"},
            "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/V2Tensor"}},
        },
    },
    "ServerMetadata": {
        "type": "object", "required": ["name", "version", "extensions"],
        "properties": {"name": {"type": "string"}, "version": {"type": "string"},
                       "extensions": {"type": "array", "items": {"type": "string"}}},
    },
    "TensorMetadata": {
        "type": "object", "required": ["name", "datatype", "shape"],
        "properties": {"name": {"type": "string"}, "datatype": {"type": "string"},
                       "shape": {"type": "array", "items": {"type": "integer"}}},
    },
    "ModelMetadata": {
        "type": "object", "required": ["name", "platform", "versions", "inputs", "outputs"],
        "properties": {
            "name": {"type": "string"}, "platform": {"type": "string"},
            "versions": {"type": "array", "items": {"type": "string"}},
            "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/TensorMetadata"}},
            "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/TensorMetadata"}},
            "parameters": {"type": "object"},
        },
    },
    "RepositoryIndex": {
        "type": "array", "description": "Triton's repository index, with the gateway's route of each model",
        "items": {"type": "object", "required": ["name", "state"], "properties": {
            "name": {"type": "string"}, "version": {"type": "string"}, "state": {"type": "string"},
            "reason": {"type": "string"},
            "route": {"type": "string", "nullable": True,
                      "description": "the experiment that routes it, `default` (its latest version, for a model "
                                     "no experiment names), or null (only an experiment's target)"}}},
    },
    "Outcome": {"type": "object", "additionalProperties": False,
                "description": "request_id or unit_id (or both), and exactly one of label and value",
                "properties": {"request_id": {"type": "string", "minLength": 1, "maxLength": 256},
                               "unit_id": {"oneOf": [{"type": "string", "minLength": 1, "maxLength": 256},
                                                     {"type": "integer"}]},
                               "label": {"type": "integer"}, "value": {"type": "number"},
                               "experiment": {"type": "string", "minLength": 1, "maxLength": 256}}},
    "Live": {"type": "object", "required": ["live"], "properties": {"live": {"type": "boolean"}}},
    "Ready": {"type": "object", "required": ["ready"], "properties": {"ready": {"type": "boolean"}}},
    "ModelReady": {"type": "object", "required": ["name", "ready"],
                   "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}}},
    "Variant": {
        "type": "object", "required": ["name", "weight", "target"],
        "properties": {
            "name": {"type": "string"}, "weight": {"type": "number", "minimum": 0, "maximum": 100},
            "target": {"type": "object", "required": ["model"], "properties": {
                "model": {"type": "string"}, "version": {"type": "string"}}},
        },
    },
    "ExperimentConfig": {
        "type": "object",
        "required": ["model", "variants"],
        "description": "weights are percent (multiples of 0.01) adding up to 100; see router/config.py",
        "properties": {
            "name": {"type": "string"}, "model": {"type": "string"}, "salt": {"type": "string"},
            "status": {"type": "string", "enum": ["running", "paused", "stopped"]},
            "control": {"type": "string"}, "bucket_version": {"type": "integer"},
            "variants": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/Variant"}},
            "shadow": {"type": "object"}, "allowlist": {"type": "object"}, "guardrails": {"type": "object"},
        },
    },
    "ExperimentState": {
        "type": "object",
        "required": ["name", "version", "source", "config"],
        "properties": {
            "name": {"type": "string"}, "version": {"type": "integer"},
            "source": {"type": "string", "enum": ["redis", "initial"]},
            "updated_at": {"type": "number", "nullable": True},
            "token_id": {"type": "string", "nullable": True},
            "config": {"type": "object"}, "allocation": {"type": "object"}, "exposures": {"type": "object"},
            "srm": {"type": "object", "nullable": True}, "redis_connected": {"type": "boolean"},
            "reason": {"type": "string", "nullable": True,
                       "description": "x-change-reason of the stored change"},
            "units": {"type": "object", "description": "distinct units per variant (SRM is run on these)"},
            "srm_requests": {"type": "object", "description": "the SRM check on request counts, for comparison"},
            "guardrails": {"$ref": "#/components/schemas/GuardrailState"},
            "shadow": {"type": "object", "nullable": True,
                       "description": "{variant, share, calls, latency_ms_mean, diff_mean, diffs}: this "
                                      "process's shadow calls (null without a shadow variant)"},
        },
    },
    "MovePreview": {
        "type": "object",
        "required": ["experiment", "version", "buckets_moved", "share_moved", "units_seen",
                     "units_moved_estimate", "transitions", "confirm", "resets_counts"],
        "properties": {
            "experiment": {"type": "string"}, "version": {"type": "integer"},
            "buckets_moved": {"type": "integer", "description": "of 10,000 buckets, as the router allocates"},
            "share_moved": {"type": "number"}, "units_seen": {"type": "integer"},
            "units_moved_estimate": {"type": "integer", "description": "share_moved x distinct units seen"},
            "transitions": {"type": "array", "items": {"type": "object", "properties": {
                "from": {"type": "string"}, "to": {"type": "string"}, "buckets": {"type": "integer"}}}},
            "confirm": {"type": "boolean", "description": "more than 10 % of units move"},
            "resets_counts": {"type": "boolean", "description": "a new allocation: SRM counts start afresh"},
        },
    },
    "VariantSeries": {
        "type": "object",
        "required": ["experiment", "interval_s", "seconds", "process", "points", "summary"],
        "properties": {
            "experiment": {"type": "string"}, "interval_s": {"type": "number"}, "seconds": {"type": "integer"},
            "process": {"type": "integer", "description": "the gateway process that answered (its own figures)"},
            "points": {"type": "array", "items": {"type": "object", "properties": {
                "t": {"type": "number"},
                "variants": {"type": "object", "additionalProperties": {"type": "object", "properties": {
                    "rps": {"type": "number"}, "p50_ms": {"type": "number", "nullable": True},
                    "p99_ms": {"type": "number", "nullable": True},
                    "errors": {"type": "object", "additionalProperties": {"type": "integer"}}}}}}}},
            "summary": {"type": "object", "properties": {
                "window_s": {"type": "number"},
                "variants": {"type": "object", "additionalProperties": {"type": "object"}}}},
        },
    },
    "GuardrailState": {
        "type": "object",
        "required": ["configured", "state", "window_s", "min_requests", "variants", "last_rollback"],
        "properties": {
            "configured": {"type": "object", "nullable": True},
            "state": {"type": "string", "enum": ["off", "insufficient_data", "ok", "breached", "rolled_back"]},
            "window_s": {"type": "number"}, "min_requests": {"type": "integer"},
            "variants": {"type": "object", "additionalProperties": {"type": "object", "properties": {
                "requests": {"type": "integer"}, "errors": {"type": "integer"},
                "error_rate": {"type": "number", "nullable": True},
                "p99_ms": {"type": "number", "nullable": True}}}},
            "last_rollback": {"type": "object", "nullable": True,
                              "description": "{at, variant, reason, figures, version} of the last guardrail rollback"},
        },
    },
}

_RESPONSES: dict[str, Any] = {
    "BadRequest": _json_response("invalid JSON, or a field missing or of the wrong type/shape "
                                 "(the message names it)", _ERROR),
    "Unauthorized": _json_response("no valid bearer token", _ERROR),
    "NotFound": _json_response("no such model, experiment or route", _ERROR),
    "MethodNotAllowed": _json_response("the path exists but not for this method (see the Allow header)",
                                       _ERROR, {"Allow": {"schema": {"type": "string"}}}),
    "Conflict": _json_response("model_conflict: another experiment already routes this model; "
                               "version_conflict: the stored version is not the If-Match one "
                               "(current_version names it)", _ERROR),
    "PayloadTooLarge": _json_response("the body (or its decompressed form) exceeds the limit", _ERROR),
    "UnsupportedMediaType": _json_response("a content type or content encoding the route does not take", _ERROR),
    "Overloaded": _json_response("shed on purpose: too many requests in flight or the queue is full; "
                                 "retry after Retry-After seconds", _ERROR,
                                 _RETRY_AFTER),
    "Unavailable": _json_response("Triton, the feature store or the deadline failed "
                                  "(model_unavailable, features_unavailable, deadline_exceeded, "
                                  "shutting_down, unavailable)", _ERROR, _RETRY_AFTER),
    "StoreUnavailable": _json_response("the experiments store (Redis) did not answer", _ERROR, _RETRY_AFTER),
}

_HEADERS = {
    "RetryAfter": {"description": "seconds to wait before retrying", "required": True,
                   "schema": {"type": "integer", "minimum": 0}},
}

_PARAMS = {
    "Model": {"name": "model", "in": "path", "required": True, "schema": {"type": "string"},
              "example": "clf"},
    "Experiment": {"name": "name", "in": "path", "required": True, "schema": {"type": "string"},
                   "example": "clf-demo"},
    "Timeout": {"name": "x-request-timeout-ms", "in": "header", "required": False,
                "description": "shortens the request's deadline (default 1000 ms, capped at the maximum)",
                "schema": {"type": "integer", "minimum": 1}},
    "UnitHeader": {"name": "x-unit-id", "in": "header", "required": False,
                   "description": "the unit id when the body's parameters carry none",
                   "schema": {"type": "string", "minLength": 1, "maxLength": 256}},
    "Override": {"name": "x-variant-override", "in": "header", "required": False,
                 "description": "force a variant; honoured only with an admin bearer token",
                 "schema": {"type": "string"}},
    "ChangeReason": {"name": "x-change-reason", "in": "header", "required": False,
                     "description": "why: kept in the history entry as `reason` (1 to 1000 characters)",
                     "schema": {"type": "string", "minLength": 1, "maxLength": 1000, "pattern": "\\S"}},
    "IfMatch": {"name": "if-match", "in": "header", "required": False,
                "description": "store only if the stored version is this one (0: never stored); "
                               "else 409 version_conflict",
                "schema": {"type": "string", "pattern": "^([0-9]+|\"[0-9]+\")$"}},
    "HeaderLength": {"name": "inference-header-content-length", "in": "header", "required": False,
                     "description": "Triton binary extension: length of the JSON header before raw tensors",
                     "schema": {"type": "integer", "minimum": 0}},
}


def _p(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/parameters/{name}"}


def _errors(*codes: int) -> dict[str, Any]:
    names = {400: "BadRequest", 401: "Unauthorized", 404: "NotFound", 405: "MethodNotAllowed",
             409: "Conflict", 413: "PayloadTooLarge", 415: "UnsupportedMediaType", 429: "Overloaded",
             503: "Unavailable"}
    return {str(c): _ref(names[c]) for c in codes}


_INFER_ERRORS = (400, 404, 405, 413, 415, 429, 503)
_ADMIN_SECURITY: list[dict[str, list[str]]] = [{"bearer": []}]


def _paths() -> dict[str, Any]:
    return {
        "/v1/infer": {"post": {
            "operationId": "inferV1", "tags": ["inference"],
            "summary": "Route one request to a variant, join online features, infer",
            "parameters": [_p("Timeout"), _p("Override")],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/V1InferRequest"},
                "example": {"model": "clf", "unit_id": "user-42", "inputs": [0.25] * 20}}}},
            "responses": {"200": _json_response("the model's outputs",
                                                {"$ref": "#/components/schemas/V1InferResponse"}),
                          **_errors(*_INFER_ERRORS)},
        }},
        "/v2/models/{model}/infer": {"post": {
            "operationId": "inferV2", "tags": ["inference"],
            "summary": "KServe v2 / Open Inference Protocol infer (JSON or Triton's binary extension)",
            "parameters": [_p("Model"), _p("Timeout"), _p("UnitHeader"), _p("Override"), _p("HeaderLength")],
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/V2InferRequest"},
                                     "example": {"id": "r1", "parameters": {"unit_id": "user-42"}, "inputs": [
                                         {"name": "INPUT", "datatype": "FP32", "shape": [1, 20],
                                          "data": [0.25] * 20}]}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"},
                                             "description": "a JSON header of inference-header-content-length "
                                                            "bytes, then the raw tensors"}}},
            "responses": {"200": {"description": "the outputs, in JSON or binary as asked", "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/V2InferResponse"}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                "headers": {"inference-header-content-length": {
                    "description": "present on a binary answer", "schema": {"type": "integer"}}}},
                **_errors(*_INFER_ERRORS)},
        }},
        "/v1/outcomes": {"post": {
            "operationId": "postOutcomes", "tags": ["inference"],
            "summary": "Report outcomes of earlier predictions (joined with the prediction log by pipelines' ab-report)",
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"oneOf": [{"$ref": "#/components/schemas/Outcome"}, {
                    "type": "object", "required": ["outcomes"], "additionalProperties": False,
                    "properties": {"outcomes": {"type": "array", "minItems": 1, "maxItems": 1000,
                                                "items": {"$ref": "#/components/schemas/Outcome"}}}}]},
                "example": {"outcomes": [{"request_id": "r1", "value": 1.0}, {"unit_id": "user-42", "label": 2}]}}}},
            "responses": {"202": _json_response("stored in the outcomes stream", {
                "type": "object", "required": ["accepted"], "properties": {"accepted": {"type": "integer"}}}),
                **_errors(400, 405, 413, 415, 503)},
        }},
        "/v2/health/live": {"get": {
            "operationId": "serverLive", "tags": ["health"],
            "responses": {"200": _json_response("the process is up", {"$ref": "#/components/schemas/Live"}),
                          **_errors(405)}}},
        "/v2/health/ready": {"get": {
            "operationId": "serverReady", "tags": ["health"],
            "responses": {"200": _json_response("ready to serve", {"$ref": "#/components/schemas/Ready"}),
                          "503": _json_response("not ready (starting, draining, or no Triton ready)",
                                                {"$ref": "#/components/schemas/Ready"}),
                          **_errors(405)}}},
        "/v2": {"get": {
            "operationId": "serverMetadata", "tags": ["metadata"],
            "responses": {"200": _json_response("server metadata",
                                                {"$ref": "#/components/schemas/ServerMetadata"}),
                          **_errors(405)}}},
        "/v2/models/{model}": {"get": {
            "operationId": "modelMetadata", "tags": ["metadata"], "parameters": [_p("Model")],
            "responses": {"200": _json_response("the public model's tensors and versions",
                                                {"$ref": "#/components/schemas/ModelMetadata"}),
                          **_errors(404, 405)}}},
        "/v2/repository/index": {"post": {
            "operationId": "repositoryIndex", "tags": ["metadata"],
            "responses": {"200": _json_response("every model Triton holds and its route here",
                                                {"$ref": "#/components/schemas/RepositoryIndex"}),
                          **_errors(405, 503)}}},
        "/v2/models/{model}/ready": {"get": {
            "operationId": "modelReady", "tags": ["health"], "parameters": [_p("Model")],
            "responses": {"200": _json_response("every target of the model is ready",
                                                {"$ref": "#/components/schemas/ModelReady"}),
                          "503": _json_response("a target is not ready",
                                                {"$ref": "#/components/schemas/ModelReady"}),
                          **_errors(404, 405)}}},
        "/metrics": {"get": {
            "operationId": "metrics", "tags": ["operations"],
            "responses": {"200": {"description": "Prometheus text exposition",
                                  "content": {"text/plain": {"schema": {"type": "string"}}}},
                          **_errors(405)}}},
        "/openapi.json": {"get": {
            "operationId": "openapi", "tags": ["operations"],
            "responses": {"200": _json_response("this document", {"type": "object"}), **_errors(405)}}},
        "/admin/experiments": {"get": {
            "operationId": "listExperiments", "tags": ["admin"], "security": _ADMIN_SECURITY,
            "responses": {"200": _json_response("live state of every experiment", {
                "type": "object", "required": ["experiments"],
                "properties": {"experiments": {"type": "array",
                                               "items": {"$ref": "#/components/schemas/ExperimentState"}}}}),
                          "503": _ref("StoreUnavailable"), **_errors(401, 405)}}},
        "/admin/experiments/{name}": {
            "get": {
                "operationId": "getExperiment", "tags": ["admin"], "security": _ADMIN_SECURITY,
                "parameters": [_p("Experiment")],
                "responses": {"200": _json_response("live state of one experiment",
                                                    {"$ref": "#/components/schemas/ExperimentState"}),
                              "503": _ref("StoreUnavailable"), **_errors(401, 404, 405)}},
            "put": {
                "operationId": "putExperiment", "tags": ["admin"], "security": _ADMIN_SECURITY,
                "parameters": [_p("Experiment"), _p("ChangeReason"), _p("IfMatch")],
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/ExperimentConfig"}}}},
                "responses": {"200": _json_response("stored, applied and announced to every replica", {
                    "type": "object", "required": ["experiment", "version"],
                    "properties": {"experiment": {"type": "string"}, "version": {"type": "integer"},
                                   "state": {"$ref": "#/components/schemas/ExperimentState"}}}),
                              "503": _ref("StoreUnavailable"), **_errors(400, 401, 405, 409, 413)}},
        },
        "/admin/experiments/{name}/history": {"get": {
            "operationId": "experimentHistory", "tags": ["admin"], "security": _ADMIN_SECURITY,
            "parameters": [_p("Experiment"), {"name": "limit", "in": "query", "required": False,
                                              "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}],
            "responses": {"200": _json_response("stored changes, newest first", {
                "type": "object", "required": ["experiment", "history"],
                "properties": {"experiment": {"type": "string"},
                               "history": {"type": "array", "items": {"type": "object"}}}}),
                          "503": _ref("StoreUnavailable"), **_errors(400, 401, 405)}}},
        "/admin/experiments/{name}/preview": {"post": {
            "operationId": "previewExperiment", "tags": ["admin"], "security": _ADMIN_SECURITY,
            "description": "Dry run of a PUT: the same validation, nothing stored; the buckets (and "
                           "estimated units) the change would move, computed as the router allocates.",
            "parameters": [_p("Experiment")],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/ExperimentConfig"}}}},
            "responses": {"200": _json_response("what the change would move",
                                                {"$ref": "#/components/schemas/MovePreview"}),
                          "503": _ref("Unavailable"), **_errors(400, 401, 405, 409, 413)}}},
        "/admin/experiments/{name}/series": {"get": {
            "operationId": "experimentSeries", "tags": ["admin"], "security": _ADMIN_SECURITY,
            "description": "Per-variant req/s, p50/p99 and errors by reason, one point a second, from a "
                           "ring buffer this gateway process samples each second (300 s kept).",
            "parameters": [_p("Experiment"),
                           {"name": "seconds", "in": "query", "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 300}},
                           {"name": "window", "in": "query", "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 300}}],
            "responses": {"200": _json_response("the series and a summary over the last `window` seconds",
                                                {"$ref": "#/components/schemas/VariantSeries"}),
                          "503": _ref("Unavailable"), **_errors(400, 401, 404, 405)}}},
        **{path: {"get": {
            "operationId": op, "tags": ["console"],
            "description": "The experiments console (static; its data comes from the admin API with "
                           "the token typed into it)",
            "responses": {"200": {"description": "the file", "content": {ctype: {"schema": {"type": "string"}}}},
                          **_errors(405)}}}
           for path, op, ctype in (("/console", "console", "text/html"),
                                   ("/console/app.js", "consoleScript", "text/javascript"),
                                   ("/console/app.css", "consoleStyle", "text/css"),
                                   ("/console/favicon.svg", "consoleIcon", "image/svg+xml"))},
        # For registry/: where to load model versions, and when a replaced one is drained.
        "/admin/triton": {"get": {
            "operationId": "tritonReplicas", "tags": ["admin"], "security": _ADMIN_SECURITY,
            "responses": {"200": _json_response("the Triton replicas this gateway sends to", {
                "type": "object", "required": ["replicas", "model_repository"],
                "properties": {"replicas": {"type": "array", "items": {
                    "type": "object", "required": ["url", "up"],
                    "properties": {"url": {"type": "string"}, "up": {"type": "boolean"}}}},
                    "model_repository": {"type": "string", "nullable": True}}}),
                          "503": _ref("Unavailable"), **_errors(401, 405)}}},
        "/admin/targets": {"get": {
            "operationId": "targets", "tags": ["admin"], "security": _ADMIN_SECURITY,
            "responses": {"200": _json_response("every model:version micro-batcher held", {
                "type": "object", "required": ["targets"],
                "properties": {"targets": {"type": "array", "items": {
                    "type": "object", "required": ["model", "version", "state", "queued_rows", "in_flight"],
                    "properties": {"model": {"type": "string"}, "version": {"type": "string"},
                                   "state": {"type": "string", "enum": ["serving", "retiring", "draining"]},
                                   "queued_rows": {"type": "integer"}, "in_flight": {"type": "integer"}}}}}}),
                          "503": _ref("Unavailable"), **_errors(401, 405)}}},
    }


@cache
def openapi_document() -> dict[str, Any]:
    """The whole document; built on first use and shared afterwards (do not mutate it)."""
    return {
        "openapi": "3.0.3",
        "info": {"title": "infergate", "version": "0.1.0",
                 "description": "Inference gateway and A/B router in front of NVIDIA Triton. Errors are "
                                "JSON {\"error\": code, \"message\": text}; every 429 and 503 error "
                                "carries Retry-After."},
        "servers": [{"url": "/"}],
        "tags": [{"name": n} for n in ("inference", "health", "metadata", "operations", "admin", "console")],
        "paths": _paths(),
        "components": {"schemas": _SCHEMAS, "responses": _RESPONSES, "headers": _HEADERS,
                       "parameters": _PARAMS,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
