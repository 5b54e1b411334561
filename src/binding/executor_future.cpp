// turboloop._executor.Future: concurrent.futures.Future with a native lock, state and methods.
//
// The stdlib's Future builds a threading.Condition (a Python object holding an RLock, five bound
// methods and a deque) and two lists for every call submitted, and runs each method as Python
// code; that is most of what submit-and-wait costs, and most of the garbage collector's work.
// Here the base FutureMethods holds a future's state, result, exception, waiters, done callbacks
// and a re-entrant lock with condition-variable waits, in C fields, and gives the Python class
// (which also derives from concurrent.futures.Future, so it is a real one for isinstance checks
// and asyncio.wrap_future) the stdlib's methods in C, with the same semantics, messages and
// logging. The private attributes the stdlib's helpers use are properties over the fields;
// `_condition` is a FutureCondition, threading.Condition's interface over the future's lock (what
// concurrent.futures.wait()/as_completed() and Future.__repr__ use), made when asked for.
//
// Locking: every field is read and written with the GIL held, and (as in the stdlib) under the
// future's own lock where the stdlib takes it. The lock's bookkeeping is guarded by a std::mutex,
// which is never held while taking the GIL.
#include "binding/executor_future.hpp"

#include <pythread.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <new>
#include <vector>

namespace turboloop::binding {
namespace {

using Clock = std::chrono::steady_clock;

// A thread blocked on the lock or a condition wait checks for Python signals (Ctrl-C) this often.
constexpr auto kSignalCheckInterval = std::chrono::milliseconds(50);

// concurrent.futures' states, in its order; their names are its own string objects.
enum class State : unsigned char { pending, running, cancelled, cancelled_and_notified, finished };
constexpr int kStates = 5;
PyObject* state_names[kStates];
PyObject* cancelled_error;      // concurrent.futures.CancelledError
PyObject* invalid_state_error;  // concurrent.futures.InvalidStateError
PyObject* futures_logger;       // concurrent.futures._base.LOGGER

bool is_cancelled(State state) { return state == State::cancelled || state == State::cancelled_and_notified; }
bool is_done(State state) { return is_cancelled(state) || state == State::finished; }

// One thread in FutureCondition.wait().
struct ConditionWaiter {
  bool notified = false;
};

// A re-entrant lock (threading.RLock's semantics) and the threads waiting on it as a condition.
struct LockState {
  std::mutex mutex;
  std::condition_variable changed;  // the lock was released, or waiters were notified
  unsigned long owner = 0;
  std::uint64_t count = 0;
  int blocked = 0;                        // threads waiting to take the lock
  std::vector<ConditionWaiter*> waiters;  // threads in wait(), oldest first
};

struct FutureCondition;

// A FutureMethods instance (the layout turboloop._executor.Future extends).
struct NativeFuture {
  PyObject_HEAD State state;
  PyObject* result;            // owned, or nullptr for None
  PyObject* exception;         // owned, or nullptr for None
  PyObject* waiters;           // the `_waiters` list, made when first asked for
  PyObject* callbacks;         // the `_done_callbacks` list, made when first asked for
  FutureCondition* condition;  // the `_condition` handed out and still alive (borrowed), or nullptr
  alignas(LockState) unsigned char lock_storage[sizeof(LockState)];
};

// What `future._condition` is: a view of the future's lock. It holds the future; the future only
// remembers it while it lives, so no reference cycle forms.
struct FutureCondition {
  PyObject_HEAD NativeFuture* future;
};

LockState& lock_of(NativeFuture* self) { return *std::launder(reinterpret_cast<LockState*>(self->lock_storage)); }

// A timeout in seconds: negative waits forever, zero does not wait.
Clock::time_point deadline_after(double seconds) {
  if (seconds <= 0) return Clock::now();
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

// Sleeps (the GIL released by the caller) until `done()` or the slice for a signal check ends.
template <typename Done>
bool wait_slice(LockState& lock, std::unique_lock<std::mutex>& guard, double timeout, Clock::time_point deadline,
                Done done) {
  auto until = Clock::now() + kSignalCheckInterval;
  if (timeout >= 0) until = std::min(until, deadline);
  return lock.changed.wait_until(guard, until, done);
}

// Takes the lock for this thread. 1 when taken, 0 when `timeout` passed first, -1 with the error
// set when a signal handler raised meanwhile (`interruptible`, as threading.RLock.acquire()).
int lock_acquire(LockState& lock, double timeout, bool interruptible) {
  const unsigned long me = PyThread_get_thread_ident();
  {
    std::lock_guard<std::mutex> guard(lock.mutex);
    if (lock.count == 0) {
      lock.owner = me;
      lock.count = 1;
      return 1;
    }
    if (lock.owner == me) {
      ++lock.count;
      return 1;
    }
  }
  if (timeout == 0) return 0;
  const auto deadline = deadline_after(timeout);
  for (;;) {
    bool taken = false;
    bool expired = false;
    Py_BEGIN_ALLOW_THREADS {
      std::unique_lock<std::mutex> guard(lock.mutex);
      ++lock.blocked;
      taken = wait_slice(lock, guard, timeout, deadline, [&] { return lock.count == 0; });
      --lock.blocked;
      if (taken) {
        lock.owner = me;
        lock.count = 1;
      } else {
        expired = timeout >= 0 && Clock::now() >= deadline;
      }
    }
    Py_END_ALLOW_THREADS;
    if (taken) return 1;
    if (expired) return 0;
    if (interruptible && PyErr_CheckSignals() < 0) return -1;
  }
}

// Gives up one level of the lock: 0, or -1 with RuntimeError when this thread does not hold it.
int lock_release(LockState& lock) {
  std::lock_guard<std::mutex> guard(lock.mutex);
  if (lock.count == 0 || lock.owner != PyThread_get_thread_ident()) {
    PyErr_SetString(PyExc_RuntimeError, "cannot release un-acquired lock");
    return -1;
  }
  if (--lock.count == 0) {
    lock.owner = 0;
    if (lock.blocked > 0) lock.changed.notify_all();
  }
  return 0;
}

bool owned_by_me(LockState& lock) {
  std::lock_guard<std::mutex> guard(lock.mutex);
  return lock.count > 0 && lock.owner == PyThread_get_thread_ident();
}

// Condition.wait(): lets go of every level of the lock, sleeps until notified or `timeout`
// passes, and takes the lock back (uninterruptibly, whatever happened). 1 when notified, 0 on
// timeout, -1 with the error set.
int condition_wait(LockState& lock, double timeout) {
  const unsigned long me = PyThread_get_thread_ident();
  ConditionWaiter waiter;
  std::uint64_t saved_count = 0;
  {
    std::lock_guard<std::mutex> guard(lock.mutex);
    if (lock.count == 0 || lock.owner != me) {
      PyErr_SetString(PyExc_RuntimeError, "cannot wait on un-acquired lock");
      return -1;
    }
    saved_count = lock.count;
    lock.count = 0;
    lock.owner = 0;
    lock.waiters.push_back(&waiter);
    if (lock.blocked > 0) lock.changed.notify_all();
  }
  auto forget = [&] {
    lock.waiters.erase(std::remove(lock.waiters.begin(), lock.waiters.end(), &waiter), lock.waiters.end());
  };
  const auto deadline = deadline_after(timeout);
  int outcome = 0;
  for (;;) {
    bool notified = false;
    bool expired = false;
    Py_BEGIN_ALLOW_THREADS {
      std::unique_lock<std::mutex> guard(lock.mutex);
      notified =
          timeout == 0 ? waiter.notified : wait_slice(lock, guard, timeout, deadline, [&] { return waiter.notified; });
      expired = !notified && timeout >= 0 && Clock::now() >= deadline;
      if (expired) forget();
    }
    Py_END_ALLOW_THREADS;
    if (notified || expired) {
      outcome = notified ? 1 : 0;
      break;
    }
    if (PyErr_CheckSignals() < 0) {
      std::lock_guard<std::mutex> guard(lock.mutex);
      forget();
      outcome = -1;
      break;
    }
  }
  Py_BEGIN_ALLOW_THREADS {
    std::unique_lock<std::mutex> guard(lock.mutex);
    ++lock.blocked;
    lock.changed.wait(guard, [&] { return lock.count == 0; });
    --lock.blocked;
    lock.owner = me;
    lock.count = saved_count;
  }
  Py_END_ALLOW_THREADS;
  return outcome;
}

// Condition.notify(n): wakes the `n` oldest waiters. 0, or -1 with RuntimeError when this thread
// does not hold the lock.
int condition_notify(LockState& lock, Py_ssize_t n) {
  std::lock_guard<std::mutex> guard(lock.mutex);
  if (lock.count == 0 || lock.owner != PyThread_get_thread_ident()) {
    PyErr_SetString(PyExc_RuntimeError, "cannot notify on un-acquired lock");
    return -1;
  }
  const auto woken =
      static_cast<std::size_t>(std::clamp<Py_ssize_t>(n, 0, static_cast<Py_ssize_t>(lock.waiters.size())));
  if (woken == 0) return 0;
  for (std::size_t i = 0; i < woken; ++i) lock.waiters[i]->notified = true;
  lock.waiters.erase(lock.waiters.begin(), lock.waiters.begin() + static_cast<std::ptrdiff_t>(woken));
  lock.changed.notify_all();
  return 0;
}

void notify_all(NativeFuture* self) {
  condition_notify(lock_of(self), PY_SSIZE_T_MAX);  // cannot fail: the caller holds the lock
}

// ---- The timeout arguments, parsed as the stdlib parses them --------------------------------

// Arguments threading's lock refuses: sets the error a new one raises for them (their messages
// change between versions), before it would wait. -2.
double refused_lock_timeout(int blocking, double timeout) {
  try {
    py::module_::import("_thread").attr("allocate_lock")().attr("acquire")(py::bool_(blocking != 0), timeout);
  } catch (py::error_already_set& error) {
    error.restore();
    return -2;
  }
  PyErr_SetString(PyExc_SystemError, "threading's lock took a timeout turboloop refuses");
  return -2;
}

// threading's acquire(blocking, timeout): the seconds to wait (-1 forever, 0 not at all), or -2
// with the error set.
double lock_timeout(int blocking, double timeout) {
  if (std::isnan(timeout) || (!blocking && timeout != -1) || (timeout < 0 && timeout != -1) ||
      timeout > static_cast<double>(PY_TIMEOUT_MAX) / 1e6)
    return refused_lock_timeout(blocking, timeout);
  return blocking ? timeout : 0;
}

// Whether threading's Condition.wait() tests `timeout <= 0` for not waiting, as it does from
// 3.15 on (a NaN timeout then goes on to acquire(), which refuses it), not `timeout > 0` for
// waiting (NaN does not wait).
bool wait_tests_not_positive = false;

bool stdlib_wait_refuses_nan() {
  return ask_python(R"(
import threading

condition = threading.Condition()
with condition:
    try:
        condition.wait(float("nan"))
        answer = False
    except ValueError:
        answer = True
)");
}

// Condition.wait(timeout): None waits forever, a number <= 0 does not wait. The seconds (-1
// forever), or -2 with the error set (TypeError for what cannot be compared with 0).
double condition_timeout(PyObject* timeout) {
  if (timeout == nullptr || timeout == Py_None) return -1;
  PyObject* zero = PyLong_FromLong(0);
  if (zero == nullptr) return -2;
  const int test = PyObject_RichCompareBool(timeout, zero, wait_tests_not_positive ? Py_LE : Py_GT);
  Py_DECREF(zero);
  if (test < 0) return -2;
  const bool waits = wait_tests_not_positive ? test == 0 : test == 1;
  if (!waits) return 0;
  const double seconds = PyFloat_AsDouble(timeout);
  if (seconds == -1 && PyErr_Occurred()) return -2;
  return lock_timeout(1, seconds);
}

// ---- FutureCondition: what a future's `_condition` is ----------------------------------------

int condition_traverse(FutureCondition* self, visitproc visit, void* arg) {
  Py_VISIT(self->future);
  return 0;
}

int condition_clear(FutureCondition* self) {
  if (self->future != nullptr && self->future->condition == self) self->future->condition = nullptr;
  Py_CLEAR(self->future);
  return 0;
}

void condition_dealloc(FutureCondition* self) {
  PyObject_GC_UnTrack(self);
  condition_clear(self);
  Py_TYPE(self)->tp_free(reinterpret_cast<PyObject*>(self));
}

extern PyTypeObject FutureConditionType;

// The future's `_condition`: the live one, or a new one. A new reference, or nullptr.
PyObject* condition_of(NativeFuture* future) {
  if (future->condition != nullptr) return Py_NewRef(reinterpret_cast<PyObject*>(future->condition));
  auto* condition = PyObject_GC_New(FutureCondition, &FutureConditionType);
  if (condition == nullptr) return nullptr;
  condition->future = reinterpret_cast<NativeFuture*>(Py_NewRef(reinterpret_cast<PyObject*>(future)));
  future->condition = condition;
  PyObject_GC_Track(condition);
  return reinterpret_cast<PyObject*>(condition);
}

// The lock a condition method works on, or nullptr with the error set (after tp_clear).
LockState* lock_of(FutureCondition* self) {
  if (self->future != nullptr) return &lock_of(self->future);
  PyErr_SetString(PyExc_RuntimeError, "this future condition no longer has a future");
  return nullptr;
}

PyObject* condition_acquire(FutureCondition* self, PyObject* args, PyObject* kwargs) {
  static const char* keywords[] = {"blocking", "timeout", nullptr};
  int blocking = 1;
  double timeout = -1;
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|pd:acquire", const_cast<char**>(keywords), &blocking, &timeout))
    return nullptr;
  const double seconds = lock_timeout(blocking, timeout);
  LockState* lock = lock_of(self);
  if (seconds == -2 || lock == nullptr) return nullptr;
  const int taken = lock_acquire(*lock, seconds, /*interruptible=*/true);
  if (taken < 0) return nullptr;
  return PyBool_FromLong(taken);
}

PyObject* condition_enter(FutureCondition* self, PyObject*) {
  LockState* lock = lock_of(self);
  if (lock == nullptr || lock_acquire(*lock, -1, /*interruptible=*/true) < 0) return nullptr;
  Py_RETURN_TRUE;
}

PyObject* condition_release(FutureCondition* self, PyObject*) {
  LockState* lock = lock_of(self);
  if (lock == nullptr || lock_release(*lock) < 0) return nullptr;
  Py_RETURN_NONE;
}

PyObject* condition_exit(FutureCondition* self, PyObject*) { return condition_release(self, nullptr); }

PyObject* condition_wait_method(FutureCondition* self, PyObject* args, PyObject* kwargs) {
  static const char* keywords[] = {"timeout", nullptr};
  PyObject* timeout = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O:wait", const_cast<char**>(keywords), &timeout)) return nullptr;
  LockState* lock = lock_of(self);
  if (lock == nullptr) return nullptr;
  if (!owned_by_me(*lock)) {
    PyErr_SetString(PyExc_RuntimeError, "cannot wait on un-acquired lock");
    return nullptr;
  }
  const double seconds = condition_timeout(timeout);
  if (seconds == -2) return nullptr;
  const int notified = condition_wait(*lock, seconds);
  if (notified < 0) return nullptr;
  return PyBool_FromLong(notified);
}

PyObject* condition_notify_method(FutureCondition* self, PyObject* args, PyObject* kwargs) {
  static const char* keywords[] = {"n", nullptr};
  Py_ssize_t n = 1;
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|n:notify", const_cast<char**>(keywords), &n)) return nullptr;
  LockState* lock = lock_of(self);
  if (lock == nullptr || condition_notify(*lock, n) < 0) return nullptr;
  Py_RETURN_NONE;
}

PyObject* condition_notify_all_method(FutureCondition* self, PyObject*) {
  LockState* lock = lock_of(self);
  if (lock == nullptr || condition_notify(*lock, PY_SSIZE_T_MAX) < 0) return nullptr;
  Py_RETURN_NONE;
}

PyObject* condition_repr(FutureCondition* self) {
  LockState* lock = lock_of(self);
  if (lock == nullptr) return nullptr;
  unsigned long owner = 0;
  std::uint64_t count = 0;
  std::size_t waiting = 0;
  {
    std::lock_guard<std::mutex> guard(lock->mutex);
    owner = lock->owner;
    count = lock->count;
    waiting = lock->waiters.size();
  }
  return PyUnicode_FromFormat("<turboloop future condition (%s lock owner=%lu count=%llu), %zu waiting>",
                              count > 0 ? "locked" : "unlocked", owner, static_cast<unsigned long long>(count),
                              waiting);
}

template <typename F>
PyCFunction as_cfunction(F function) {
  return reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(function));
}

PyMethodDef condition_methods[] = {
    {"acquire", as_cfunction(condition_acquire), METH_VARARGS | METH_KEYWORDS,
     "Takes the lock (re-entrant), as threading.RLock.acquire()."},
    {"release", as_cfunction(condition_release), METH_NOARGS, "Gives up one level of the lock."},
    {"__enter__", as_cfunction(condition_enter), METH_NOARGS, nullptr},
    {"__exit__", as_cfunction(condition_exit), METH_VARARGS, nullptr},
    {"wait", as_cfunction(condition_wait_method), METH_VARARGS | METH_KEYWORDS,
     "As threading.Condition.wait(timeout=None)."},
    {"notify", as_cfunction(condition_notify_method), METH_VARARGS | METH_KEYWORDS,
     "As threading.Condition.notify(n=1)."},
    {"notify_all", as_cfunction(condition_notify_all_method), METH_NOARGS, "As threading.Condition.notify_all()."},
    {nullptr, nullptr, 0, nullptr},
};

PyTypeObject FutureConditionType = [] {
  PyTypeObject type{};
  Py_SET_REFCNT(&type, 1);
  type.tp_name = "turboloop.FutureCondition";
  type.tp_basicsize = sizeof(FutureCondition);
  type.tp_dealloc = reinterpret_cast<destructor>(condition_dealloc);
  type.tp_repr = reinterpret_cast<reprfunc>(condition_repr);
  type.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC;
  type.tp_doc = "A turboloop future's lock as a condition (threading.Condition's interface).";
  type.tp_traverse = reinterpret_cast<traverseproc>(condition_traverse);
  type.tp_clear = reinterpret_cast<inquiry>(condition_clear);
  type.tp_methods = condition_methods;
  return type;
}();

// ---- FutureMethods: the future's state and methods -------------------------------------------

PyObject* as_object(NativeFuture* future) { return reinterpret_cast<PyObject*>(future); }

// Holds a future's lock for a scope (the stdlib's `with self._condition:`).
class Locked {
 public:
  explicit Locked(NativeFuture* future) : future_{future} {
    held_ = lock_acquire(lock_of(future), -1, /*interruptible=*/true) == 1;
  }
  ~Locked() { unlock(); }
  Locked(const Locked&) = delete;
  Locked& operator=(const Locked&) = delete;

  // False when a signal handler raised while waiting for the lock.
  explicit operator bool() const { return held_; }

  void unlock() {
    if (!held_) return;
    held_ = false;
    lock_release(lock_of(future_));
  }

 private:
  NativeFuture* future_;
  bool held_;
};

// LOGGER.<level>(message, first[, second], exc_info=exc): 0, or -1 with the error set.
int log(const char* level, PyObject* exc, const char* message, PyObject* first, PyObject* second = nullptr) {
  PyObject* method = PyObject_GetAttrString(futures_logger, level);
  PyObject* text = PyUnicode_FromString(message);
  PyObject* args = method == nullptr || text == nullptr ? nullptr
                   : second == nullptr                  ? PyTuple_Pack(2, text, first)
                                                        : PyTuple_Pack(3, text, first, second);
  PyObject* kwargs = exc == nullptr ? nullptr : Py_BuildValue("{s:O}", "exc_info", exc);
  PyObject* result =
      args == nullptr || (exc != nullptr && kwargs == nullptr) ? nullptr : PyObject_Call(method, args, kwargs);
  Py_XDECREF(method);
  Py_XDECREF(text);
  Py_XDECREF(args);
  Py_XDECREF(kwargs);
  if (result == nullptr) return -1;
  Py_DECREF(result);
  return 0;
}

// After `callback(future)` raised: logs an Exception as the stdlib does and returns 0; anything
// else (KeyboardInterrupt, SystemExit) stays raised and gives -1.
int log_callback_error(NativeFuture* future) {
  if (!PyErr_ExceptionMatches(PyExc_Exception)) return -1;
  PyObject* value = fetch_exception();
  const int logged = log("exception", value, "exception calling callback for %r", as_object(future));
  Py_DECREF(value);
  return logged;
}

// Future._invoke_callbacks(): each done callback with the future, in order, including those a
// callback adds meanwhile.
int invoke_callbacks(NativeFuture* future) {
  if (future->callbacks == nullptr) return 0;
  PyObject* callbacks = Py_NewRef(future->callbacks);
  int status = 0;
  for (Py_ssize_t i = 0; i < PyList_GET_SIZE(callbacks); ++i) {
    PyObject* callback = Py_NewRef(PyList_GET_ITEM(callbacks, i));
    PyObject* result = PyObject_CallOneArg(callback, as_object(future));
    Py_DECREF(callback);
    if (result != nullptr) {
      Py_DECREF(result);
    } else if (log_callback_error(future) < 0) {
      status = -1;
      break;
    }
  }
  Py_DECREF(callbacks);
  return status;
}

// waiter.<method>(future) for each of concurrent.futures.wait()'s waiters on the future.
int tell_waiters(NativeFuture* future, py::handle method) {
  if (future->waiters == nullptr) return 0;
  PyObject* waiters = Py_NewRef(future->waiters);
  int status = 0;
  for (Py_ssize_t i = 0; status == 0 && i < PyList_GET_SIZE(waiters); ++i) {
    PyObject* waiter = Py_NewRef(PyList_GET_ITEM(waiters, i));
    PyObject* result = PyObject_CallMethodOneArg(waiter, method.ptr(), as_object(future));
    Py_DECREF(waiter);
    if (result == nullptr) status = -1;
    Py_XDECREF(result);
  }
  Py_DECREF(waiters);
  return status;
}

// Whether the stdlib's Future.result() raises a stored exception that is false (a __bool__ or
// __len__ saying so): it tests `is not None` from 3.13.4 and 3.14 on, `if self._exception:` before.
bool raises_false_exceptions = true;

bool stdlib_raises_false_exceptions() {
  return ask_python(R"(
from concurrent.futures import Future

class FalseError(Exception):
    def __bool__(self):
        return False

future = Future()
future.set_exception(FalseError())
try:
    future.result()
    answer = False
except FalseError:
    answer = True
)");
}

// The finished future's outcome: its result, or its exception raised (`raise self._exception`).
PyObject* outcome(NativeFuture* future) {
  PyObject* exception = future->exception;
  if (exception != nullptr) {
    const int truthy = raises_false_exceptions ? 1 : PyObject_IsTrue(exception);
    if (truthy < 0) return nullptr;
    if (truthy) {
      if (PyExceptionInstance_Check(exception))
        PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exception)), exception);
      else if (PyExceptionClass_Check(exception))
        PyErr_SetNone(exception);
      else
        PyErr_SetString(PyExc_TypeError, "exceptions must derive from BaseException");
      return nullptr;
    }
  }
  return Py_NewRef(future->result != nullptr ? future->result : Py_None);
}

PyObject* stored_exception(NativeFuture* future) {
  return Py_NewRef(future->exception != nullptr ? future->exception : Py_None);
}

// The single optional `timeout` argument of result() and exception(): 0, or -1 with TypeError.
int timeout_argument(const char* name, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames, PyObject** timeout) {
  *timeout = Py_None;
  const Py_ssize_t nkw = kwnames == nullptr ? 0 : PyTuple_GET_SIZE(kwnames);
  if (nargs + nkw > 1) {
    PyErr_Format(PyExc_TypeError, "Future.%s() takes at most 1 argument (%zd given)", name, nargs + nkw);
    return -1;
  }
  if (nargs == 1) *timeout = args[0];
  if (nkw == 1) {
    PyObject* keyword = PyTuple_GET_ITEM(kwnames, 0);
    if (PyUnicode_CompareWithASCIIString(keyword, "timeout") != 0) {
      PyErr_Format(PyExc_TypeError, "Future.%s() got an unexpected keyword argument '%S'", name, keyword);
      return -1;
    }
    *timeout = args[0];
  }
  return 0;
}

// result() and exception(): waits (`timeout` as Condition.wait takes it) for the future to
// finish, then returns finished(future) or raises CancelledError/TimeoutError.
PyObject* wait_for_outcome(NativeFuture* future, PyObject* timeout, PyObject* (*finished)(NativeFuture*)) {
  Locked locked(future);
  if (!locked) return nullptr;
  for (int round = 0; round < 2; ++round) {
    if (is_cancelled(future->state)) {
      PyErr_SetNone(cancelled_error);
      return nullptr;
    }
    if (future->state == State::finished) return finished(future);
    if (round == 1) break;
    const double seconds = condition_timeout(timeout);
    if (seconds == -2 || condition_wait(lock_of(future), seconds) < 0) return nullptr;
  }
  PyErr_SetNone(PyExc_TimeoutError);
  return nullptr;
}

PyObject* future_result(NativeFuture* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  PyObject* timeout;
  if (timeout_argument("result", args, nargs, kwnames, &timeout) < 0) return nullptr;
  return wait_for_outcome(self, timeout, outcome);
}

PyObject* future_exception(NativeFuture* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  PyObject* timeout;
  if (timeout_argument("exception", args, nargs, kwnames, &timeout) < 0) return nullptr;
  return wait_for_outcome(self, timeout, stored_exception);
}

PyObject* future_cancel(NativeFuture* self, PyObject*) {
  Locked locked(self);
  if (!locked) return nullptr;
  if (self->state == State::running || self->state == State::finished) Py_RETURN_FALSE;
  if (is_cancelled(self->state)) Py_RETURN_TRUE;
  self->state = State::cancelled;
  notify_all(self);
  locked.unlock();
  if (invoke_callbacks(self) < 0) return nullptr;
  Py_RETURN_TRUE;
}

bool is_running(State state) { return state == State::running; }

template <bool (*Test)(State)>
PyObject* state_test(NativeFuture* self, PyObject*) {
  Locked locked(self);
  if (!locked) return nullptr;
  return PyBool_FromLong(Test(self->state));
}

PyObject* future_add_done_callback(NativeFuture* self, PyObject* fn) {
  {
    Locked locked(self);
    if (!locked) return nullptr;
    if (!is_done(self->state)) {
      if (self->callbacks == nullptr && (self->callbacks = PyList_New(0)) == nullptr) return nullptr;
      if (PyList_Append(self->callbacks, fn) < 0) return nullptr;
      Py_RETURN_NONE;
    }
  }
  PyObject* result = PyObject_CallOneArg(fn, as_object(self));
  if (result == nullptr && log_callback_error(self) < 0) return nullptr;
  Py_XDECREF(result);
  Py_RETURN_NONE;
}

// set_running_or_notify_cancel(): 1 running, 0 cancelled, -1 with the error set.
int start(NativeFuture* future) {
  Locked locked(future);
  if (!locked) return -1;
  if (future->state == State::cancelled) {
    future->state = State::cancelled_and_notified;
    // No notify_all(): cancel() notified already.
    return tell_waiters(future, interned<"add_cancelled">()) < 0 ? -1 : 0;
  }
  if (future->state == State::pending) {
    future->state = State::running;
    return 1;
  }
  PyObject* id = PyLong_FromVoidPtr(future);
  const int logged = id == nullptr ? -1
                                   : log("critical", nullptr, "Future %s in unexpected state: %s", id,
                                         state_names[static_cast<int>(future->state)]);
  Py_XDECREF(id);
  if (logged == 0) PyErr_SetString(PyExc_RuntimeError, "Future in unexpected state");
  return -1;
}

PyObject* future_set_running_or_notify_cancel(NativeFuture* self, PyObject*) {
  const int running = start(self);
  if (running < 0) return nullptr;
  return PyBool_FromLong(running);
}

// set_result()/set_exception(): `value` becomes the outcome, unless the future is already done
// (InvalidStateError, as the stdlib).
int finish(NativeFuture* future, PyObject* value, bool failed) {
  Locked locked(future);
  if (!locked) return -1;
  if (is_done(future->state)) {
    PyObject* repr = PyObject_Repr(as_object(future));
    if (repr != nullptr)
      PyErr_Format(invalid_state_error, "%U: %U", state_names[static_cast<int>(future->state)], repr);
    Py_XDECREF(repr);
    return -1;
  }
  Py_XSETREF(failed ? future->exception : future->result, Py_NewRef(value));
  future->state = State::finished;
  if (tell_waiters(future, failed ? interned<"add_exception">() : interned<"add_result">()) < 0) return -1;
  notify_all(future);
  locked.unlock();
  return invoke_callbacks(future);
}

PyObject* future_set_result(NativeFuture* self, PyObject* result) {
  if (finish(self, result, /*failed=*/false) < 0) return nullptr;
  Py_RETURN_NONE;
}

PyObject* future_set_exception(NativeFuture* self, PyObject* exception) {
  if (finish(self, exception, /*failed=*/true) < 0) return nullptr;
  Py_RETURN_NONE;
}

PyObject* future_invoke_callbacks(NativeFuture* self, PyObject*) {
  if (invoke_callbacks(self) < 0) return nullptr;
  Py_RETURN_NONE;
}

int future_traverse(NativeFuture* self, visitproc visit, void* arg) {
  Py_VISIT(self->result);
  Py_VISIT(self->exception);
  Py_VISIT(self->waiters);
  Py_VISIT(self->callbacks);
  return 0;
}

int future_clear(NativeFuture* self) {
  Py_CLEAR(self->result);
  Py_CLEAR(self->exception);
  Py_CLEAR(self->waiters);
  Py_CLEAR(self->callbacks);
  return 0;
}

void future_dealloc(NativeFuture* self) {
  PyObject_GC_UnTrack(self);
  future_clear(self);
  lock_of(self).~LockState();
  Py_TYPE(self)->tp_free(as_object(self));
}

PyObject* future_new(PyTypeObject* type, PyObject*, PyObject*) {
  auto* self = reinterpret_cast<NativeFuture*>(type->tp_alloc(type, 0));
  if (self == nullptr) return nullptr;
  self->state = State::pending;
  new (self->lock_storage) LockState();
  return as_object(self);
}

// Future.__init__(): takes no arguments; on a used future, starts it afresh as the stdlib's does.
int future_init(NativeFuture* self, PyObject* args, PyObject* kwargs) {
  if (PyTuple_GET_SIZE(args) != 0) {
    PyErr_Format(PyExc_TypeError, "Future.__init__() takes 1 positional argument but %zd were given",
                 PyTuple_GET_SIZE(args) + 1);
    return -1;
  }
  if (kwargs != nullptr && PyDict_GET_SIZE(kwargs) != 0) {
    Py_ssize_t position = 0;
    PyObject *keyword, *value;
    PyDict_Next(kwargs, &position, &keyword, &value);
    PyErr_Format(PyExc_TypeError, "Future.__init__() got an unexpected keyword argument '%S'", keyword);
    return -1;
  }
  self->state = State::pending;
  return future_clear(self);
}

// ---- The private attributes the stdlib's code (and tests) read and write ---------------------

PyObject* get_condition(NativeFuture* self, void*) { return condition_of(self); }

PyObject* get_state(NativeFuture* self, void*) { return Py_NewRef(state_names[static_cast<int>(self->state)]); }

int set_state(NativeFuture* self, PyObject* value, void*) {
  if (value == nullptr) {
    PyErr_SetString(PyExc_AttributeError, "cannot delete _state");
    return -1;
  }
  for (int i = 0; i < kStates; ++i) {
    const int equal = PyObject_RichCompareBool(value, state_names[i], Py_EQ);
    if (equal < 0) return -1;
    if (!equal) continue;
    self->state = static_cast<State>(i);
    return 0;
  }
  PyErr_Format(PyExc_ValueError, "%R is not a concurrent.futures state", value);
  return -1;
}

// The field at byte offset `field` of the future.
PyObject*& field_of(NativeFuture* self, void* field) {
  return *reinterpret_cast<PyObject**>(reinterpret_cast<char*>(self) + reinterpret_cast<std::size_t>(field));
}

// `_result`, `_exception`: any object (None is kept as nullptr).
PyObject* get_value(NativeFuture* self, void* field) {
  PyObject* value = field_of(self, field);
  return Py_NewRef(value != nullptr ? value : Py_None);
}

int set_value(NativeFuture* self, PyObject* value, void* field) {
  if (value == nullptr) {
    PyErr_SetString(PyExc_AttributeError, "cannot delete this attribute");
    return -1;
  }
  Py_XSETREF(field_of(self, field), value == Py_None ? nullptr : Py_NewRef(value));
  return 0;
}

// `_waiters`, `_done_callbacks`: lists, made on first use.
PyObject* get_list(NativeFuture* self, void* field) {
  PyObject*& list = field_of(self, field);
  if (list == nullptr) list = PyList_New(0);
  return Py_XNewRef(list);
}

int set_list(NativeFuture* self, PyObject* value, void* field) {
  if (value == nullptr || !PyList_Check(value)) {
    PyErr_SetString(PyExc_TypeError, "this attribute must be a list");
    return -1;
  }
  Py_XSETREF(field_of(self, field), Py_NewRef(value));
  return 0;
}

void* field(std::size_t offset) { return reinterpret_cast<void*>(offset); }

template <typename Get, typename Set>
PyGetSetDef property(const char* name, Get get, Set set, void* closure = nullptr) {
  return {name, reinterpret_cast<getter>(get), reinterpret_cast<setter>(set), nullptr, closure};
}

PyGetSetDef future_getset[] = {
    {"_condition", reinterpret_cast<getter>(get_condition), nullptr, nullptr, nullptr},
    property("_state", get_state, set_state),
    property("_result", get_value, set_value, field(offsetof(NativeFuture, result))),
    property("_exception", get_value, set_value, field(offsetof(NativeFuture, exception))),
    property("_waiters", get_list, set_list, field(offsetof(NativeFuture, waiters))),
    property("_done_callbacks", get_list, set_list, field(offsetof(NativeFuture, callbacks))),
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

PyMethodDef future_methods[] = {
    {"cancel", as_cfunction(future_cancel), METH_NOARGS, nullptr},
    {"cancelled", as_cfunction(state_test<is_cancelled>), METH_NOARGS, nullptr},
    {"running", as_cfunction(state_test<is_running>), METH_NOARGS, nullptr},
    {"done", as_cfunction(state_test<is_done>), METH_NOARGS, nullptr},
    {"result", as_cfunction(future_result), METH_FASTCALL | METH_KEYWORDS, nullptr},
    {"exception", as_cfunction(future_exception), METH_FASTCALL | METH_KEYWORDS, nullptr},
    {"add_done_callback", as_cfunction(future_add_done_callback), METH_O, nullptr},
    {"set_running_or_notify_cancel", as_cfunction(future_set_running_or_notify_cancel), METH_NOARGS, nullptr},
    {"set_result", as_cfunction(future_set_result), METH_O, nullptr},
    {"set_exception", as_cfunction(future_set_exception), METH_O, nullptr},
    {"_invoke_callbacks", as_cfunction(future_invoke_callbacks), METH_NOARGS, nullptr},
    {nullptr, nullptr, 0, nullptr},
};

// The base of turboloop._executor.Future, next to concurrent.futures.Future (which adds no
// fields of its own, only a __dict__ and weak references, so the two layouts combine).
PyTypeObject FutureMethodsType = [] {
  PyTypeObject type{};
  Py_SET_REFCNT(&type, 1);
  type.tp_name = "turboloop.FutureMethods";
  type.tp_basicsize = sizeof(NativeFuture);
  type.tp_dealloc = reinterpret_cast<destructor>(future_dealloc);
  type.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE;
  type.tp_doc = "concurrent.futures.Future's state and methods in C (the base of turboloop's executor future).";
  type.tp_traverse = reinterpret_cast<traverseproc>(future_traverse);
  type.tp_clear = reinterpret_cast<inquiry>(future_clear);
  type.tp_methods = future_methods;
  type.tp_getset = future_getset;
  type.tp_init = reinterpret_cast<initproc>(future_init);
  type.tp_new = future_new;
  return type;
}();

// Copies the method docs from concurrent.futures.Future, so help() reads as the stdlib's.
void copy_docs(PyObject* stdlib_future) {
  for (PyMethodDef* def = future_methods; def->ml_name != nullptr; ++def) {
    PyObject* method = PyObject_GetAttrString(stdlib_future, def->ml_name);
    PyObject* doc = method == nullptr ? nullptr : PyObject_GetAttrString(method, "__doc__");
    if (doc != nullptr && PyUnicode_Check(doc)) {
      // Kept for the life of the process, as the method table itself.
      def->ml_doc = PyUnicode_AsUTF8(doc);
      Py_INCREF(doc);
    }
    Py_XDECREF(doc);
    Py_XDECREF(method);
    PyErr_Clear();
  }
}

// The future as a FutureMethods instance, or nullptr with TypeError.
NativeFuture* native(PyObject* future) {
  if (PyObject_TypeCheck(future, &FutureMethodsType)) return reinterpret_cast<NativeFuture*>(future);
  PyErr_Format(PyExc_TypeError, "expected a turboloop executor future, not %.200s", Py_TYPE(future)->tp_name);
  return nullptr;
}

}  // namespace

PyObject* new_executor_future() {
  static PyObject* future_class = [] {
    PyObject* module = PyImport_ImportModule("turboloop._executor");
    PyObject* cls = module == nullptr ? nullptr : PyObject_GetAttrString(module, "Future");
    Py_XDECREF(module);
    return cls;  // kept for the life of the process
  }();
  if (future_class == nullptr) {
    PyErr_SetString(PyExc_RuntimeError, "turboloop._executor.Future is missing");
    return nullptr;
  }
  return PyObject_CallNoArgs(future_class);
}

int executor_future_start(PyObject* future) {
  NativeFuture* self = native(future);
  return self == nullptr ? -1 : start(self);
}

int executor_future_finish(PyObject* future, PyObject* value, bool failed) {
  NativeFuture* self = native(future);
  return self == nullptr ? -1 : finish(self, value, failed);
}

void register_executor_future(py::module_& module) {
  py::module_ base = py::module_::import("concurrent.futures._base");
  // Kept for the life of the process.
  auto keep = [&](const char* name) { return py::object(base.attr(name)).release().ptr(); };
  const char* names[kStates] = {"PENDING", "RUNNING", "CANCELLED", "CANCELLED_AND_NOTIFIED", "FINISHED"};
  for (int i = 0; i < kStates; ++i) state_names[i] = keep(names[i]);
  cancelled_error = keep("CancelledError");
  invalid_state_error = keep("InvalidStateError");
  futures_logger = keep("LOGGER");
  copy_docs(base.attr("Future").ptr());
  raises_false_exceptions = stdlib_raises_false_exceptions();
  wait_tests_not_positive = stdlib_wait_refuses_nan();
  if (PyType_Ready(&FutureConditionType) < 0 || PyType_Ready(&FutureMethodsType) < 0) throw py::error_already_set();
  module.add_object("FutureCondition", reinterpret_cast<PyObject*>(&FutureConditionType));
  module.add_object("FutureMethods", reinterpret_cast<PyObject*>(&FutureMethodsType));
}

}  // namespace turboloop::binding
