import os

from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext

token = os.environ.get("EXPD_TOKEN", "")  # a data_plane token, with --tokens-file
api.set_provider(OFREPProvider(
    os.environ.get("EXPD_URL", "http://127.0.0.1:8080"),
    headers_factory=lambda: {"Authorization": f"Bearer {token}"},
))
details = api.get_client().get_object_details(
    "reco_ymal_v1", {},  # the flag is the experiment; {} is the code default
    EvaluationContext("u-18227", {"session_id": "s-5f1c9a", "placement": "you_may_also_like"}),
)
print(details.variant, details.reason, details.value)
