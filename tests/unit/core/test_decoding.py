"""The one JSON decoder: what a caller may send, and the pointer it is told when it may not."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from daemon.core.decoding import MAX_DEPTH, OFFLOAD_BYTES, check_value, decode_json, decode_json_async
from daemon.core.errors import ValidationError


def refused(data: bytes | str) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        decode_json(data)
    return caught.value


def test_ordinary_json_comes_back_as_python_values() -> None:
    body = '{"action": "echo", "payload": {"text": "héllo 😀", "n": [1, 2.5, null, true]}}'
    assert decode_json(body.encode()) == {"action": "echo", "payload": {"text": "héllo 😀", "n": [1, 2.5, None, True]}}
    assert decode_json('"\\ud83d\\ude00"') == "😀"  # a surrogate *pair* is one character


def test_json_nested_a_hundred_thousand_deep_is_refused_not_a_crash() -> None:
    error = refused(b"[" * 100_000 + b"]" * 100_000)
    assert error.details["max_depth"] == MAX_DEPTH
    assert "deeper than" in error.message


def test_nesting_just_past_the_limit_names_where_it_went_too_deep() -> None:
    assert decode_json("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    error = refused('{"a": ' + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "}")
    assert error.details["pointer"] == "/a" + "/0" * (MAX_DEPTH - 1)


@pytest.mark.parametrize("body", [
    b'"\\ud800"', b'{"payload": {"text": "\\udfff"}}', b'["ok", "\\ud800x"]', b'{"\\ud800": 1}',
])
def test_a_lone_surrogate_is_refused_with_its_pointer(body: bytes) -> None:
    error = refused(body)
    assert "surrogate" in error.message
    assert isinstance(error.details["pointer"], str)
    error.details["pointer"].encode("utf-8")  # the answer itself must encode


def test_the_pointer_of_a_surrogate_inside_a_payload() -> None:
    assert refused(b'{"payload": {"list": [1, "\\ud800"]}}').details["pointer"] == "/payload/list/1"


@pytest.mark.parametrize("body", [b"\xed\xa0\x80", b'"\xff"', b"\xef\xbb\xbf{}", b"{nope", b"", b"NaN",
                                  b'{"n": Infinity}', b"[-Infinity]", b"1" * 5000])
def test_what_is_not_json_text_is_refused(body: bytes) -> None:
    assert refused(body).details["pointer"] == ""


@pytest.mark.parametrize(("body", "pointer"), [
    (b"[1e999]", "/0"), (b'{"a": [1, {"b": -1e400}]}', "/a/1/b"), (b'{"x": 1.5, "n": 1' + b"0" * 400 + b'.0}', "/n"),
])
def test_a_number_that_overflows_a_float_is_refused_with_its_pointer(body: bytes, pointer: str) -> None:
    # the usual decoder stops at such a number; the slow path must still name where it is
    error = refused(body)
    assert "not finite" in error.message and error.details["pointer"] == pointer


def test_an_overflowing_number_in_text_that_is_not_json_is_refused_as_not_json() -> None:
    assert "not valid JSON" in refused(b"[1e999, nope").message


def test_nesting_that_only_brackets_inside_strings_suggest_is_accepted() -> None:
    # the fast path counts brackets, strings included; past the count the full walk decides
    body = '{"text": "' + "[" * (MAX_DEPTH + 10) + '", "deep": [[1.5]]}'
    assert decode_json(body.encode())["deep"] == [[1.5]]


def test_a_str_frame_with_a_raw_surrogate_is_refused() -> None:
    assert "surrogate" in refused('{"a": "\ud800"}').message


def test_values_another_parser_built_pass_the_same_checks() -> None:
    check_value({"a": [1.5, "ok"]})
    with pytest.raises(ValidationError) as deep:
        nested: list[object] = []
        for _ in range(MAX_DEPTH + 5):
            nested = [nested]
        check_value(nested, pointer="/payload")
    assert deep.value.details["pointer"].startswith("/payload/0")
    with pytest.raises(ValidationError) as nan:
        check_value({"x": float("nan")}, pointer="/payload")
    assert nan.value.details["pointer"] == "/payload/x"


class CountingExecutor(ThreadPoolExecutor):
    """A real thread pool that counts the jobs it was given."""

    submitted = 0

    def submit(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        self.submitted += 1
        return super().submit(*args, **kwargs)


def test_a_large_body_is_decoded_in_a_worker_thread_a_small_one_on_the_loop() -> None:
    executor = CountingExecutor(1)
    big = ('{"blob": "' + "x" * OFFLOAD_BYTES + '"}').encode()

    async def main() -> tuple[Any, Any]:
        asyncio.get_running_loop().set_default_executor(executor)
        small = await decode_json_async(b'{"a": 1}')
        assert executor.submitted == 0
        return small, await decode_json_async(big)

    small, decoded = asyncio.run(main())
    assert small == {"a": 1} and decoded == {"blob": "x" * OFFLOAD_BYTES}
    assert executor.submitted == 1
