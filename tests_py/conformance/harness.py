"""Parent side of the conformance runner: run modules in subprocesses (with
crash/hang recovery) and compare the outcomes with the expected-failure list.

Used by ``tests_py/test_conformance.py``; also a CLI::

    python tests_py/conformance/harness.py                 # all modules, turboloop
    python tests_py/conformance/harness.py --loop uvloop -m test_tasks -m test_locks
    python tests_py/conformance/harness.py --loop asyncio --jobs 2 --suggest
"""

import argparse
import importlib.util
import json
import os
import pkgutil
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import conformance_config as config  # noqa: E402
import conformance_expectations as expectations  # noqa: E402

DRIVER = os.path.join(HERE, 'driver.py')
FAILING = frozenset({'fail', 'error', 'xpass', 'crash', 'timeout'})
MAX_RESTARTS = 4

# Environment variables that would change how the CPython tests behave; the
# driver runs with them removed so results are reproducible.
_SCRUB_ENV = ('PYTHONWARNINGS', 'PYTHONASYNCIODEBUG', 'PYTHONDEVMODE',
              'PYTHONMALLOC', 'PYTEST_ADDOPTS', 'PYTEST_CURRENT_TEST')


def selected_loop():
    loop = os.environ.get('CONFORMANCE_LOOP', config.DEFAULT_LOOP)
    if loop not in config.LOOPS:
        raise ValueError(f'CONFORMANCE_LOOP={loop!r}: choose from '
                         f'{config.LOOPS}')
    return loop


def shipped_modules():
    """The ``test_*`` modules of this interpreter's test.test_asyncio (they
    differ between CPython versions), or None if its test suite is not
    installed."""
    try:
        spec = importlib.util.find_spec('test.test_asyncio')
    except ImportError:
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return sorted(name for _, name, _ in
                  pkgutil.iter_modules(spec.submodule_search_locations)
                  if name.startswith('test_'))


def default_modules():
    """The modules of MODULES this interpreter ships; all of them if it has
    no test suite (each then fails saying so)."""
    shipped = shipped_modules()
    return [m for m in config.MODULES if shipped is None or m in shipped]


def selected_modules():
    names = os.environ.get('CONFORMANCE_MODULES', '').replace(',', ' ').split()
    available = default_modules()
    if not names:
        return available
    bad = [n for n in names if n not in config.MODULES]
    if bad:
        raise ValueError(f'CONFORMANCE_MODULES: unknown modules {bad}')
    absent = [n for n in names if n not in available]
    if absent:
        raise ValueError(f'CONFORMANCE_MODULES: {absent} are not in this '
                         f'Python\'s test.test_asyncio')
    return names


def timeout_factor():
    return float(os.environ.get('CONFORMANCE_TIMEOUT_FACTOR', '1'))


class ModuleRun:
    def __init__(self, loop, module):
        self.loop = loop
        self.module = module
        self.results = {}           # id -> dict(outcome, reason, traceback)
        self.loops_created = {'policy': 0, 'factory': 0, 'other_type': 0}
        self.other_loop_types = set()
        self.elapsed = 0.0
        self.attempts = 0
        self.notes = []             # human-readable remarks about the run
        self.stderr_tail = ''

    @property
    def loops_created_total(self):
        return self.loops_created['policy'] + self.loops_created['factory']

    def counts(self):
        c = {'pass': 0, 'fail': 0, 'skip': 0}
        for r in self.results.values():
            o = r['outcome']
            if o in FAILING:
                c['fail'] += 1
            elif o == 'skip':
                c['skip'] += 1
            else:
                c['pass'] += 1
        return c


def _tail(path, nbytes=6000):
    try:
        with open(path, 'rb') as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - nbytes))
            return f.read().decode('utf-8', 'replace')
    except OSError:
        return ''


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def run_module(loop, module, *, timeout=None, run_slow=False,
               workdir=None, extra_args=()):
    """Run *module* against *loop* in a driver subprocess.

    If the driver dies (crash, or the per-test watchdog fired) the test that
    was running is recorded as 'crash' / 'timeout' and the driver is started
    again without the tests already done, up to MAX_RESTARTS times.
    """
    run = ModuleRun(loop, module)
    modcfg = config.MODULES[module]
    if timeout is None:
        timeout = modcfg['timeout'] * timeout_factor()
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB_ENV}
    env['PYTHONFAULTHANDLER'] = '1'
    if run_slow:
        env['CONFORMANCE_RUN_SLOW'] = '1'
    own_tmp = workdir is None
    if own_tmp:
        tmp = tempfile.TemporaryDirectory(prefix=f'conf-{loop}-{module}-')
        workdir = tmp.name
    os.makedirs(workdir, exist_ok=True)
    t_start = time.monotonic()
    deadline = t_start + timeout
    try:
        while True:
            run.attempts += 1
            n = run.attempts
            excl = os.path.join(workdir, f'exclude.{n}.txt')
            with open(excl, 'w') as f:
                f.write('\n'.join(sorted(run.results)) + '\n')
            res_path = os.path.join(workdir, f'results.{n}.jsonl')
            out_path = os.path.join(workdir, f'stdout.{n}.txt')
            err_path = os.path.join(workdir, f'stderr.{n}.txt')
            cmd = [sys.executable, DRIVER, '--loop', loop, '--module', module,
                   '--results', res_path, '--exclude-file', excl,
                   *extra_args]
            if run_slow:
                cmd.append('--run-slow')
            timed_out = False
            with open(out_path, 'wb') as fo, open(err_path, 'wb') as fe:
                # Own session/process group, so a hang can be killed together
                # with any children the tests spawned.
                proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                        stdout=fo, stderr=fe, env=env,
                                        cwd=workdir, start_new_session=True)
                try:
                    rc = proc.wait(timeout=max(1.0,
                                               deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    timed_out = True
                    _kill_group(proc)
                    rc = proc.returncode
            # Make sure nothing the driver spawned outlives it.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            stderr_tail = _tail(err_path)
            run.stderr_tail = stderr_tail

            ended = False
            current = None
            started_any = False
            loops = None      # last loop-count snapshot of this attempt
            if os.path.exists(res_path):
                with open(res_path, encoding='utf-8') as f:
                    for line in f:
                        try:
                            ev = json.loads(line)
                        except ValueError:
                            continue  # torn last line
                        kind = ev.get('event')
                        if kind == 'start':
                            current = ev['id']
                            started_any = True
                        elif kind == 'result':
                            rec = {k: ev.get(k, '') for k in
                                   ('outcome', 'reason', 'traceback',
                                    'duration')}
                            run.results[ev['id']] = rec
                            if ev['id'] == current:
                                current = None
                            loops = ev.get('loops', loops)
                        elif kind == 'end':
                            ended = True
                            loops = dict(ev['loops_created'],
                                         other_types=ev.get(
                                             'other_loop_types', ()))
            if loops:
                for k in ('policy', 'factory', 'other_type'):
                    run.loops_created[k] += loops.get(k, 0)
                run.other_loop_types.update(loops.get('other_types', ()))
            if ended:
                if rc != 0:
                    run.results[f'{module}.<interpreter-shutdown>'] = {
                        'outcome': 'crash',
                        'reason': f'driver exited with status {rc} after '
                                  f'all tests had finished',
                        'traceback': stderr_tail[-3000:], 'duration': 0.0}
                break
            # The driver did not finish.
            if timed_out:
                why = (f'module time limit ({timeout:.0f}s) exceeded; '
                       f'driver killed')
                outcome = 'timeout'
            elif 'Timeout (' in stderr_tail:
                why = (f'test ran longer than the per-test watchdog '
                       f'({config.PER_TEST_TIMEOUT:.0f}s); hang?')
                outcome = 'timeout'
            else:
                why = f'driver died with status {rc}'
                if rc is not None and rc < 0:
                    try:
                        why += f' ({signal.Signals(-rc).name})'
                    except ValueError:
                        pass
                outcome = 'crash'
            if current is not None:
                run.results[current] = {'outcome': outcome, 'reason': why,
                                        'traceback': stderr_tail[-4000:],
                                        'duration': 0.0}
                run.notes.append(f'attempt {n}: {current}: {why}')
            else:
                tid = f'{module}.<driver>'
                run.results[tid] = {
                    'outcome': outcome,
                    'reason': why + (' before running any test'
                                     if not started_any else
                                     ' between tests (fixture?)'),
                    'traceback': stderr_tail[-4000:], 'duration': 0.0}
                run.notes.append(f'attempt {n}: {why}')
                break
            if timed_out:
                run.notes.append('module time limit exhausted; remaining '
                                 'tests not run')
                run.results[f'{module}.<time-limit>'] = {
                    'outcome': 'timeout', 'reason': why,
                    'traceback': '', 'duration': 0.0}
                break
            if n > MAX_RESTARTS:
                run.results[f'{module}.<too-many-crashes>'] = {
                    'outcome': 'crash',
                    'reason': f'driver died {n} times; remaining tests '
                              f'not run', 'traceback': '', 'duration': 0.0}
                break
    finally:
        run.elapsed = round(time.monotonic() - t_start, 1)
        if own_tmp:
            tmp.cleanup()
    return run


class Comparison:
    def __init__(self, run, entries):
        self.run = run
        mod = run.module
        self.entries = [e for e in entries
                        if e.module == mod and not e.skip]
        self.unexpected = {}    # id -> rec
        self.expected_failures = {}   # id -> (rec, entry)
        for tid, rec in sorted(run.results.items()):
            if rec['outcome'] not in FAILING:
                continue
            e = expectations.first_match(self.entries, tid)
            if e is None:
                self.unexpected[tid] = rec
            else:
                self.expected_failures[tid] = (rec, e)
        # Entries that no longer describe a failure.
        self.stale = []         # (entry, why)
        for e in self.entries:
            if e.flaky:
                continue
            matched = [tid for tid in run.results if e.matches(tid)]
            if not matched:
                self.stale.append((e, 'matches no test that ran'))
            elif not any(run.results[t]['outcome'] in FAILING
                         for t in matched):
                outcomes = sorted({run.results[t]['outcome']
                                   for t in matched})
                self.stale.append(
                    (e, f'all {len(matched)} matching test(s) now '
                        f'{"/".join(outcomes)}'))

    @property
    def no_loop(self):
        return self.run.loops_created_total == 0

    def ok(self, strict=False):
        if self.unexpected or self.no_loop:
            return False
        if strict and self.stale:
            return False
        return True

    def text(self, verbose_tracebacks=True):
        r = self.run
        c = r.counts()
        lines = [f'{r.module} on {r.loop}: {c["pass"]} passed, '
                 f'{c["fail"]} failed ({len(self.expected_failures)} '
                 f'expected), {c["skip"]} skipped in {r.elapsed:.1f}s; '
                 f'loops under test created: {r.loops_created_total} '
                 f'{r.loops_created}']
        for note in r.notes:
            lines.append(f'  note: {note}')
        if self.no_loop:
            lines.append(
                f'  ERROR: no {r.loop} loop was created while running '
                f'{r.module}: the loop under test did not run '
                f'(other loop types seen: {sorted(r.other_loop_types)})')
        if self.unexpected:
            lines.append(f'  UNEXPECTED FAILURES ({len(self.unexpected)}) '
                         f'-- not in {os.path.basename(expectations.expected_path(r.loop))}:')
            for tid, rec in self.unexpected.items():
                lines.append(f'    [{rec["outcome"]}] {tid}: {rec["reason"]}')
            if verbose_tracebacks:
                for tid, rec in list(self.unexpected.items())[:15]:
                    tb = (rec.get('traceback') or '').strip()
                    if tb:
                        lines.append(f'  ---- {tid}')
                        lines.extend('    ' + l for l in tb[-2500:].splitlines())
        if self.stale:
            lines.append(f'  STALE EXPECTED ENTRIES ({len(self.stale)}) -- '
                         f'prune them:')
            for e, why in self.stale:
                lines.append(f'    {e.where()}: {e.pattern}: {why}')
        return '\n'.join(lines)

    def suggestions(self):
        """Candidate expected-file lines for the unexpected failures.
        The reason is the raw error (or, for turboloop's NotImplementedError
        placeholders, the issue named in the message): check it and edit it
        into a real explanation."""
        out = []
        for tid, rec in self.unexpected.items():
            m = _NIE_RE.search(rec['reason'])
            if m:
                reason = (f'needs {m.group(2)} issue: loop.{m.group(1)}() '
                          f'raises NotImplementedError')
            else:
                reason = f'{rec["outcome"]}: {rec["reason"][:160]}'
            out.append(f'{tid}  # {reason}')
        return out


# The message of turboloop's not-yet-implemented I/O methods.
_NIE_RE = re.compile(r'does not implement loop\.(\w+)\(\) yet '
                     r'\(it comes with the (.+?) work\)')


# --------------------------------------------------------------- parallelism
_prefetch_lock = threading.Lock()
_prefetch = {}


def get_run(loop, module, modules_in_order, jobs):
    """Result of running *module*; with jobs > 1 the modules still to come
    are started in the background (at most *jobs* subprocesses at a time)."""
    if jobs <= 1:
        return run_module(loop, module)
    with _prefetch_lock:
        key = (loop, tuple(modules_in_order))
        if key not in _prefetch:
            pool = ThreadPoolExecutor(max_workers=jobs)
            _prefetch[key] = {m: pool.submit(run_module, loop, m)
                              for m in modules_in_order}
        futs = _prefetch[key]
    return futs[module].result()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--loop', default=selected_loop(), choices=config.LOOPS)
    ap.add_argument('-m', '--module', action='append', default=[],
                    help='module to run (repeatable; default: all)')
    ap.add_argument('--tag', choices=('core', 'io', 'subprocess'),
                    help='only modules with this tag')
    ap.add_argument('-j', '--jobs', type=int, default=1,
                    help='modules run in parallel (default 1)')
    ap.add_argument('--run-slow', action='store_true',
                    help='also run tests listed in slow.txt')
    ap.add_argument('--strict', action='store_true',
                    help='stale expected entries are errors')
    ap.add_argument('--suggest', action='store_true',
                    help='print candidate expected-file lines for '
                         'unexpected failures')
    ap.add_argument('--prune', action='store_true',
                    help='delete stale entries from the expected file')
    ap.add_argument('--json', help='write all outcomes to this JSON file')
    ap.add_argument('--keep', help='keep driver stdout/stderr/results in '
                                   'this directory')
    args = ap.parse_args(argv)

    modules = args.module or default_modules()
    if args.tag:
        modules = [m for m in modules if config.MODULES[m]['tag'] == args.tag]
    entries = expectations.load(args.loop, run_slow=args.run_slow)

    def one(m):
        wd = os.path.join(args.keep, args.loop, m) if args.keep else None
        return run_module(args.loop, m, run_slow=args.run_slow, workdir=wd)

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        runs = list(pool.map(one, modules))
    ok = True
    table = []
    everything = {}
    stale = []
    for run in runs:
        cmp = Comparison(run, entries)
        stale.extend(e for e, _ in cmp.stale)
        print(cmp.text(verbose_tracebacks=False))
        if args.suggest and cmp.unexpected:
            print('  suggested entries:')
            for s in cmp.suggestions():
                print('    ' + s)
        ok = ok and cmp.ok(strict=args.strict)
        c = run.counts()
        table.append((run.module, c['pass'], c['fail'],
                      len(cmp.expected_failures), len(cmp.unexpected),
                      c['skip'], run.loops_created_total, run.elapsed))
        everything[run.module] = {
            'elapsed': run.elapsed, 'loops_created': run.loops_created,
            'results': {t: {'outcome': r['outcome'], 'reason': r['reason'],
                            'duration': r.get('duration') or 0.0,
                            **({'traceback': r['traceback']}
                               if r['outcome'] in FAILING else {})}
                        for t, r in run.results.items()}}
    print()
    hdr = ('module', 'pass', 'fail', 'xfail', 'unexp', 'skip', 'loops', 'sec')
    print('{:<20} {:>5} {:>5} {:>5} {:>5} {:>5} {:>6} {:>7}'.format(*hdr))
    for row in table:
        print('{:<20} {:>5} {:>5} {:>5} {:>5} {:>5} {:>6} {:>7.1f}'.format(*row))
    tot = [sum(r[i] for r in table) for i in range(1, 8)]
    print('{:<20} {:>5} {:>5} {:>5} {:>5} {:>5} {:>6} {:>7.1f}'.format(
        'TOTAL', *tot))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'loop': args.loop, 'modules': everything}, f,
                      indent=1, sort_keys=True)
    if args.prune and stale:
        prune(stale)
    print('OK' if ok else 'PROBLEMS FOUND')
    return 0 if ok else 1


def prune(entries):
    """Delete the lines of *entries* from their files."""
    by_file = {}
    for e in entries:
        by_file.setdefault(e.source, set()).add(e.lineno)
    for path, linenos in by_file.items():
        with open(path, encoding='utf-8') as f:
            lines = f.readlines()
        kept = [l for i, l in enumerate(lines, 1) if i not in linenos]
        with open(path, 'w', encoding='utf-8') as f:
            f.writelines(kept)
        print(f'pruned {len(lines) - len(kept)} stale entries from {path}')


if __name__ == '__main__':
    sys.exit(main())
