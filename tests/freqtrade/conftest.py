"""A real freqtrade (dry-run, offline) for the `freqtrade` core adapter's tests.

freqtrade is big (about 770 MB with ccxt, pandas, scipy), so it lives in its own venv,
tests/freqtrade/.venv (tests/tool_venvs.py), built from PyPI once and kept between runs. When it cannot
be built the tests are skipped with the reason (set RUNBOOK_REQUIRE_FREQTRADE=1, as .ci/run
does, to fail instead). Each bot runs `offline_freqtrade.py trade`: the installed freqtrade,
whose exchange calls are answered from canned Binance data, with its REST API on 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import secrets
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.tool_venvs import FREQTRADE

HERE = Path(__file__).resolve().parent
START_LIMIT_S = 180.0  # a bound against a hang, not a speed requirement


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker."""
    config.addinivalue_line("markers", "freqtrade: drives a real freqtrade (dry-run, offline) from tests/freqtrade/.venv")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in this folder is a freqtrade test."""
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.freqtrade)


@pytest.fixture(scope="session")
def freqtrade_python() -> Path:
    """The python of the freqtrade venv, built on first use if `make test` has not built it."""
    return FREQTRADE.ready_or_skip() / "python"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Bot:
    """A running freqtrade: its URL, credentials, folder and process."""

    url: str
    username: str
    password: str
    root: Path
    process: subprocess.Popen[bytes]

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Call the REST API (as a test's setup or observer, not through the engine)."""
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        request = urllib.request.Request(
            f"{self.url}/api/v1{path}", method=method, data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def state(self) -> str:
        """freqtrade's state: running, paused or stopped."""
        return str(self.api("GET", "/show_config")["state"])

    def log(self) -> str:
        """What freqtrade printed so far."""
        return (self.root / "freqtrade.log").read_text(errors="replace")


def _config(root: Path, port: int, username: str, password: str) -> dict[str, Any]:
    return {
        "max_open_trades": 3, "stake_currency": "USDT", "stake_amount": 100, "tradable_balance_ratio": 0.99,
        "dry_run": True, "dry_run_wallet": 1000, "trading_mode": "spot", "timeframe": "5m",
        "strategy": "RunbookIdle", "strategy_path": str(HERE / "strategies"),
        "user_data_dir": str(root / "user_data"), "db_url": f"sqlite:///{root / 'trades.sqlite'}",
        "initial_state": "running", "force_entry_enable": True, "bot_name": "runbook-test",
        "internals": {"process_throttle_secs": 1},
        "order_types": {"entry": "market", "exit": "market", "stoploss": "market", "stoploss_on_exchange": False},
        "entry_pricing": {"price_side": "other", "use_order_book": False, "price_last_balance": 0.0},
        "exit_pricing": {"price_side": "other", "use_order_book": False},
        "unfilledtimeout": {"entry": 600, "exit": 600, "unit": "minutes"},
        "exchange": {"name": "binance", "key": "", "secret": "", "enable_ws": False,
                     "ccxt_config": {"options": {"fetchMarkets": {"types": ["spot"]}}},
                     "ccxt_async_config": {"options": {"fetchMarkets": {"types": ["spot"]}}},
                     "pair_whitelist": ["BTC/USDT", "ETH/USDT"], "pair_blacklist": []},
        "pairlists": [{"method": "StaticPairList"}],
        "telegram": {"enabled": False, "token": "", "chat_id": ""},
        "api_server": {"enabled": True, "listen_ip_address": "127.0.0.1", "listen_port": port, "verbosity": "error",
                       "enable_openapi": False, "jwt_secret_key": secrets.token_hex(24),
                       "ws_token": secrets.token_hex(8), "CORS_origins": [], "username": username,
                       "password": password},
    }


@pytest.fixture
def freqtrade_bot(freqtrade_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bot]:
    """A fresh freqtrade bot in dry-run, `running`, with an idle strategy; stopped after the test."""
    root = tmp_path_factory.mktemp("freqtrade")
    port = _free_port()
    username, password = "ops", f"canary-{secrets.token_hex(12)}"
    (root / "user_data").mkdir()
    (root / "config.json").write_text(json.dumps(_config(root, port, username, password), indent=2))
    log = (root / "freqtrade.log").open("wb")
    process = subprocess.Popen([str(freqtrade_python), str(HERE / "offline_freqtrade.py"), "trade", "--config",
                                str(root / "config.json")], cwd=root, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    bot = Bot(f"http://127.0.0.1:{port}", username, password, root, process)
    deadline = time.monotonic() + START_LIMIT_S
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"freqtrade exited {process.returncode} at start:\n{bot.log()[-3000:]}")
            try:
                if bot.state() == "running":
                    break
            except (OSError, urllib.error.URLError, ValueError, KeyError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"freqtrade's API did not answer within {START_LIMIT_S:.0f} s:\n{bot.log()[-3000:]}")
            time.sleep(0.1)
        yield bot
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
