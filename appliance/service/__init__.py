"""The loader service: loaders get verified descriptors and never read the store.

Public API (imported lazily, so that ``appliance.loader`` can use the
identity module without pulling in the server): ``serve`` and ``Config``
(run the service), ``request_load`` (the Python client), ``Identity``,
``peer_identity`` and ``self_identity`` (who a loader is, from the kernel),
``authorize`` (the grant decision), ``default_socket``. The wire protocol is
docs/PROTOCOL.md; deployment is docs/DEPLOY.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from appliance.service.client import request_load
    from appliance.service.grants import authorize
    from appliance.service.identity import Identity, peer_identity, self_identity
    from appliance.service.ownership import give_home_to
    from appliance.service.server import Config, default_socket, serve

_LAZY = {
    "Config": "appliance.service.server",
    "serve": "appliance.service.server",
    "default_socket": "appliance.service.server",
    "request_load": "appliance.service.client",
    "authorize": "appliance.service.grants",
    "Identity": "appliance.service.identity",
    "peer_identity": "appliance.service.identity",
    "self_identity": "appliance.service.identity",
    "give_home_to": "appliance.service.ownership",
}

__all__ = [
    "Config",
    "Identity",
    "authorize",
    "default_socket",
    "give_home_to",
    "peer_identity",
    "request_load",
    "self_identity",
    "serve",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'appliance.service' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
