"""Parser for the expected-failure / skip data files.

File format (one entry per line; blank lines and lines starting with ``#``
are ignored)::

    PATTERN  # reason
    skip: PATTERN  # reason
    flaky: PATTERN  # reason

``PATTERN`` is a test id ``module.Class.test_method`` (module without the
``test.test_asyncio.`` prefix), an ``fnmatch`` glob over test ids
(``test_events.TargetEventLoopTests.test_create_*_connection*``), or a
prefix naming a whole class or module (``test_sendfile.TargetSendfileTests``)
which matches every test id below it.

A plain entry is an *expected failure*: the test runs, and its failing is
not a regression; when every test it matches passes, the entry is reported
as stale. A ``flaky:`` entry is the same except that it is never reported
as stale (the test sometimes passes). A ``skip:`` entry is not run at all
(hangs, crashes the interpreter, or is too slow for CI); use it sparingly.

Every entry needs a reason after `` # ``; a missing reason or one starting
with ``TODO`` is a format error.
"""

import fnmatch
import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))


class FormatError(ValueError):
    pass


class Entry:
    __slots__ = ('pattern', 'reason', 'skip', 'flaky', 'source', 'lineno')

    def __init__(self, pattern, reason, skip, source, lineno, flaky=False):
        self.pattern = pattern
        self.reason = reason
        self.skip = skip
        self.flaky = flaky
        self.source = source
        self.lineno = lineno

    @property
    def module(self):
        return self.pattern.split('.', 1)[0]

    def matches(self, test_id):
        return (test_id == self.pattern
                or test_id.startswith(self.pattern + '.')
                or fnmatch.fnmatchcase(test_id, self.pattern))

    def where(self):
        return f'{os.path.basename(self.source)}:{self.lineno}'

    def __repr__(self):
        kind = 'skip: ' if self.skip else 'flaky: ' if self.flaky else ''
        return f'{kind}{self.pattern}  # {self.reason}'


_LINE_RE = re.compile(r'^(?:(?P<kind>skip|flaky):\s*)?(?P<pattern>\S+)'
                      r'\s+#\s*(?P<reason>.*)$')


def parse_file(path, *, force_skip=False):
    entries = []
    if not os.path.exists(path):
        return entries
    with open(path, encoding='utf-8') as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.strip()
            if not line or line.startswith('#'):
                continue
            m = _LINE_RE.match(line)
            if not m:
                raise FormatError(
                    f'{path}:{lineno}: expected "[skip: |flaky: ]PATTERN  '
                    f'# reason", got {line!r}')
            reason = m.group('reason').strip()
            if not reason or reason.upper().startswith('TODO'):
                raise FormatError(f'{path}:{lineno}: entry {line!r} has no '
                                  f'reason; every entry must say why')
            kind = m.group('kind')
            entries.append(Entry(m.group('pattern'), reason,
                                 kind == 'skip' or force_skip,
                                 path, lineno, flaky=kind == 'flaky'))
    return entries


def expected_path(loop):
    return os.path.join(HERE, f'expected_{loop}.txt')


def slow_path():
    return os.path.join(HERE, 'slow.txt')


def load(loop, *, run_slow=False):
    """All entries for *loop*: its expected file plus slow.txt (as skips)."""
    entries = parse_file(expected_path(loop))
    if not run_slow:
        entries += parse_file(slow_path(), force_skip=True)
    return entries


def first_match(entries, test_id):
    for e in entries:
        if e.matches(test_id):
            return e
    return None
