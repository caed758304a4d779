"""What one session knows that the text alone does not: its prepared statements and cursors.

Both doors keep one :class:`SessionState` per client session. A verdict carries the effects
of its text (:mod:`pgwarden.policy.effects`); after the text ran, :meth:`SessionState.apply`
records the effects of the statements that completed — whatever happened after them, since
``PREPARE`` is not transactional and survives a later failure. Where the outcome cannot be
known from the text alone (a failed text that declared cursors, a transaction that ended),
the door asks the server (:data:`RECONCILE_SQL`) and :meth:`SessionState.reconcile` makes the
gateway's knowledge match it: a name the server holds but the gateway cannot vouch for becomes
unusable (its ``EXECUTE`` / ``FETCH`` is refused as unknown until it is dropped and made again).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pgwarden.policy.analysis import StatementAnalysis
from pgwarden.policy.effects import ALL, StatementEffects
from pgwarden.policy.sql import NO_SESSION, SessionFacts

__all__ = ["RECONCILE_SQL", "SessionState"]

# One round trip: the SQL-level prepared statements and the open cursors of this backend.
RECONCILE_SQL = (b"SELECT 'p', name FROM pg_catalog.pg_prepared_statements WHERE from_sql "
                 b"UNION ALL SELECT 'c', name FROM pg_catalog.pg_cursors")


@dataclass
class SessionState:
    prepared: dict[str, StatementAnalysis] = field(default_factory=dict)
    cursors: dict[str, StatementAnalysis] = field(default_factory=dict)
    unusable: set[str] = field(default_factory=set)  # names the server holds that the gateway cannot vouch for

    def facts(self) -> SessionFacts:
        if not self.prepared and not self.cursors:
            return NO_SESSION
        return SessionFacts(prepared=dict(self.prepared), cursors=dict(self.cursors))

    @staticmethod
    def needs_reconcile(effects: Iterable[StatementEffects], *, failed: bool) -> bool:
        """Whether the server must be asked what exists after a text with these effects."""
        for e in effects:
            if e.declares or e.closes or e.ends_transaction or (failed and (e.prepares or e.deallocates)):
                return True
        return False

    def apply(self, effects: Iterable[StatementEffects], completed: int) -> None:
        """Record the effects of the statements with index < ``completed`` (those that ran)."""
        for e in effects:
            if e.index >= completed:
                break
            if e.prepares and e.analysis is not None:
                self.prepared[e.prepares] = e.analysis
                self.unusable.discard(e.prepares)
            elif e.deallocates:
                if e.deallocates == ALL:
                    self.prepared.clear()
                else:
                    self.prepared.pop(e.deallocates, None)
            elif e.declares and e.analysis is not None:
                self.cursors[e.declares] = e.analysis
            elif e.closes:
                if e.closes == ALL:
                    self.cursors.clear()
                else:
                    self.cursors.pop(e.closes, None)

    def reconcile(self, server_prepared: set[str], server_cursors: set[str],
                  touched: Iterable[StatementEffects] = ()) -> None:
        """Make the gateway's names match the server's; names a failed text touched become unusable."""
        doubtful = {n for e in touched for n in (e.prepares, e.declares) if n}
        for name in list(self.prepared):
            if name not in server_prepared:
                del self.prepared[name]
        for name in list(self.cursors):
            if name not in server_cursors:
                del self.cursors[name]
        for name in doubtful:
            # The text failed: the object may exist with a body other than the one analysed.
            if name in server_prepared and name in self.prepared and self.prepared[name] is not None:
                continue
            self.prepared.pop(name, None)
            self.cursors.pop(name, None)
        self.unusable = {n for n in server_prepared | server_cursors if n not in self.prepared
                         and n not in self.cursors}

    def clear(self) -> None:
        self.prepared.clear()
        self.cursors.clear()
        self.unusable.clear()
