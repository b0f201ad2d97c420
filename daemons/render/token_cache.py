"""Token verification with a small cache, for a node that answers many image requests per token.

A viewer scrolling a stack sends the same access token with every slice; checking its Ed25519
signature each time costs about as much as rendering the slice. A verified token's claims cannot
change, so the Identity is kept until the token's expiry (re-checked on every hit, with the same
leeway as the verifier) and never longer: tokens for a node live at most `MAX_EXCHANGED_TTL_S`,
which is what bounds how long a revoked session keeps working here. Refusals are never cached:
they are cheap and must stay explicit.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from shared.tokens import Identity, TokenVerifier

CACHE_SIZE = 4096


class CachingVerifier(TokenVerifier):
    def __init__(self, inner: TokenVerifier, size: int = CACHE_SIZE):
        super().__init__(list(inner.public_keys.values()), inner.issuer, inner.audience, inner.leeway_s,
                         inner.max_lifetime_s)
        self._cache: OrderedDict[str, Identity] = OrderedDict()
        self._lock = threading.Lock()
        self._size = size

    def verify(self, token: str) -> Identity:
        now = time.time()
        with self._lock:
            identity = self._cache.get(token)
            if identity is not None:
                if identity.expires_at + self.leeway_s > now:
                    self._cache.move_to_end(token)
                    return identity
                del self._cache[token]
        identity = super().verify(token)
        with self._lock:
            self._cache[token] = identity
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return identity
