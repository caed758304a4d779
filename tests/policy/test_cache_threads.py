"""The verdict caches are safe when many threads decide at once.

Before: ``Decider.decide`` did ``get`` then ``move_to_end`` on an ``OrderedDict`` while another
thread could evict the same key (``popitem``): with a tiny switch interval, threads died with
``KeyError``. A small cache makes evictions constant, the worst case for that race.
"""

from __future__ import annotations

import sys
import threading

from pgwarden.policy.catalog import builtin_catalog
from pgwarden.policy.decision import Decider
from pgwarden.policy.language import PolicyDocument, Rule


def test_many_threads_deciding_through_a_small_cache_never_fail() -> None:
    policy = PolicyDocument(rules=[Rule(name="all", target="main")])
    decider = Decider(policy, version="v1", cache_size=8)
    catalog = builtin_catalog()
    texts = [f"SELECT {i}" for i in range(32)]
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(300):
                for sql in texts:
                    verdict = decider.decide(sql, subject="agent", groups=(), target="main", catalog=catalog)
                    assert verdict.allowed, verdict.reasons
        except BaseException as exc:  # any failure in any thread fails the test
            errors.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=work) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors, repr(errors[:3])
    assert len(decider._cache) <= 8
