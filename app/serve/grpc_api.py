"""TF Serving's gRPC API on the protos and servicer bases of `tensorflow-serving-api`:
`PredictionService` (Predict, GetModelMetadata) and `ModelService` (GetModelStatus), so a client
written for TF Serving (its stubs, `tf.make_tensor_proto` inputs) works unchanged."""

from __future__ import annotations

import time
from concurrent import futures

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from app.serve.errors import ServingError, as_serving_error, invalid_argument
from app.serve.metrics import ServerMetrics
from app.serve.options import Limits
from app.serve.servable import DEFAULT_SIGNATURE
from app.serve.versions import ModelVersions


def _version(model_spec) -> int | None:
    if model_spec.WhichOneof("version_choice") == "version_label":
        raise invalid_argument("version labels are not served here; address a version by number")
    return model_spec.version.value if model_spec.HasField("version") else None


class _Answering:
    """Turns every failure into the gRPC status TF Serving would send, and counts requests."""

    def __init__(self, metrics: ServerMetrics):
        self._metrics = metrics

    def _answer(self, method: str, context: grpc.ServicerContext, work):
        started = time.perf_counter()
        try:
            response, status = work(), "OK"
        except Exception as error:  # noqa: BLE001  (every failure is answered, never a crash)
            failure = as_serving_error(error)
            self._metrics.observe("grpc", method, failure.code, time.perf_counter() - started)
            context.abort(grpc.StatusCode[failure.code], failure.message)
        self._metrics.observe("grpc", method, status, time.perf_counter() - started)
        return response


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer, _Answering):
    def __init__(self, versions: ModelVersions, metrics: ServerMetrics):
        _Answering.__init__(self, metrics)
        self._versions = versions

    def Predict(self, request: predict_pb2.PredictRequest, context):  # noqa: N802  (gRPC's method name)
        return self._answer("predict", context, lambda: self._predict(request))

    def _predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        spec = request.model_spec
        with self._versions.servable(spec.name, _version(spec)) as servable:
            try:
                inputs = {key: tf.make_ndarray(proto) for key, proto in request.inputs.items()}
            except (TypeError, ValueError) as error:
                raise invalid_argument(f"cannot read an input tensor: {error}") from None
            outputs = servable.predict(spec.signature_name, inputs, list(request.output_filter)).result()
            response = predict_pb2.PredictResponse()
            response.model_spec.name = spec.name
            response.model_spec.version.value = servable.version
            response.model_spec.signature_name = spec.signature_name or DEFAULT_SIGNATURE
        for key, value in outputs.items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
        return response

    def GetModelMetadata(self, request, context):  # noqa: N802
        return self._answer("metadata", context, lambda: self._metadata(request))

    def _metadata(self, request) -> get_model_metadata_pb2.GetModelMetadataResponse:
        unknown = [field for field in request.metadata_field if field != "signature_def"]
        if unknown or not request.metadata_field:
            raise invalid_argument(f"Metadata field {unknown[0] if unknown else '(none)'} is not supported")
        spec = request.model_spec
        with self._versions.servable(spec.name, _version(spec)) as servable:
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = spec.name
            response.model_spec.version.value = servable.version
            response.metadata["signature_def"].Pack(servable.signature_def_map())
        return response

    def Classify(self, request, context):  # noqa: N802
        return self._answer("classify", context, _unimplemented("Classify"))

    def Regress(self, request, context):  # noqa: N802
        return self._answer("regress", context, _unimplemented("Regress"))

    def MultiInference(self, request, context):  # noqa: N802
        return self._answer("multi_inference", context, _unimplemented("MultiInference"))


class ModelService(model_service_pb2_grpc.ModelServiceServicer, _Answering):
    def __init__(self, versions: ModelVersions, metrics: ServerMetrics):
        _Answering.__init__(self, metrics)
        self._versions = versions

    def GetModelStatus(self, request, context):  # noqa: N802
        return self._answer("status", context, lambda: self._status(request))

    def _status(self, request) -> get_model_status_pb2.GetModelStatusResponse:
        return self._versions.status_response(request.model_spec.name, _version(request.model_spec))

    def HandleReloadConfigRequest(self, request, context):  # noqa: N802
        return self._answer("reload_config", context, _unimplemented("HandleReloadConfigRequest"))


def _unimplemented(method: str):
    def work():
        raise ServingError(
            "UNIMPLEMENTED", f"{method} is not served: these models have predict signatures only"
        )

    return work


def build_grpc_server(
    versions: ModelVersions, metrics: ServerMetrics, limits: Limits, threads: int
) -> grpc.Server:
    """A gRPC server with both services (not yet bound or started)."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc"),
        options=[("grpc.max_receive_message_length", limits.max_body_bytes)],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(versions, metrics), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(versions, metrics), server)
    return server
