"""An independent client of the experiments.v1 contract, in Python with
grpcio, its stubs generated from proto/ by grpcio-tools.

Usage: client.py STUBS_DIR ADDRESS USER_ID

Prints one JSON object per line:
  {"step": "assign", ...}      the Assign answer for USER_ID
  {"step": "snapshot", ...}    the first WatchConfigs message
  {"step": "delta", ...}       the change after this client pauses the
                               experiment through AdminService
"""
import json
import sys

sys.path.insert(0, sys.argv[1])

import grpc  # noqa: E402
from google.protobuf import json_format  # noqa: E402
from experiments.v1 import admin_service_pb2, admin_service_pb2_grpc  # noqa: E402
from experiments.v1 import assignment_service_pb2, assignment_service_pb2_grpc  # noqa: E402
from experiments.v1 import config_service_pb2, config_service_pb2_grpc  # noqa: E402


def emit(step, **fields):
    print(json.dumps({"step": step, **fields}), flush=True)


def main():
    address, user_id = sys.argv[2], sys.argv[3]
    with grpc.insecure_channel(address) as channel:
        assign = assignment_service_pb2_grpc.AssignmentServiceStub(channel)
        answer = assign.Assign(
            assignment_service_pb2.AssignRequest(
                user_id=user_id,
                context=assignment_service_pb2.RequestContext(placement="you_may_also_like"),
            ),
            timeout=10,
        )
        emit(
            "assign",
            experiment_id=answer.experiment_id,
            variant=answer.variant,
            params=json_format.MessageToDict(answer.params),
            assignments=[[a.experiment_id, a.variant] for a in answer.assignments],
        )

        config = config_service_pb2_grpc.ConfigServiceStub(channel)
        stream = config.WatchConfigs(
            config_service_pb2.WatchConfigsRequest(client_id="python-test"), timeout=30
        )
        first = next(stream)
        emit(
            "snapshot",
            version=first.config_version,
            kind=first.WhichOneof("payload"),
            experiments=[e.id for e in first.snapshot.experiments],
        )

        admin = admin_service_pb2_grpc.AdminServiceStub(channel)
        admin.PauseExperiment(
            admin_service_pb2.PauseExperimentRequest(id="reco_ymal_v1", reason="python client"),
            timeout=10,
        )
        for message in stream:
            if message.WhichOneof("payload") == "delta":
                emit(
                    "delta",
                    version=message.config_version,
                    paused=[
                        e.id
                        for e in message.delta.upserted_experiments
                        if e.status == 4  # EXPERIMENT_STATUS_PAUSED
                    ],
                )
                stream.cancel()
                break


if __name__ == "__main__":
    main()
