"""Who signed the model, for a bundle under review (the TUI's review screen); hashes nothing.

The same decision as the import's (``check_bundle_models``) on the trust state the
import would use (today's, plus the trust updates the bundle carries, in memory),
read from the media without importing. Never raises an ``ApplianceError``: a
refusal is returned as ``problem``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from appliance.errors import TrustUpdateReplayError
from appliance.home import Home
from appliance.modelsig.check import ModelSignature, check_bundle_models
from appliance.trust import apply_update
from appliance.truststore import load_trust
from bundles.errors import ApplianceError
from bundles.reader import Bundle, open_bundle_media, read_trust_updates


@dataclass(frozen=True)
class ModelReview:
    required: bool
    signatures: tuple[ModelSignature, ...] = ()
    problem: tuple[str, str] | None = None  # (code, message) of the refusal

    @property
    def ok(self) -> bool:
        return self.problem is None


def review_models(home: Home, path: str | os.PathLike[str]) -> ModelReview | None:
    """None when the bundle cannot even be authenticated (the review shows why)."""
    try:
        db = home.db()
        try:
            state = load_trust(db)
        finally:
            db.conn.close()
        with open_bundle_media(path) as source:
            for env in read_trust_updates(source):
                try:
                    state = apply_update(state, env)[0]
                except TrustUpdateReplayError:
                    continue
            bundle = Bundle(source, state.resolver())
            required = bundle.manifest.stream in state.model_signature_required
            try:
                return ModelReview(required, check_bundle_models(state, bundle).signatures)
            except ApplianceError as e:
                return ModelReview(required, problem=(e.code, e.message))
    except ApplianceError:
        return None
