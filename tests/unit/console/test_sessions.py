"""Console sessions without I/O: the cookie's flags, the 8 hour life, the bound, the CSRF check."""

from __future__ import annotations

import time

import pytest

from daemon.console.sessions import (
    COOKIE,
    MAX_SESSIONS,
    PER_PRINCIPAL,
    TTL_S,
    SessionStore,
    cookie_token,
    expired_cookie,
    same_origin,
    set_cookie,
)
from daemon.core.envelope import Credentials
from daemon.core.errors import Unavailable

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


def test_one_key_holds_eight_sessions_and_its_own_oldest_goes_first() -> None:
    store = SessionStore()
    sessions = [store.create(KEY, role="viewer", tenant_id="t1", user_id=None, now=float(i)) for i in range(10)]
    assert len(store) == PER_PRINCIPAL == 8
    assert [store.get(s.token, 10.0) is not None for s in sessions] == [False, False] + [True] * 8
    assert MAX_SESSIONS == 1024


def test_a_full_store_refuses_a_newcomer_instead_of_evicting_the_operator() -> None:
    store = SessionStore(max_sessions=3)
    operator = store.create(Credentials(api_key="dai_root"), role="super_admin", tenant_id="t0", user_id=None,
                            now=0.0)
    for i in range(2):
        store.create(Credentials(api_key=f"dai_viewer{i}"), role="viewer", tenant_id="t1", user_id=None, now=1.0)
    with pytest.raises(Unavailable) as refused:
        store.create(Credentials(api_key="dai_viewer9"), role="viewer", tenant_id="t1", user_id=None, now=2.0)
    assert refused.value.http_status == 503 and store.get(operator.token, 3.0) is not None
    # a person is one principal across the tokens of their sessions
    people = SessionStore(per_principal=1)
    first = people.create(Credentials(bearer="a"), role="viewer", tenant_id="t1", user_id="u1", now=0.0)
    people.create(Credentials(bearer="b"), role="viewer", tenant_id="t1", user_id="u1", now=1.0)
    assert people.get(first.token, 2.0) is None and len(people) == 1


def test_expired_sessions_make_room_before_a_newcomer_is_refused() -> None:
    store = SessionStore(ttl_s=10, max_sessions=2)
    old = store.create(KEY, role="viewer", tenant_id="t1", user_id=None, now=0.0)
    live = store.create(KEY, role="viewer", tenant_id="t1", user_id=None, now=5.0)
    new = store.create(Credentials(api_key="dai_other"), role="viewer", tenant_id="t1", user_id=None, now=12.0)
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
    token = "A" * 21 + "-_" + "z0" * 10
    assert cookie_token(f"theme=dark; {COOKIE}={token}; lang=ja") == token
    assert cookie_token(f"{COOKIE}=tok-en_1") == "", "not the shape of a token this hub hands out"
    assert cookie_token("theme=dark") == ""
    assert cookie_token("") == ""
    assert cookie_token(f'{COOKIE}="unterminated') == ""


def test_a_hostile_cookie_header_is_read_in_linear_time() -> None:
    """CVE-2024-7592: http.cookies on Python 3.11.7 takes ~1 s on this 16 KB header; the loop must not stall."""
    header = f'{COOKIE}="' + "\\" * 16000 + '"'
    began = time.perf_counter()
    for _ in range(10):
        assert cookie_token(header) == ""
    assert time.perf_counter() - began < 0.1


def test_the_browser_says_whether_the_hubs_own_page_sent_a_request() -> None:
    own = "127.0.0.1:8080"
    assert same_origin("http://127.0.0.1:8080", "", own, False, required=True)
    assert same_origin("", "same-origin", own, False, required=True)
    assert not same_origin("http://127.0.0.1:9999", "", own, False, required=True), "another port"
    assert not same_origin("http://127.0.0.1:8080", "", own, True, required=True), "another scheme"
    assert not same_origin("", "same-site", own, False, required=False)
    assert not same_origin("", "", own, False, required=True)
    assert same_origin("", "", own, False, required=False), "no browser: nothing to say"
