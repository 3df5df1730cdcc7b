"""Console sessions without I/O: the cookie's flags, the 8 hour life, the bound, the CSRF check."""

from __future__ import annotations

from daemon.console.sessions import (
    COOKIE,
    MAX_SESSIONS,
    TTL_S,
    SessionStore,
    cookie_token,
    expired_cookie,
    set_cookie,
)
from daemon.core.envelope import Credentials

KEY = Credentials(api_key="dai_example")


def test_a_session_lives_eight_hours_and_then_is_gone() -> None:
    store = SessionStore()
    session = store.create(KEY, role="viewer", tenant_id="t1", user_id=None, now=1000.0)
    assert session.expires_at == 1000.0 + TTL_S == 1000.0 + 8 * 3600
    assert store.get(session.token, 1000.0 + TTL_S - 1) == session
    assert store.get(session.token, 1000.0 + TTL_S) is None
    assert len(store) == 0, "an expired session is dropped, not kept"


def test_tokens_are_opaque_random_and_distinct() -> None:
    store = SessionStore()
    one = store.create(KEY, role="viewer", tenant_id="t1", user_id=None, now=0.0)
    two = store.create(KEY, role="viewer", tenant_id="t1", user_id=None, now=0.0)
    assert one.token != two.token and one.csrf_token != two.csrf_token
    # 32 random bytes, urlsafe base64 without padding: 43 characters a cookie can carry as they are
    assert len(one.token) == 43 and all(c.isalnum() or c in "-_" for c in one.token)
    assert KEY.api_key not in one.token


def test_the_store_is_bounded_and_the_oldest_session_goes_first() -> None:
    store = SessionStore(max_sessions=3)
    sessions = [store.create(KEY, role="viewer", tenant_id="t1", user_id=None, now=float(i)) for i in range(5)]
    assert len(store) == 3
    assert [store.get(s.token, 10.0) is not None for s in sessions] == [False, False, True, True, True]
    assert MAX_SESSIONS == 1024


def test_expired_sessions_make_room_before_live_ones_are_evicted() -> None:
    store = SessionStore(ttl_s=10, max_sessions=2)
    old = store.create(KEY, role="viewer", tenant_id="t1", user_id=None, now=0.0)
    live = store.create(KEY, role="viewer", tenant_id="t1", user_id=None, now=5.0)
    new = store.create(KEY, role="viewer", tenant_id="t1", user_id=None, now=12.0)
    assert store.get(old.token, 12.0) is None
    assert store.get(live.token, 12.0) is not None and store.get(new.token, 12.0) is not None


def test_signing_out_drops_the_session() -> None:
    store = SessionStore()
    session = store.create(KEY, role="viewer", tenant_id="t1", user_id=None, now=0.0)
    assert store.drop(session.token) == session
    assert store.get(session.token, 1.0) is None and store.drop(session.token) is None


def test_the_csrf_token_must_match_exactly() -> None:
    session = SessionStore().create(KEY, role="viewer", tenant_id="t1", user_id=None, now=0.0)
    assert session.csrf_ok(session.csrf_token)
    assert not session.csrf_ok("") and not session.csrf_ok(session.csrf_token[:-1])
    assert not session.csrf_ok(session.token), "the cookie's own value is not the CSRF token"


def test_a_persons_session_renews_its_access_token_a_minute_before_it_expires() -> None:
    store = SessionStore()
    person = store.create(Credentials(bearer="jwt"), role="viewer", tenant_id="t1", user_id="u1", now=0.0,
                          refresh_token="refresh", access_expires_at=900.0)
    assert not person.needs_refresh(800.0) and person.needs_refresh(840.0)
    key = store.create(KEY, role="viewer", tenant_id="t1", user_id=None, now=0.0)
    assert not key.needs_refresh(10_000.0), "an API key session has nothing to renew"


def test_the_cookie_is_http_only_strict_and_secure_over_tls() -> None:
    plain = set_cookie("abc", secure=False)
    assert plain == f"{COOKIE}=abc; HttpOnly; SameSite=Strict; Path=/; Max-Age=28800"
    assert set_cookie("abc", secure=True).endswith("; Secure")
    assert expired_cookie(secure=False) == f"{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"


def test_the_cookie_is_read_among_others_and_garbage_is_nothing() -> None:
    assert cookie_token(f"theme=dark; {COOKIE}=tok-en_1; lang=ja") == "tok-en_1"
    assert cookie_token("theme=dark") == ""
    assert cookie_token("") == ""
    assert cookie_token(f'{COOKIE}="unterminated') == ""
