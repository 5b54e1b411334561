// PoolCore: the native half of turboloop.ThreadPoolExecutor, over core::ThreadPool.
//
// Workers are real Python threads (the executor's launch hook starts a threading.Thread whose
// target is the core's worker loop), so they are named, listed by threading.enumerate() and joined
// at interpreter exit like the stdlib's. A worker waits for jobs without the GIL and takes it only
// to run one. Two kinds of job: a concurrent.futures work item (submit), and a call whose result
// goes straight to an asyncio future on its loop (run_in_executor), through the loop's thread-safe
// queue, with no concurrent.futures.Future in between.
#include <pybind11/stl.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "binding/common.hpp"
#include "binding/executor_future.hpp"
#include "core/thread_pool.hpp"

namespace turboloop::binding {
namespace {

// Python references that may be dropped on a worker thread: every destructor takes the GIL.
struct GilObjects {
  std::vector<py::object> objects;
  ~GilObjects() {
    if (objects.empty()) return;
    py::gil_scoped_acquire gil;
    objects.clear();
  }
};

// Calls fn(*args, **kwargs); returns the result, or nullptr and the exception (with its
// traceback) in *error.
PyObject* call_catching(PyObject* fn, PyObject* args, PyObject* kwargs, PyObject** error) {
  PyObject* result = PyObject_Call(fn, args, kwargs);
  if (result != nullptr) return result;
  *error = fetch_exception();
  return nullptr;
}

// A job that needs the GIL. Jobs already queued behind it run under the same GIL hold: one
// GIL hand-off per burst of short jobs instead of one per job.
class PythonJob : public core::Job {
 public:
  explicit PythonJob(std::vector<py::object> held) : held_{std::move(held)} {}

  void run(const TakeNext& take_next) final {
    py::gil_scoped_acquire gil;
    run_with_gil();
    while (std::unique_ptr<core::Job> next = take_next()) static_cast<PythonJob&>(*next).run_with_gil();
  }

  // The job will never run: cancel its future, or when `make_error` is given, fail it with
  // make_error(). Drops the job's Python references. Called with the GIL.
  virtual void abandon(py::handle make_error) = 0;

 protected:
  // Runs the job (with the GIL).
  virtual void call() = 0;
  // Drops what the job holds, with the GIL, so that the job is destroyed without it.
  virtual void release() { held_.objects.clear(); }

  GilObjects held_;

 private:
  void run_with_gil() {
    call();
    release();
  }
};

// Calls obj.<name>() and tells whether it returned True: 1, 0, or -1 after reporting an error
// as unraisable (a job has no caller to raise to).
int call_returns_true(PyObject* obj, py::handle name) {
  PyObject* result = PyObject_CallMethodNoArgs(obj, name.ptr());
  if (result == nullptr) {
    PyErr_WriteUnraisable(obj);
    return -1;
  }
  const int is_true = result == Py_True;
  Py_DECREF(result);
  return is_true;
}

// A concurrent.futures work item: the stdlib's _WorkItem.run.
class FutureJob : public PythonJob {
 public:
  FutureJob(py::object future, py::object fn, py::object args, py::object kwargs)
      : PythonJob({std::move(future), std::move(fn), std::move(args), std::move(kwargs)}) {}

  void abandon(py::handle make_error) override {
    py::object future = held_.objects[0];
    held_.objects.clear();
    if (make_error.is_none())
      future.attr(interned<"cancel">())();
    else
      future.attr(interned<"set_exception">())(make_error());
  }

 private:
  void call() override {
    PyObject* future = held_.objects[0].ptr();
    const int running = executor_future_start(future);
    if (running < 0) PyErr_WriteUnraisable(future);
    if (running != 1) return;
    PyObject* error = nullptr;
    PyObject* result = call_catching(held_.objects[1].ptr(), held_.objects[2].ptr(), held_.objects[3].ptr(), &error);
    if (executor_future_finish(future, result != nullptr ? result : error, result == nullptr) < 0)
      PyErr_WriteUnraisable(future);
    Py_XDECREF(result);
    Py_XDECREF(error);
  }
};

// run_in_executor's job: runs fn(*args) unless the asyncio future was cancelled first, then hands
// the outcome to the loop with loop.call_soon_threadsafe(complete, future, succeeded, value).
class LoopJob : public PythonJob {
 public:
  LoopJob(py::object loop, py::object complete, py::object future, py::object fn, py::object args)
      : PythonJob({std::move(loop), std::move(complete), std::move(future), std::move(fn), std::move(args)}) {}

  // The asyncio future belongs to its loop: it is cancelled or failed there.
  void abandon(py::handle make_error) override {
    py::object loop = held_.objects[0];
    py::object future = held_.objects[2];
    held_.objects.clear();
    if (loop.attr(interned<"is_closed">())().cast<bool>()) return;
    if (make_error.is_none())
      loop.attr(interned<"call_soon_threadsafe">())(future.attr(interned<"cancel">()));
    else
      loop.attr(interned<"call_soon_threadsafe">())(future.attr(interned<"set_exception">()), make_error());
  }

 private:
  void call() override {
    PyObject* loop = held_.objects[0].ptr();
    PyObject* future = held_.objects[2].ptr();
    if (call_returns_true(future, interned<"cancelled">()) != 0) return;
    PyObject* error = nullptr;
    PyObject* result = call_catching(held_.objects[3].ptr(), held_.objects[4].ptr(), nullptr, &error);
    PyObject* value = result != nullptr ? result : error;
    // As asyncio's wrap_future: an outcome for a loop closed meanwhile is dropped.
    PyObject* closed = PyObject_CallMethodNoArgs(loop, interned<"is_closed">().ptr());
    PyObject* scheduled = nullptr;
    if (closed == Py_False) {
      PyObject* call[] = {loop, held_.objects[1].ptr(), future, result != nullptr ? Py_True : Py_False, value};
      scheduled = PyObject_VectorcallMethod(interned<"call_soon_threadsafe">().ptr(), call, 5, nullptr);
    }
    if (closed == nullptr || (closed == Py_False && scheduled == nullptr)) PyErr_WriteUnraisable(loop);
    Py_XDECREF(closed);
    Py_XDECREF(scheduled);
    Py_DECREF(value);
  }
};

// The results of one Executor.map call: one slot per item, filled by the workers in any order and
// read by the caller's iterator in order. No concurrent Future per item: a slot is a state, a
// value and a condition variable shared by the whole map.
class MapResults {
 public:
  // A new slot, for the next item; returns its index.
  std::size_t add_slot() {
    std::lock_guard<std::mutex> lock(mutex_);
    slots_.emplace_back();
    return slots_.size() - 1;
  }

  std::size_t size() {
    std::lock_guard<std::mutex> lock(mutex_);
    return slots_.size();
  }

  // Workers: the slot's job is starting. False when the map was cancelled first.
  bool start(std::size_t index) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (slots_[index].state != State::pending) return false;
    slots_[index].state = State::running;
    return true;
  }

  // Workers (with the GIL): the outcome of slot `index`; `value` is stolen.
  void finish(std::size_t index, PyObject* value, bool failed) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      slots_[index].value = py::reinterpret_steal<py::object>(value);
      slots_[index].state = failed ? State::failed : State::done;
      if (waiting_for_ != index) return;
    }
    ready_.notify_all();
  }

  // The caller (with the GIL): cancels every slot not started yet (the iterator was closed).
  void cancel_pending() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (Slot& slot : slots_)
      if (slot.state == State::pending) slot.state = State::cancelled;
  }

  // A job that will never run (the pool dropped it): its slot is cancelled.
  void cancel(std::size_t index) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (slots_[index].state != State::pending) return;
      slots_[index].state = State::cancelled;
    }
    ready_.notify_all();
  }

  // The caller: waits for slot `index` without the GIL, then returns its value or raises its
  // exception (CancelledError for a cancelled slot, TimeoutError past `timeout` seconds).
  py::object result(std::size_t index, std::optional<double> timeout) {
    if (index >= size()) raise(PyExc_IndexError, "map result index out of range");
    using Clock = std::chrono::steady_clock;
    const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                             std::chrono::duration<double>(std::max(0.0, timeout.value_or(0.0))));
    bool finished = false;
    State state = State::pending;
    py::object value;
    for (;;) {
      {
        py::gil_scoped_release without_gil;
        std::unique_lock<std::mutex> lock(mutex_);
        waiting_for_ = index;
        // Wait in short slices so that Python's signal handlers (Ctrl-C) run in between.
        auto until = Clock::now() + kSignalCheckInterval;
        if (timeout && deadline < until) until = deadline;
        finished = ready_.wait_until(lock, until, [&] { return slots_[index].state >= State::done; });
        waiting_for_ = kNobody;
        if (finished) {
          state = slots_[index].state;
          value = std::move(slots_[index].value);  // moves the pointer: no reference count touched
        }
      }
      if (finished) break;
      if (PyErr_CheckSignals() < 0) throw py::error_already_set();
      if (timeout && Clock::now() >= deadline) raise(PyExc_TimeoutError, "");
    }
    if (state == State::done) return value;
    if (state == State::failed) {
      PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(value.ptr())), value.ptr());
      throw py::error_already_set();
    }
    static py::handle cancelled_error =
        py::object(py::module_::import("concurrent.futures").attr("CancelledError")).release();
    PyErr_SetNone(cancelled_error.ptr());
    throw py::error_already_set();
  }

 private:
  enum class State { pending, running, done, failed, cancelled };
  struct Slot {
    State state = State::pending;
    py::object value;
  };
  static constexpr std::size_t kNobody = static_cast<std::size_t>(-1);
  static constexpr std::chrono::milliseconds kSignalCheckInterval{50};

  std::mutex mutex_;
  std::condition_variable ready_;
  // A deque: adding a slot leaves the others where they are.
  std::deque<Slot> slots_;
  std::size_t waiting_for_ = kNobody;
};

// One item of a map: fn(*args) into its slot.
class MapJob : public PythonJob {
 public:
  MapJob(std::shared_ptr<MapResults> results, std::size_t index, py::object fn, py::object args)
      : PythonJob({std::move(fn), std::move(args)}), results_(std::move(results)), index_(index) {}

  // A job dropped unrun, maybe on a thread without the GIL: the results may be the last reference.
  ~MapJob() override {
    if (!results_) return;
    py::gil_scoped_acquire gil;
    results_.reset();
  }

  void abandon(py::handle make_error) override {
    if (make_error.is_none())
      results_->cancel(index_);
    else if (results_->start(index_))
      results_->finish(index_, make_error().release().ptr(), /*failed=*/true);
    release();
  }

 private:
  void call() override {
    if (!results_->start(index_)) return;
    PyObject* error = nullptr;
    PyObject* result = call_catching(held_.objects[0].ptr(), held_.objects[1].ptr(), nullptr, &error);
    results_->finish(index_, result != nullptr ? result : error, result == nullptr);
  }

  void release() override {
    held_.objects.clear();
    results_.reset();  // the last reference may be this one: drop it while the GIL is held
  }

  std::shared_ptr<MapResults> results_;
  std::size_t index_;
};

// The thread state a worker released the GIL from, taken back when the worker exits.
thread_local PyThreadState* worker_thread_state = nullptr;

class PoolCore {
 public:
  // `launch(body)` starts a thread running body(); `start(worker_number)` runs first on each
  // worker (the initializer) and returns False when it failed, after which `failed()` runs.
  PoolCore(std::size_t max_workers, std::size_t min_workers, double idle_timeout, py::object launch, py::object start,
           py::object failed) {
    auto hooks = std::make_shared<GilObjects>();
    hooks->objects = {std::move(launch), std::move(start), std::move(failed)};
    core::ThreadPool::Options options;
    options.max_workers = max_workers;
    options.min_workers = min_workers;
    options.idle_timeout_seconds = idle_timeout;
    // Called by submit(), with the GIL held. The worker's body is entered with the GIL held too
    // (it is a threading.Thread's target) and returns with it held.
    options.launch = [hooks](core::ThreadPool::WorkerBody body) {
      hooks->objects[0](py::cpp_function([body = std::move(body)] { body(); }));
    };
    // On the worker, with the GIL still held: run the initializer, then let go of the GIL until
    // on_exit. Jobs take it back one burst at a time.
    options.on_start = [hooks](std::size_t number) {
      bool ready = false;
      try {
        ready = hooks->objects[1](number).cast<bool>();
      } catch (py::error_already_set& error) {
        error.discard_as_unraisable("turboloop worker start");
      }
      worker_thread_state = PyEval_SaveThread();
      return ready;
    };
    options.on_start_failed = [hooks] {
      py::gil_scoped_acquire gil;
      try {
        hooks->objects[2]();
      } catch (py::error_already_set& error) {
        error.discard_as_unraisable("turboloop initializer failure");
      }
    };
    options.on_exit = [] { PyEval_RestoreThread(worker_thread_state); };
    pool_ = std::make_unique<core::ThreadPool>(std::move(options));
  }

  ~PoolCore() {
    // Dropping the last Python reference may happen anywhere; the workers finish on their own.
    py::gil_scoped_release without_gil;
    pool_.reset();
  }

  // Executor.submit: a new concurrent.futures.Future for fn(*args, **kwargs).
  py::object submit(py::object fn, py::tuple args, py::dict kwargs) {
    check_open();
    py::object future = py::reinterpret_steal<py::object>(new_executor_future());
    if (!future) throw py::error_already_set();
    enqueue(std::make_unique<FutureJob>(future, std::move(fn), std::move(args), std::move(kwargs)));
    return future;
  }

  // The executor's state, checked by submit() as the stdlib checks it, in the same order.
  std::string broken;  // why the pool is unusable, once an initializer failed
  bool shut_down = false;
  static inline bool interpreter_exiting = false;

  void submit_to_loop(py::object loop, py::object complete, py::object future, py::object fn, py::object args) {
    check_open();
    enqueue(std::make_unique<LoopJob>(std::move(loop), std::move(complete), std::move(future), std::move(fn),
                                      std::move(args)));
  }

  // Executor.map's submission: fn(*args) for each tuple of `arguments`, into one MapResults. Each
  // item is submitted as it is read, so an iterable that fails part-way has run what came before,
  // as with the stdlib.
  std::shared_ptr<MapResults> map(py::object fn, py::iterable arguments) {
    check_open();
    auto results = std::make_shared<MapResults>();
    for (py::handle args : arguments)
      enqueue(std::make_unique<MapJob>(results, results->add_slot(), fn, py::reinterpret_borrow<py::object>(args)));
    return results;
  }

  // shutdown(wait=True): waits, without the GIL, until every worker has left its loop.
  void wait_for_workers() {
    py::gil_scoped_release without_gil;
    pool_->shutdown(/*wait=*/true, /*cancel_pending=*/false);
  }

  // Abandons every job not started yet: cancelled, or failed with make_error() when given.
  void drop_pending(py::object make_error) {
    for (auto& job : pool_->take_pending()) static_cast<PythonJob&>(*job).abandon(make_error);
  }

  void stop() { pool_->shutdown(/*wait=*/false, /*cancel_pending=*/false); }

  py::dict stats() const {
    const auto stats = pool_->stats();
    py::dict result;
    result["workers"] = stats.workers;
    result["idle"] = stats.idle;
    result["queued"] = stats.queued;
    result["started"] = stats.started;
    result["tasks_started"] = stats.jobs_started;
    result["total_wait"] = stats.total_wait_seconds;
    result["longest_wait"] = stats.longest_wait_seconds;
    return result;
  }

 private:
  void check_open() const {
    if (!broken.empty()) {
      static py::handle broken_pool =
          py::object(py::module_::import("concurrent.futures.thread").attr("BrokenThreadPool")).release();
      PyErr_SetObject(broken_pool.ptr(), py::str(broken).ptr());
      throw py::error_already_set();
    }
    if (shut_down) raise(PyExc_RuntimeError, "cannot schedule new futures after shutdown");
    if (interpreter_exiting) raise(PyExc_RuntimeError, "cannot schedule new futures after interpreter shutdown");
  }

  void enqueue(std::unique_ptr<core::Job> job) {
    if (pool_->submit(std::move(job)) != nullptr)
      raise(PyExc_RuntimeError, "cannot schedule new futures after shutdown");
  }

  std::unique_ptr<core::ThreadPool> pool_;
};

}  // namespace

void register_thread_pool_executor(py::module_& module) {
  py::class_<MapResults, std::shared_ptr<MapResults>>(module, "MapResults",
                                                      "The ordered results of one ThreadPoolExecutor.map call.")
      .def("__len__", &MapResults::size)
      .def("result", &MapResults::result, py::arg("index"), py::arg("timeout") = py::none())
      .def("cancel_pending", &MapResults::cancel_pending);

  py::class_<PoolCore>(module, "PoolCore", "The native worker pool of turboloop.ThreadPoolExecutor.")
      .def(py::init<std::size_t, std::size_t, double, py::object, py::object, py::object>(), py::arg("max_workers"),
           py::arg("min_workers"), py::arg("idle_timeout"), py::arg("launch"), py::arg("start"), py::arg("failed"))
      .def("submit", &PoolCore::submit, py::arg("fn"), py::arg("args"), py::arg("kwargs"))
      .def("submit_to_loop", &PoolCore::submit_to_loop, py::arg("loop"), py::arg("complete"), py::arg("future"),
           py::arg("fn"), py::arg("args"))
      .def("map", &PoolCore::map, py::arg("fn"), py::arg("arguments"))
      .def("drop_pending", &PoolCore::drop_pending, py::arg("make_error"))
      .def("stop", &PoolCore::stop)
      .def("wait_for_workers", &PoolCore::wait_for_workers)
      .def("stats", &PoolCore::stats)
      .def_readwrite("broken", &PoolCore::broken)
      .def_readwrite("shut_down", &PoolCore::shut_down)
      .def_property_static(
          "interpreter_exiting", [](py::handle) { return PoolCore::interpreter_exiting; },
          [](py::handle, bool exiting) { PoolCore::interpreter_exiting = exiting; });
}

}  // namespace turboloop::binding
