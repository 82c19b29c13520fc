import os

from expd_client import Client

client = Client(os.environ.get("EXPD_GRPC_URL", "http://127.0.0.1:50051"),
                token=os.environ.get("EXPD_TOKEN"))  # a data_plane token, with --tokens-file
client.wait_for_config(timeout=5)  # then the config is followed in the background
answer = client.assign("u-18224", "s-5f1c9a", placement="you_may_also_like")  # local, no I/O
print([(a.experiment_id, a.variant) for a in answer.assignments])
print(answer.params)  # the params to use, e.g. {'model_version': 'v3', 'rerank_weight_style': 0.6}
client.log_outcome("add_to_cart", user_id="u-18224", placement="you_may_also_like", item_id="sku-1")
client.close()  # sends the queued exposure and outcome
