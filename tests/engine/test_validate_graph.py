"""The graph checks of validation walk plain dicts (no networkx on a valid file's path): the same answers
as networkx, which stays for call cycles and `runbook graph`."""

from __future__ import annotations

import networkx as nx
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.validate import _reach, _strongly_connected

EDGES = st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)), max_size=90)


def _graphs(n: int, edges: list[tuple[int, int]]) -> tuple[dict[str, list[str]], nx.DiGraph]:
    plain: dict[str, list[str]] = {f"n{i}": [] for i in range(n)}
    graph = nx.DiGraph()
    graph.add_nodes_from(plain)
    for a, b in edges:
        if a < n and b < n and f"n{b}" not in plain[f"n{a}"]:
            plain[f"n{a}"].append(f"n{b}")
            graph.add_edge(f"n{a}", f"n{b}")
    return plain, graph


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 31), edges=EDGES)
def test_reach_and_components_agree_with_networkx(n: int, edges: list[tuple[int, int]]) -> None:
    plain, graph = _graphs(n, edges)
    assert _reach(plain, "n0") == nx.descendants(graph, "n0") | {"n0"}
    ours = sorted(sorted(c) for c in _strongly_connected(plain))
    theirs = sorted(sorted(c) for c in nx.strongly_connected_components(graph))
    assert ours == theirs


def test_a_long_chain_does_not_recurse() -> None:
    plain = {f"n{i}": [f"n{i + 1}"] for i in range(5000)} | {"n5000": ["n0"]}
    assert [len(c) for c in _strongly_connected(plain)] == [5001]


def test_compiled_param_checks_follow_the_schema_not_the_object() -> None:
    """A plugin object's id can be reused by another plugin once it is gone: checks are cached by schema."""
    from engine.validate import _params_fast_valid

    class Plugin:
        params_schema: dict[str, object] = {"type": "object", "additionalProperties": False,
                                            "properties": {"argv": {"type": "array"}}}

    plugin = Plugin()
    assert not _params_fast_valid(plugin, {"path": "x"})
    plugin.params_schema = {"type": "object", "additionalProperties": False,
                            "properties": {"path": {"type": "string"}}}
    assert _params_fast_valid(plugin, {"path": "x"})
