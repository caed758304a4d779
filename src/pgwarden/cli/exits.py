"""One table of exit codes, the same in every ``pgwarden`` command and in the docs.

====  ==============================================================================
0     success (check: the statement is allowed; verify: the journal is intact)
1     the command ran and its answer is "no" (check: denied; verify: tampering found;
      replay: differences; approvals: the decision was refused)
2     bad usage, or an invalid / unreadable configuration file or argument
3     could not run: a target, the approval store or the journal cannot be reached
4     held: the statement needs a human's approval (check), or the request is pending
====  ==============================================================================
"""

from __future__ import annotations

OK = 0
NO = 1
USAGE = 2
UNAVAILABLE = 3
HELD = 4

EPILOG = """exit codes (every command):
  0  success (check: allowed)
  1  the answer is "no" (check: denied; audit verify: tampering; audit replay: differences)
  2  bad usage, or an invalid or unreadable configuration file
  3  could not run: a target, the approval store or the journal is unreachable
  4  held: needs a human's approval (check), or the request is still pending
"""
