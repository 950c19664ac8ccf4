"""OpenSSF model-signing (OMS) signatures as extra provenance (issue 17; docs/CLI.md).

``check_bundle_models(state, bundle)`` is the import's check (one of the bundle
evaluation's checks); ``check_models`` the same over a manifest and a reader.
``oms`` reads and verifies the signature files, ``create`` carries them into
bundles. Our own verifier on ``cryptography``: no run-time dependency on the
``model-signing`` or ``sigstore`` packages.
"""

from appliance.modelsig.check import (
    ModelCheck,
    ModelSignature,
    check_bundle_models,
    check_models,
    is_signature,
)
from appliance.modelsig.oms import BUNDLE_MEDIA_TYPE, ModelStatement, SignatureFile
from appliance.modelsig.review import ModelReview, review_models

__all__ = [
    "BUNDLE_MEDIA_TYPE",
    "ModelCheck",
    "ModelReview",
    "ModelSignature",
    "ModelStatement",
    "SignatureFile",
    "check_bundle_models",
    "check_models",
    "is_signature",
    "review_models",
]
