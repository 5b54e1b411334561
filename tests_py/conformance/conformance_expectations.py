"""Parser for the expected-failure / skip data files.

File format (one entry per line; blank lines and lines starting with ``#``
are ignored)::

    PATTERN  # reason
    skip: PATTERN  # reason
    flaky: PATTERN  # reason
    py>=3.13: [skip: |flaky: ]PATTERN  # reason

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

An entry with a ``py`` qualifier applies only to the Python versions it
names: comma-separated conditions that must all hold, each an operator
(``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=``) and a version compared with
as many components of the running version as it has (``py==3.13`` is any
3.13.x, ``py<3.14`` is 3.13.x and below, ``py>=3.13,<3.15``). An entry that
does not apply is neither used nor checked for staleness.

Every entry needs a reason after `` # ``; a missing reason or one starting
with ``TODO`` is a format error.
"""

import fnmatch
import operator
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


class FormatError(ValueError):
    pass


_OPERATORS = {'==': operator.eq, '!=': operator.ne, '<=': operator.le,
              '>=': operator.ge, '<': operator.lt, '>': operator.gt}
_CONDITION_RE = re.compile(r'(==|!=|<=|>=|<|>)(\d+(?:\.\d+){0,2})$')


def parse_versions(text):
    """``'>=3.13,<3.15'`` -> ``[('>=', (3, 13)), ('<', (3, 15))]``."""
    conditions = []
    for part in text.split(','):
        m = _CONDITION_RE.match(part)
        if not m:
            raise ValueError(f'bad version condition {part!r}')
        conditions.append(
            (m.group(1), tuple(int(n) for n in m.group(2).split('.'))))
    return conditions


class Entry:
    __slots__ = ('pattern', 'reason', 'skip', 'flaky', 'source', 'lineno',
                 'versions', 'conditions')

    def __init__(self, pattern, reason, skip, source, lineno, flaky=False,
                 versions=''):
        self.pattern = pattern
        self.reason = reason
        self.skip = skip
        self.flaky = flaky
        self.source = source
        self.lineno = lineno
        self.versions = versions    # the py qualifier's text; '' = all
        self.conditions = parse_versions(versions) if versions else []

    def applies(self, version=sys.version_info):
        """Whether the entry is for *version* (default: the running one)."""
        return all(_OPERATORS[op](tuple(version[:len(v)]), v)
                   for op, v in self.conditions)

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
        py = f'py{self.versions}: ' if self.versions else ''
        kind = 'skip: ' if self.skip else 'flaky: ' if self.flaky else ''
        return f'{py}{kind}{self.pattern}  # {self.reason}'


_LINE_RE = re.compile(r'^(?:py(?P<versions>[<>=!]\S*?):\s*)?'
                      r'(?:(?P<kind>skip|flaky):\s*)?(?P<pattern>\S+)'
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
                    f'{path}:{lineno}: expected "[pyVERSIONS: ][skip: |'
                    f'flaky: ]PATTERN  # reason", got {line!r}')
            reason = m.group('reason').strip()
            if not reason or reason.upper().startswith('TODO'):
                raise FormatError(f'{path}:{lineno}: entry {line!r} has no '
                                  f'reason; every entry must say why')
            kind = m.group('kind')
            try:
                entries.append(Entry(m.group('pattern'), reason,
                                     kind == 'skip' or force_skip,
                                     path, lineno, flaky=kind == 'flaky',
                                     versions=m.group('versions') or ''))
            except ValueError as exc:
                raise FormatError(f'{path}:{lineno}: {exc} in {line!r}') \
                    from None
    return entries


def expected_path(loop):
    return os.path.join(HERE, f'expected_{loop}.txt')


def slow_path():
    return os.path.join(HERE, 'slow.txt')


def load(loop, *, run_slow=False):
    """The entries for *loop* that apply to the running Python: its expected
    file plus slow.txt (as skips)."""
    entries = parse_file(expected_path(loop))
    if not run_slow:
        entries += parse_file(slow_path(), force_skip=True)
    return [e for e in entries if e.applies()]


def first_match(entries, test_id):
    for e in entries:
        if e.matches(test_id):
            return e
    return None
