"""The library the built-in plugins stand on: process runner, HTTP client, SQLite, trading-core adapters.

`checks/` and `actions/` import from here, never from each other. Like a plugin, this package
imports only `engine.plugins` and `engine.errors` from the engine (tests/plugins/test_import_rule.py).
"""
