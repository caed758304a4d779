"""View lineage belongs to the catalog snapshot it came from, and its recursion guard to one walk.

Before: a process-wide ``ViewLineage`` kept its cache across catalog reloads and shared one
recursion guard between threads, so analysing a view from several threads on fresh catalogs
reported "recursive view" for most calls.
"""

from __future__ import annotations

import threading

from pgwarden.policy.catalog import Catalog, Column, Relation
from pgwarden.policy.sql import analyse


def _catalog(version: str) -> Catalog:
    base = Relation("public", "t", "r", (Column("c1", 1, "text"), Column("c2", 2, "text")), oid=100)
    view = Relation("public", "v", "v", (Column("c1", 1, "text"),), oid=101,
                    view_sql="SELECT c1 FROM public.t")
    return Catalog(relations={("public", "t"): base, ("public", "v"): view}, functions={},
                   version=version, complete=True)


def test_views_analysed_from_many_threads_on_fresh_catalogs_are_never_called_recursive() -> None:
    failures: list[str] = []

    def work(n: int) -> None:
        for i in range(250):
            analysis = analyse("SELECT c1 FROM v", _catalog(f"v{n}-{i}"))
            unknown = [u for st in analysis.statements for u in st.unknown]
            if unknown:
                failures.extend(unknown)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:3]


def test_view_lineage_lives_on_its_snapshot_and_a_reload_sees_the_new_definition() -> None:
    old = _catalog("one")
    analyse("SELECT c1 FROM v", old)
    assert old.memo["views"]  # computed and kept on the snapshot it came from
    base = old.relations[("public", "t")]
    view = Relation("public", "v", "v", (Column("c1", 1, "text"),), oid=101, view_sql="SELECT c2 AS c1 FROM public.t")
    new = Catalog(relations={("public", "t"): base, ("public", "v"): view}, functions={}, version="two",
                  complete=True)
    [st] = analyse("SELECT c1 FROM v", new).statements
    assert {str(s) for s in st.outputs[0].sources} == {"public.t.c2"}
    assert "views" not in _catalog("three").memo


def test_a_really_recursive_view_is_still_refused() -> None:
    loop = Relation("public", "w", "v", (Column("x", 1, "text"),), oid=102, view_sql="SELECT x FROM public.w")
    cat = Catalog(relations={("public", "w"): loop}, functions={}, version="loop", complete=True)
    [st] = analyse("SELECT x FROM w", cat).statements
    assert any("recursive view" in u for u in st.unknown)
