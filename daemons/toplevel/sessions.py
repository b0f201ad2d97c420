"""Login sessions in the database: started at login, checked on every toplevel call, revoked at logout.

A session row (not process memory) is what lets any toplevel worker or server refuse a logged-out
or reset session, and lets an admin's password reset or deactivation end a user's sessions at once.
"""

from __future__ import annotations

import datetime as dt

from daemons.toplevel.models import User, UserSession
from shared.db import new_id, utcnow
from shared.tokens import Identity


def start_session(user_id: str, session_max_s: int, token_ttl_s: int) -> tuple[str, int]:
    """Create a session; returns `(session id, auth_time epoch seconds)`. Prunes dead sessions."""
    now = utcnow()
    UserSession.delete().where(UserSession.expires_at < now).execute()
    auth_time = int(now.replace(tzinfo=dt.UTC).timestamp())
    # A token minted just before the limit lives one token lifetime longer; keep the row for it.
    expires = now + dt.timedelta(seconds=session_max_s + token_ttl_s)
    session = UserSession.create(id=new_id(), user_id=user_id, started_at=now, expires_at=expires)
    return session.id, auth_time


def revoke_session(session_id: str) -> None:
    UserSession.update(revoked_at=utcnow()).where(
        UserSession.id == session_id, UserSession.revoked_at.is_null()
    ).execute()


def revoke_user_sessions(user_id: str, keep: str | None = None) -> None:
    """End every open session of the user, except `keep` (the caller's own, when they act on themselves)."""
    query = UserSession.update(revoked_at=utcnow()).where(
        UserSession.user_id == user_id, UserSession.revoked_at.is_null()
    )
    if keep is not None:
        query = query.where(UserSession.id != keep)
    query.execute()


def session_ended(identity: Identity, user: User | None) -> str | None:
    """Why this token's session may no longer act, or None while it may."""
    if user is None or not user.active:
        return "your account is no longer active"
    session = UserSession.get_or_none(UserSession.id == identity.session_id)
    if session is None or session.user_id != identity.user_id or session.revoked_at is not None:
        return "this session has ended (logout, password reset or account change); log in again"
    return None
