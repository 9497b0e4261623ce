"""The sales API client against a real HTTP server with injected faults."""

from __future__ import annotations

import re
from datetime import date

import pytest

from ecosystem_assets.resources.sales_api import SalesApiError, SalesApiResource, SalesApiUnavailable
from ecosystem_assets.settings import Settings, SettingsError
from ecosystem_assets_tests.sales.orders_data import make_orders
from ecosystem_assets_tests.servers.sales_api import Fault

DAY = date(2026, 11, 26)
TOKEN = "tok-s3cr3t-value-1234"


def client(api, **kwargs) -> SalesApiResource:
    params = dict(base_url=api.url, token=TOKEN, timeout_s=0.5, max_retries=3, backoff_s=0.05)
    params.update(kwargs)
    return SalesApiResource(**params)


@pytest.fixture
def api(sales_api):
    sales_api.token = TOKEN
    sales_api.orders[DAY.isoformat()] = make_orders(DAY.isoformat(), 250)
    return sales_api


def test_pages_through_every_page_with_bearer_token(api):
    orders, pages = client(api).fetch_orders(DAY)
    assert pages == 3
    assert [o["order_id"] for o in orders] == [o["order_id"] for o in api.orders[DAY.isoformat()]]
    assert [r.query for r in api.requests] == [{"date": "2026-11-26", "page": str(p)} for p in (1, 2, 3)]
    assert all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r in api.requests)


def test_503_then_success_is_retried(api):
    api.faults.extend([Fault(status=503, body=b"busy"), Fault(status=502, body=b"bad gateway")])
    orders, _ = client(api).fetch_orders(DAY)
    assert len(orders) == 250
    assert [r.query["page"] for r in api.requests[:3]] == ["1", "1", "1"]


def test_429_honours_retry_after(api):
    api.faults.append(Fault(status=429, body=b"slow down", headers={"Retry-After": "1"}))
    orders, _ = client(api).fetch_orders(DAY)
    assert len(orders) == 250
    assert api.requests[1].at - api.requests[0].at >= 0.95  # waited as told, not the 0.05 s backoff


def test_retry_after_is_capped_by_max_backoff(api):
    api.faults.append(Fault(status=429, body=b"come back tomorrow", headers={"Retry-After": "86400"}))
    orders, _ = client(api, max_backoff_s=0.2).fetch_orders(DAY)
    assert len(orders) == 250
    assert api.requests[1].at - api.requests[0].at < 5  # waited at most max_backoff_s, not a day


def test_hang_past_timeout_is_retried(api):
    api.faults.append(Fault(hang_s=1.5))
    orders, _ = client(api, timeout_s=0.3).fetch_orders(DAY)
    assert len(orders) == 250
    assert len(api.requests) == 4  # page 1 twice, then pages 2 and 3


def test_malformed_json_fails_at_once_naming_status_url_and_page(api):
    api.faults.extend([Fault(), Fault(body=b'{"orders": [ {"order_id": ')])
    with pytest.raises(SalesApiError) as err:
        client(api).fetch_orders(DAY)
    message = str(err.value)
    assert "HTTP 200" in message and "malformed JSON" in message and "page 2" in message
    assert f"{api.url}/orders?date=2026-11-26&page=2" in message
    assert TOKEN not in message
    assert len(api.requests) == 2  # no retry


def test_401_fails_at_once_without_leaking_the_token(api):
    with pytest.raises(SalesApiError) as err:
        client(api, token="wrong-token-987").fetch_orders(DAY)
    message = str(err.value)
    assert "HTTP 401" in message and "page 1" in message and f"{api.url}/orders" in message
    assert "wrong-token-987" not in message
    assert len(api.requests) == 1


def test_persistent_5xx_gives_up_after_max_retries(api):
    api.faults.extend([Fault(status=500, body=b"boom")] * 10)
    with pytest.raises(SalesApiUnavailable, match=r"after 3 attempts .*\(page 1\): last error HTTP 500"):
        client(api, max_retries=2).fetch_orders(DAY)
    assert len(api.requests) == 3


def test_overlapping_pages_return_duplicates_for_the_asset_to_drop(api):
    api.overlap = 5
    orders, pages = client(api).fetch_orders(DAY)
    assert pages == 3 and len(orders) == 260  # 5 repeated at the start of pages 2 and 3


def test_demo_feed_without_url_is_deterministic():
    first, _ = SalesApiResource(timezone="Europe/Berlin").fetch_orders(DAY)
    second, _ = SalesApiResource(timezone="Europe/Berlin").fetch_orders(DAY)
    assert first == second and 100 <= len(first) <= 5000
    assert {o["region"] for o in first} >= {"North", "South", "East", "West"}
    assert all(o["ordered_at"].startswith("2026-11-26T") and o["ordered_at"].endswith("+01:00") for o in first)


def test_a_trickling_body_is_cut_off_at_the_deadline_and_retried(api):
    """One byte every 0.25 s never trips the 5 s read timeout; the 1.5 s deadline ends the attempt."""
    api.faults.append(Fault(trickle_s=0.25))
    orders, _ = client(api, timeout_s=5, deadline_s=1.5).fetch_orders(DAY)
    assert len(orders) == 250
    cut_after = api.requests[1].at - api.requests[0].at  # the retry arrives once the first attempt was cut
    assert 1.5 <= cut_after < 1.5 + 1.0  # at the deadline, not when the ~10 KB body would have ended (~40 min)


def test_a_server_trickling_every_attempt_fails_with_url_page_and_elapsed_time(api):
    api.faults.extend([Fault(trickle_s=0.25)] * 2)
    with pytest.raises(SalesApiUnavailable) as err:
        client(api, timeout_s=5, deadline_s=1.5, max_retries=1).fetch_orders(DAY)
    message = str(err.value)
    assert "after 2 attempts in " in message and f"for {api.url}/orders?date=2026-11-26&page=1 (page 1)" in message
    assert re.search(r"last error deadline of 1\.5s exceeded after 1\.[5-9]s \(\d+ bytes of the body received\)", message), message
    assert len(api.requests) == 2  # the overrun used up the retry budget


def test_errors_name_the_url_without_its_credentials(api):
    with_password = api.url.replace("http://", "http://reader:pw-secret-4242@")
    with pytest.raises(SalesApiError) as err:  # no token: the API refuses the URL's Basic credentials
        client(api, base_url=with_password, token=None).fetch_orders(DAY)
    message = str(err.value)
    assert f"HTTP 401 for {api.url}/orders?date=2026-11-26&page=1" in message and "pw-secret-4242" not in message


def test_deadline_setting():
    assert Settings.from_env({}).sales_api_deadline_s == 120
    assert Settings.from_env({"SALES_API_DEADLINE_S": "7.5"}).sales_api_deadline_s == 7.5
    with pytest.raises(SettingsError, match=r"SALES_API_DEADLINE_S='0' must be at least 1"):
        Settings.from_env({"SALES_API_DEADLINE_S": "0"})
