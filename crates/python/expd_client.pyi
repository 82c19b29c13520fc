"""The experiment service's client for Python.

Assignment runs locally with the very Rust code ``expd`` runs; the config is
followed from ``expd`` over ``WatchConfigs`` on a background thread (with
reconnection and an optional snapshot file); exposures and outcomes are sent
to ``EventService`` in the background.

    from expd_client import Client

    client = Client("http://127.0.0.1:50051")
    client.wait_for_config(timeout=5)
    answer = client.assign(user_id="u-18224", placement="you_may_also_like")
    answer.params            # {"model_version": "v3", "rerank_weight_style": 0.6, ...}
    client.log_outcome("add_to_cart", user_id="u-18224", placement="you_may_also_like")
    client.close()
"""

from os import PathLike
from typing import Any, Dict, List, Optional, Sequence, Union

__version__: str

class ExpdError(Exception):
    """Every error of expd_client."""

class InvalidRequest(ExpdError):
    """A bad input."""

    field: str
    """The input at fault, e.g. ``"user_id"`` or ``"context.placement"``."""

class NoConfig(ExpdError):
    """No experiment config yet: the service has not answered and no snapshot file was saved."""

class ConfigTimeout(ExpdError):
    """``wait_for_config`` gave up."""

class QueueFull(ExpdError):
    """The event queue is full; the event was not queued."""

class Assignment:
    """One experiment's answer."""

    experiment_id: str
    """The experiment, e.g. ``"reco_ymal_v1"``."""
    variant: str
    """The variant, e.g. ``"treatment"``."""
    params: Dict[str, Any]
    """The variant's parameters: numbers stay numbers."""
    layer: str
    """The experiment's layer."""
    revision: int
    """The experiment revision evaluated."""
    reason: str
    """``"bucketed"``, ``"override"`` (a QA override) or ``"shipped"``."""
    unit_type: str
    """``"user"`` or ``"session"``: which id decided it."""

class Answer:
    """The answer to one request."""

    assignments: List[Assignment]
    """Every assignment, in (layer, experiment id) order."""
    params: Dict[str, Any]
    """The parameters to use: every assignment's, merged."""
    config_version: int
    """The config version evaluated."""
    unit_type: str
    """``"user"`` when the request had a user id, else ``"session"``."""
    @property
    def primary(self) -> Optional[Assignment]:
        """The first assignment, or None."""

def bucket(salt: str, unit_id: str) -> int:
    """The SipHash bucket (0 to 9,999) of ``unit_id`` under ``salt``."""

class Snapshot:
    """A serving config (expd's JSON form), compiled for evaluation."""

    @staticmethod
    def from_json(text: str) -> "Snapshot":
        """Compiles the serving config in ``text``; ``InvalidRequest`` (field ``config``) if it is not one."""
    def evaluate(
        self,
        user_id: Optional[str] = None,
        session_id: Optional[str] = None,
        *,
        placement: str = "",
        page_type: str = "",
        country: str = "",
        device: str = "",
        attributes: Optional[Dict[str, str]] = None,
        now: Optional[float] = None,
    ) -> Answer:
        """Assigns a request at ``now`` (seconds since the Unix epoch; None: now)."""

class Client:
    """Follows the config of an ``expd``, assigns locally, sends events in the background."""

    def __init__(
        self,
        address: str,
        *,
        token: Optional[str] = None,
        snapshot_path: Optional[Union[str, PathLike]] = None,
        placements: Optional[Sequence[str]] = None,
        log_exposures: bool = True,
        client_id: str = "expd-client-python",
    ) -> None:
        """Starts following ``address`` (``"http://HOST:PORT"``, expd's gRPC port).

        ``snapshot_path`` keeps the last config in a file, used at start while
        the service is unreachable; ``token`` is a data-plane token when the
        service has a tokens file; ``placements`` limits the config to the
        experiments of those placements; ``log_exposures`` sends the exposure
        of every bucketed assignment.
        """
    def wait_for_config(self, timeout: float = 10.0) -> int:
        """Waits until a config is in use; returns its version. ``ConfigTimeout`` after ``timeout`` seconds."""
    def wait_for_version(self, version: int, timeout: float = 10.0) -> int:
        """Waits until the config in use is ``version`` or later."""
    @property
    def config_version(self) -> Optional[int]:
        """The config version in use; None before any."""
    def assign(
        self,
        user_id: Optional[str] = None,
        session_id: Optional[str] = None,
        *,
        placement: str = "",
        page_type: str = "",
        country: str = "",
        device: str = "",
        attributes: Optional[Dict[str, str]] = None,
        defer_exposure: bool = False,
    ) -> Answer:
        """Assigns a request locally (the GIL is released while it evaluates).

        The same answer as ``Assign`` on the same config version. Logs the
        exposure of each bucketed assignment unless ``defer_exposure``.
        ``NoConfig`` before any config; ``InvalidRequest`` without any id.
        """
    def log_outcome(
        self,
        type: str,
        *,
        user_id: Optional[str] = None,
        session_id: Optional[str] = None,
        placement: str = "",
        page_type: str = "",
        item_id: str = "",
        item_ids: Optional[Sequence[str]] = None,
        from_recommendation: bool = False,
        source_placement: str = "",
        value: float = 0.0,
        currency: str = "",
        quantity: int = 0,
        latency_ms: float = 0.0,
        event_id: Optional[str] = None,
        timestamp: Optional[float] = None,
    ) -> None:
        """Queues an outcome: ``type`` is impression, click, add_to_cart, purchase, page_view or page_load.

        ``timestamp`` is seconds since the Unix epoch (None: now); ``event_id``
        None gives a unique one. ``QueueFull`` when the queue is full.
        """
    def stats(self) -> Dict[str, int]:
        """Events queued, accepted, duplicates, rejected, retries and dropped so far."""
    def flush(self, timeout: float = 10.0) -> bool:
        """Sends what is queued now and waits up to ``timeout`` seconds for the answers; False if time ran out."""
    def close(self, timeout: float = 10.0) -> Dict[str, int]:
        """Sends everything queued (up to ``timeout`` seconds) and stops sending; assignment keeps working."""
    def __enter__(self) -> "Client": ...
    def __exit__(self, *exc: object) -> None: ...
