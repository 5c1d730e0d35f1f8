"""Seldon MLServer custom runtime for the demo model (runs in MLServer's venv, from its model dir)."""

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse

import clf_forward


class ClfModel(MLModel):
    async def load(self) -> bool:
        self._weights = clf_forward.load(self.settings.parameters.uri)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0])
        probs = clf_forward.forward(self._weights, x)
        return InferenceResponse(model_name=self.name, model_version=self.version, id=payload.id,
                                 outputs=[NumpyCodec.encode_output("PROBS", probs)])
