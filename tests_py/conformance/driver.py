"""Run one CPython ``test.test_asyncio`` module against a given event loop.

Meant to run in its own interpreter (the pytest side, ``harness.py``, starts
one subprocess per module so a crash or hang cannot take pytest down)::

    python tests_py/conformance/driver.py --loop turboloop --module test_tasks

Before the CPython test module is imported, asyncio's default policy class
is replaced by a subclass of the loop under test's policy, so everything that
goes through the policy (``asyncio.new_event_loop()``, ``asyncio.run()``,
``asyncio.Runner``, ``IsolatedAsyncioTestCase``, and the policy resets in
CPython's tearDowns) gets the loop under test, and so does
``asyncio.EventLoop`` (3.13+). Loop-parametrised mixins get generated
subclasses whose ``create_event_loop`` / ``new_loop`` return the loop under
test (see ``conformance_config.py``). Every loop created through either path
is counted, so the harness can prove the loop under test really ran.

Output: one JSON object per line in ``--results FILE`` (written as the run
goes, so a crash/hang still leaves the results so far), and at the end a
JSON summary on stdout after a ``=== CONFORMANCE RESULTS ===`` marker line:
``{"module":..., "loop":..., "loops_created": {...}, "results":
{test_id: {"outcome": pass|fail|error|skip|xfail|xpass, "reason": ...}}}``.
"""

import argparse
import errno
import faulthandler
import importlib
import ipaddress
import json
import os
import sys
import time
import traceback
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import conformance_config as config  # noqa: E402
import conformance_expectations as expectations  # noqa: E402

PKG = 'test.test_asyncio'
RESULTS_MARKER = '=== CONFORMANCE RESULTS ==='

# test.support resources: everything a regrtest "-u all" run would enable,
# except the ones that need the real internet or hardware we don't have.
ALLOWED_RESOURCES = ['cpu', 'decimal', 'subprocess', 'walltime', 'tzdata',
                     'curses']


class LoopSpec:
    def __init__(self, name, loop_class, policy_class, new_event_loop):
        self.name = name
        self.loop_class = loop_class
        self.policy_class = policy_class
        self.new_event_loop = new_event_loop


def load_loop_spec(name):
    if name == 'asyncio':
        import asyncio
        return LoopSpec(name, asyncio.SelectorEventLoop,
                        _stock_default_policy(), asyncio.SelectorEventLoop)
    if name == 'uvloop':
        import uvloop
        return LoopSpec(name, uvloop.Loop, uvloop.EventLoopPolicy,
                        uvloop.new_event_loop)
    if name == 'turboloop':
        import turboloop
        return LoopSpec(name, turboloop.Loop, turboloop.EventLoopPolicy,
                        turboloop.new_event_loop)
    raise SystemExit(f'unknown loop {name!r}; choose from {config.LOOPS}')


class LoopCounter:
    """Counts loops created through the policy and through the factory."""

    def __init__(self, spec):
        self.spec = spec
        self.counts = {'policy': 0, 'factory': 0, 'other_type': 0}
        self.other_types = set()

    def record(self, loop, how):
        if isinstance(loop, self.spec.loop_class):
            self.counts[how] += 1
        else:
            self.counts['other_type'] += 1
            self.other_types.add(type(loop).__qualname__)
        return loop

    def factory(self):
        return self.record(self.spec.new_event_loop(), 'factory')

    def snapshot(self):
        return dict(self.counts, other_types=sorted(self.other_types))

    def total(self):
        return self.counts['policy'] + self.counts['factory']


def _stock_default_policy():
    # asyncio's own default policy, under a name that does not warn (the
    # public asyncio.DefaultEventLoopPolicy does from 3.14 on).
    from asyncio import unix_events
    return getattr(unix_events, '_DefaultEventLoopPolicy', None) or \
        unix_events.DefaultEventLoopPolicy


def set_policy(policy):
    """asyncio.set_event_loop_policy() without the deprecation warning it
    gives from 3.14 on (where asyncio uses events._set_event_loop_policy)."""
    from asyncio import events
    getattr(events, '_set_event_loop_policy',
            events.set_event_loop_policy)(policy)


def get_policy():
    from asyncio import events
    return getattr(events, '_get_event_loop_policy',
                   events.get_event_loop_policy)()


def install_policy(spec, counter):
    """Make the loop under test's policy the asyncio default policy (and,
    from 3.13 on, asyncio.EventLoop the loop under test's factory)."""
    import asyncio
    from asyncio import unix_events

    base = spec.policy_class

    class ConformancePolicy(base):
        def new_event_loop(self):
            return counter.record(super().new_event_loop(), 'policy')

    ConformancePolicy.__name__ = base.__name__
    ConformancePolicy.__qualname__ = base.__qualname__
    ConformancePolicy.__module__ = base.__module__

    # Resetting the policy (set_event_loop_policy(None)) instantiates the
    # default policy by name: up to 3.13 asyncio.DefaultEventLoopPolicy
    # ("from . import DefaultEventLoopPolicy"), from 3.14 on
    # unix_events._DefaultEventLoopPolicy, which asyncio's module
    # __getattr__ also returns (with its deprecation warning) for
    # asyncio.DefaultEventLoopPolicy and test_utils binds as
    # DefaultEventLoopPolicy. Replace whichever exist.
    if 'DefaultEventLoopPolicy' in vars(asyncio):
        asyncio.DefaultEventLoopPolicy = ConformancePolicy
    for name in ('DefaultEventLoopPolicy', '_DefaultEventLoopPolicy'):
        if hasattr(unix_events, name):
            setattr(unix_events, name, ConformancePolicy)
    set_policy(None)
    assert type(get_policy()) is ConformancePolicy
    # asyncio.EventLoop (3.13+), the platform's default loop class, is what
    # CPython's newer tests pass as loop_factory or call where older ones
    # went through the policy.
    if hasattr(asyncio, 'EventLoop'):
        asyncio.EventLoop = counter.factory
    return ConformancePolicy


_LOCAL_NAMES = {None, '', b'', 'localhost', b'localhost',
                'localhost.localdomain', 'ip6-localhost'}


def _is_local_host(host, *, numeric_ok):
    if host in _LOCAL_NAMES:
        return True
    if isinstance(host, bytes):
        host = host.decode('ascii', 'replace')
    if not isinstance(host, str):
        return True         # not an address we understand: let it through
    try:
        ip = ipaddress.ip_address(host.split('%', 1)[0])
    except ValueError:
        return False        # a host name: resolving it needs DNS
    if numeric_ok:
        return True         # resolving a numeric address sends nothing
    if getattr(ip, 'ipv4_mapped', None) is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_unspecified


def install_network_guard():
    """Refuse traffic that would leave the machine: connect()/sendto() to a
    non-loopback IP address and name resolution of non-local host names
    raise OSError(ENETUNREACH). (CPython's test_asyncio only uses the
    loopback interface; this makes sure nothing else slips through. Code
    that resolves or connects in C without Python's socket module, e.g.
    inside libuv, is not covered.)"""
    def hook(event, args):
        if event in ('socket.connect', 'socket.sendto'):
            addr = args[1]
            if (isinstance(addr, tuple) and addr
                    and not _is_local_host(addr[0], numeric_ok=False)):
                raise OSError(errno.ENETUNREACH,
                              f'conformance harness: no network outside '
                              f'loopback ({event} {addr!r})')
        elif event in ('socket.getaddrinfo', 'socket.gethostbyname',
                       'socket.gethostbyname_ex', 'socket.gethostbyaddr'):
            host = args[0] if args else None
            if not _is_local_host(host, numeric_ok=True):
                raise OSError(errno.ENETUNREACH,
                              f'conformance harness: no DNS ({event} '
                              f'{host!r})')
    sys.addaudithook(hook)


def short_id(test_or_id):
    tid = test_or_id if isinstance(test_or_id, str) else test_or_id.id()
    prefix = PKG + '.'
    if tid.startswith(prefix):
        tid = tid[len(prefix):]
    return tid


def holder_id(holder):
    # _ErrorHolder descriptions look like
    # "setUpClass (test.test_asyncio.test_x.Klass)" / "tearDownModule (...)"
    desc = holder.description
    if ' (' in desc and desc.endswith(')'):
        what, where = desc[:-1].split(' (', 1)
        return f'{short_id(where)}.{what}'
    return short_id(desc)


def summarize_exc(err, test=None):
    etype, value, _tb = err
    try:
        msg = str(value)
    except Exception:
        msg = '<unprintable>'
    msg = ' '.join(msg.split())
    reason = f'{etype.__name__}: {msg}' if msg else etype.__name__
    return reason[:300]


def format_exc(err, limit_chars=6000):
    text = ''.join(traceback.format_exception(*err))
    if len(text) > limit_chars:
        text = '...\n' + text[-limit_chars:]
    return text


# When several outcomes are reported for one test (e.g. failing subtests and
# an error in a cleanup), the worst one wins.
_RANK = {'pass': 0, 'xfail': 1, 'skip': 1, 'xpass': 2, 'fail': 3, 'error': 4}


class Recorder(unittest.TestResult):
    """Collects one outcome per test id and streams it as JSON lines."""

    def __init__(self, emit, counter, per_test_timeout, verbose=False):
        super().__init__()
        self.emit = emit
        self.counter = counter
        self.per_test_timeout = per_test_timeout
        self.verbose = verbose
        self.results = {}
        self._cur = None

    # -- helpers
    def _state(self, test):
        if isinstance(test, unittest.suite._ErrorHolder):
            return None
        return self._cur

    def _note(self, test, outcome, reason='', tb=''):
        st = self._state(test)
        if st is None:        # class/module fixture error: its own id
            tid = holder_id(test)
            rec = {'id': tid, 'outcome': outcome, 'reason': reason,
                   'traceback': tb, 'duration': 0.0}
            self._store(rec)
            return
        if _RANK[outcome] >= _RANK[st['outcome']]:
            st['outcome'] = outcome
        if reason:
            st['reason'] = (st['reason'] + ' | ' + reason
                            if st['reason'] else reason)[:600]
        if tb:
            st['traceback'] = (st['traceback'] + '\n' + tb)[-12000:]

    def _store(self, rec):
        self.results[rec['id']] = rec
        self.emit(dict(rec, event='result', loops=self.counter.snapshot()))
        if self.verbose:
            print(f"[{rec['outcome'].upper():5}] {rec['id']}"
                  + (f"  -- {rec['reason']}" if rec['reason'] else ''),
                  file=sys.__stderr__, flush=True)

    # -- unittest API
    def startTest(self, test):
        super().startTest(test)
        tid = short_id(test)
        self._cur = {'id': tid, 'outcome': 'pass', 'reason': '',
                     'traceback': '', 't0': time.monotonic()}
        self.emit({'event': 'start', 'id': tid})
        if self.per_test_timeout:
            faulthandler.dump_traceback_later(self.per_test_timeout,
                                              exit=True)

    def stopTest(self, test):
        if self.per_test_timeout:
            faulthandler.cancel_dump_traceback_later()
        super().stopTest(test)
        st = self._cur
        self._cur = None
        if st is not None:
            st['duration'] = round(time.monotonic() - st.pop('t0'), 3)
            self._store(st)

    def addError(self, test, err):
        self._note(test, 'error', summarize_exc(err), format_exc(err))

    def addFailure(self, test, err):
        self._note(test, 'fail', summarize_exc(err), format_exc(err))

    def addSkip(self, test, reason):
        self._note(test, 'skip', str(reason)[:300])

    def addExpectedFailure(self, test, err):
        self._note(test, 'xfail', summarize_exc(err))

    def addUnexpectedSuccess(self, test):
        self._note(test, 'xpass', 'unexpected success of a test marked '
                   '@unittest.expectedFailure')

    def addSubTest(self, test, subtest, err):
        if err is not None:
            kind = ('fail' if issubclass(err[0], test.failureException)
                    else 'error')
            self._note(test, kind,
                       f'{subtest._subDescription()}: {summarize_exc(err)}',
                       format_exc(err))

    def addSuccess(self, test):
        pass


def resolve(mod, dotted):
    if dotted.startswith('utils.'):
        from test.test_asyncio import utils as test_utils
        return getattr(test_utils, dotted.split('.', 1)[1])
    return getattr(mod, dotted)


def has_bases(mod, tdef):
    try:
        for b in tdef['bases']:
            resolve(mod, b)
    except AttributeError:
        return False
    return True


def make_target_class(mod, tdef, factory):
    bases = tuple(resolve(mod, b) for b in tdef['bases'])
    name = tdef['name']
    ns = {'__module__': mod.__name__, '__qualname__': name,
          '__doc__': f'{"/".join(tdef["bases"])} on the loop under test'}
    hook = tdef['hook']
    if hook == 'create_event_loop':
        ns['create_event_loop'] = lambda self: factory()
    elif hook == 'new_loop':
        ns['new_loop'] = lambda self: factory()
    elif hook == 'runners_new_loop':
        def new_loop(self):
            # test_runners.BaseTest.new_loop() returns a mocked BaseEventLoop
            # that records whether shutdown_asyncgens() ran; do the same
            # bookkeeping around the loop under test.
            loop = factory()
            real_shutdown_asyncgens = loop.shutdown_asyncgens
            loop.shutdown_ag_run = False

            async def shutdown_asyncgens():
                loop.shutdown_ag_run = True
                await real_shutdown_asyncgens()
            loop.shutdown_asyncgens = shutdown_asyncgens
            return loop
        ns['new_loop'] = new_loop
    elif hook != 'setup_loop':
        raise ValueError(f'unknown hook {hook!r}')
    cls = type(name, bases, ns)
    if hook == 'setup_loop':
        def setUp(self):
            # A fresh default policy (i.e. the loop under test's policy):
            # earlier tests may have left e.g. a mock child watcher installed
            # (test_subprocess.GenericWatcherTests does).
            set_policy(None)
            super(cls, self).setUp()
            self.loop = factory()
            if hasattr(self, 'set_event_loop'):
                self.set_event_loop(self.loop)
            else:       # a plain unittest.TestCase
                self.addCleanup(self.loop.close)
        cls.setUp = setUp
    if hasattr(mod, name):
        raise RuntimeError(f'{mod.__name__} already defines {name}')
    setattr(mod, name, cls)
    return cls


def patch_new_test_loop(factory, keep=()):
    """test_utils.TestCase.new_test_loop() without a time generator gives
    the loop under test instead of the fake-clock TestLoop, except in test
    classes (any class in the MRO) or test methods named in *keep*."""
    from test.test_asyncio import utils as test_utils
    orig = test_utils.TestCase.new_test_loop
    keep = frozenset(keep)

    def new_test_loop(self, gen=None):
        if (gen is not None or self._testMethodName in keep
                or any(c.__name__ in keep for c in type(self).__mro__)):
            return orig(self, gen)
        loop = factory()
        self.set_event_loop(loop)
        return loop

    test_utils.TestCase.new_test_loop = new_test_loop


def patch_close_loop():
    """test_utils.TestCase.close_loop() reads the private BaseEventLoop
    attribute ``_default_executor``. Loops that are not BaseEventLoop
    subclasses (uvloop) lack it, which would turn every test's cleanup into
    an error; for those, shut the default executor down through the public
    API instead. Loops that have the attribute get CPython's code unchanged.
    """
    from test.test_asyncio import utils as test_utils
    orig = test_utils.TestCase.close_loop

    class _NoExecutor:
        _default_executor = None

    def close_loop(loop):
        if hasattr(loop, '_default_executor'):
            return orig(loop)
        if not loop.is_closed():
            loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
        # the child-watcher bookkeeping of the original
        shadow = _NoExecutor()
        shadow.close = lambda: None
        return orig(shadow)

    test_utils.TestCase.close_loop = staticmethod(close_loop)


def iter_tests(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from iter_tests(t)
        else:
            yield t


def build_tests(mod, modcfg, factory):
    loader = unittest.TestLoader()
    drop = set(modcfg.get('drop', ()))
    classes = []
    for name, obj in list(vars(mod).items()):
        if (isinstance(obj, type) and issubclass(obj, unittest.TestCase)
                and obj.__module__ == mod.__name__ and name not in drop):
            classes.append(obj)
    for tdef in modcfg.get('targets', ()):
        if tdef.get('optional') and not has_bases(mod, tdef):
            continue
        classes.append(make_target_class(mod, tdef, factory))
    tests = []
    for cls in classes:
        tests.extend(iter_tests(loader.loadTestsFromTestCase(cls)))
    if loader.errors:
        raise RuntimeError('test loading failed:\n' + '\n'.join(loader.errors))
    return tests


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--loop', default=os.environ.get('CONFORMANCE_LOOP',
                                                     config.DEFAULT_LOOP),
                    choices=config.LOOPS)
    ap.add_argument('--module', required=True, choices=sorted(config.MODULES))
    ap.add_argument('--results', help='append JSON lines to this file')
    ap.add_argument('--exclude-file',
                    help='file with test ids (one a line) not to run '
                         '(used by the harness to resume after a crash)')
    ap.add_argument('--only', action='append', default=[],
                    help='run only test ids matching this glob/prefix '
                         '(repeatable)')
    ap.add_argument('--no-skips', action='store_true',
                    help='ignore "skip:" entries and slow.txt')
    ap.add_argument('--run-slow', action='store_true',
                    default=bool(os.environ.get('CONFORMANCE_RUN_SLOW')),
                    help='also run tests listed in slow.txt')
    ap.add_argument('--per-test-timeout', type=float,
                    default=config.PER_TEST_TIMEOUT)
    ap.add_argument('--allow-network', action='store_true',
                    help='do not install the audit hook that refuses '
                         'non-loopback connections and DNS look-ups')
    ap.add_argument('-v', '--verbose', action='store_true')
    args = ap.parse_args(argv)

    faulthandler.enable()
    if not args.allow_network:
        install_network_guard()
    out = open(args.results, 'w', buffering=1) if args.results else None

    def emit(rec):
        if out is not None:
            out.write(json.dumps(rec) + '\n')
            out.flush()

    modcfg = config.MODULES[args.module]
    spec = load_loop_spec(args.loop)
    counter = LoopCounter(spec)
    install_policy(spec, counter)

    from test import support
    support.use_resources = list(ALLOWED_RESOURCES)
    support.verbose = 0

    emit({'event': 'begin', 'module': args.module, 'loop': args.loop,
          'pid': os.getpid()})
    results = {}
    try:
        mod = importlib.import_module(f'{PKG}.{args.module}')
    except unittest.SkipTest as exc:
        rec = {'id': f'{args.module}', 'outcome': 'skip',
               'reason': f'module skipped: {exc}', 'traceback': '',
               'duration': 0.0}
        emit(dict(rec, event='result'))
        results[rec['id']] = rec
        tests = []
    else:
        patch_close_loop()
        if modcfg.get('real_test_loop'):
            patch_new_test_loop(counter.factory,
                                modcfg.get('keep_test_loop', ()))
        tests = build_tests(mod, modcfg, counter.factory)

    entries = ([] if args.no_skips else
               [e for e in expectations.load(args.loop,
                                             run_slow=args.run_slow)
                if e.skip])
    excluded = set()
    if args.exclude_file:
        with open(args.exclude_file) as f:
            excluded = {line.strip() for line in f if line.strip()}

    to_run = []
    for t in tests:
        tid = short_id(t)
        if tid in excluded:
            continue
        if args.only and not any(
                expectations.Entry(p, '', False, '', 0).matches(tid)
                for p in args.only):
            continue
        e = expectations.first_match(entries, tid)
        if e is not None:
            rec = {'id': tid, 'outcome': 'skip',
                   'reason': f'conformance skip ({e.where()}): {e.reason}',
                   'traceback': '', 'duration': 0.0}
            emit(dict(rec, event='result'))
            results[tid] = rec
            continue
        to_run.append(t)

    recorder = Recorder(emit, counter, args.per_test_timeout, verbose=args.verbose)
    t0 = time.monotonic()
    # A top-level TestSuite.run() also runs setUpModule/tearDownModule and the
    # class fixtures.
    unittest.TestSuite(to_run).run(recorder)
    elapsed = round(time.monotonic() - t0, 2)
    results.update(recorder.results)

    summary = {'module': args.module, 'loop': args.loop,
               'loops_created': dict(counter.counts),
               'loops_created_total': counter.total(),
               'other_loop_types': sorted(counter.other_types),
               'elapsed': elapsed,
               'results': {tid: {'outcome': r['outcome'],
                                 'reason': r['reason']}
                           for tid, r in sorted(results.items())}}
    emit({'event': 'end', 'loops_created': summary['loops_created'],
          'loops_created_total': summary['loops_created_total'],
          'other_loop_types': summary['other_loop_types'],
          'elapsed': elapsed})
    if out is not None:
        out.close()
    sys.stdout.flush()
    print(RESULTS_MARKER)
    print(json.dumps(summary, indent=1))
    sys.stdout.flush()
    # Normal interpreter shutdown on purpose: if the loop under test crashes
    # at exit, the harness reports it (the results above are kept).


if __name__ == '__main__':
    main()
