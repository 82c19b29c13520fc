"""Refusals a gRPC C-core client can read, whatever the request echoed.

Usage: bad_request.py STUBS_DIR ADDRESS

Creates two invalid experiments with grpcio and prints, per case, one JSON
object: the status code, the bytes of trailing metadata received, and the
field violations decoded from the google.rpc.BadRequest details:
  {"case": "long_name", ...}        a variant named with 10,000 characters
  {"case": "unknown_params", ...}   3 MB of parameters the schema does not know
"""
import json
import sys

sys.path.insert(0, sys.argv[1])

import grpc  # noqa: E402
from google.rpc import error_details_pb2  # noqa: E402
from grpc_status import rpc_status  # noqa: E402
from experiments.v1 import admin_service_pb2, admin_service_pb2_grpc  # noqa: E402
from experiments.v1 import experiment_pb2  # noqa: E402


def experiment(variant_name="treatment", params=None):
    treatment = experiment_pb2.Variant(name=variant_name, weight=50)
    if params:
        treatment.params.update(params)
    return experiment_pb2.Experiment(
        id="py_bad_request",
        name="A bad request",
        hypothesis="The answer stays readable",
        owner="qa@example.com",
        variants=[experiment_pb2.Variant(name="control", weight=50), treatment],
        control_variant="control",
        traffic_percent=10,
    )


def refusal(stub, case, proposal):
    try:
        stub.CreateExperiment(
            admin_service_pb2.CreateExperimentRequest(experiment=proposal), timeout=30
        )
    except grpc.RpcError as error:
        trailers = error.trailing_metadata() or ()
        size = sum(len(key) + len(value) for key, value in trailers)
        violations = []
        status = rpc_status.from_call(error)
        for detail in status.details if status else ():
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations += [
                    {"field": v.field, "description": v.description}
                    for v in bad.field_violations
                ]
        print(
            json.dumps(
                {
                    "case": case,
                    "code": error.code().name,
                    "message": error.details(),
                    "metadata_bytes": size,
                    "violations": violations,
                }
            ),
            flush=True,
        )
        return
    print(json.dumps({"case": case, "code": "OK"}), flush=True)


def main():
    with grpc.insecure_channel(sys.argv[2]) as channel:
        stub = admin_service_pb2_grpc.AdminServiceStub(channel)
        refusal(stub, "long_name", experiment(variant_name="v" * 10_000))
        params = {f"unknown_parameter_{index:06d}": index for index in range(100_000)}
        refusal(stub, "unknown_params", experiment(params=params))


if __name__ == "__main__":
    main()
