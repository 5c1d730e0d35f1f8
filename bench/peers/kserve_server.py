"""KServe's Python model server for the demo model (runs in KServe's venv, from its model dir).

    python kserve_server.py --http_port P --weights weights.npz [kserve ModelServer flags]

Best settings measured on this kind of machine (shared/FACTS.md): one uvicorn worker on uvloop,
no gRPC server, no per-request latency log line and no access log (~33 % of its CPU).
"""

import logging
import sys

import kserve
from kserve import InferOutput, InferRequest, InferResponse, ModelServer, model_server
from kserve.utils.utils import generate_uuid

import clf_forward


class Clf(kserve.Model):
    def __init__(self, name: str, weights: str) -> None:
        super().__init__(name)
        self._path = weights

    def load(self) -> bool:
        self._weights = clf_forward.load(self._path)
        self.ready = True
        return self.ready

    async def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        x = payload.inputs[0].as_numpy()
        probs = clf_forward.forward(self._weights, x)
        out = InferOutput(name="PROBS", shape=list(probs.shape), datatype="FP32", data=probs)
        # KServe requires a string id; its own examples make one when the request has none.
        return InferResponse(model_name=self.name, infer_outputs=[out], response_id=payload.id or generate_uuid())


if __name__ == "__main__":
    parser = model_server.parser
    parser.add_argument("--weights", required=True)
    args, _ = parser.parse_known_args()
    model = Clf("clf", args.weights)
    model.load()
    server = ModelServer(enable_grpc=False, enable_latency_logging=False)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    server.start([model])
    sys.exit(0)
