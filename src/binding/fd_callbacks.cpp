// add_reader/add_writer and their removal (see fd_callbacks.hpp), and their methods on LoopCore:
// _add_reader, _remove_reader, _add_writer, _remove_writer and _fd_key, which asyncio's selector
// event loop code (sock_*, transports) calls in place of its selector's.
#include "binding/fd_callbacks.hpp"

#include <cerrno>
#include <string>

#include "binding/loop.hpp"

namespace turboloop::binding {
namespace {

using core::FdWatchers;

void cancel(const HandleRef& handle) {
  if (handle.get() != nullptr) py::handle(reinterpret_cast<PyObject*>(handle.get())).attr(interned<"cancel">())();
}

py::object handle_or_none(const HandleRef& handle) {
  return py::reinterpret_borrow<py::object>(handle.get() != nullptr ? reinterpret_cast<PyObject*>(handle.get())
                                                                    : Py_None);
}

// The descriptor of an int or of an object with fileno(), with the selectors module's errors
// (and epoll's OverflowError for a number beyond a C int).
int fileobj_to_fd(py::handle fileobj) {
  if (PyLong_CheckExact(fileobj.ptr())) {
    const long fd = PyLong_AsLong(fileobj.ptr());
    if (fd >= 0 && fd <= INT_MAX) return static_cast<int>(fd);
    PyErr_Clear();
  }
  // Never released: a static py::object would be released after the interpreter is gone.
  static PyObject* const to_fd = py::object(py::module_::import("selectors").attr("_fileobj_to_fd")).release().ptr();
  const py::object fd = py::handle(to_fd)(fileobj);
  int overflow = 0;
  const long long value = PyLong_AsLongLongAndOverflow(fd.ptr(), &overflow);
  if (value == -1 && PyErr_Occurred()) throw py::error_already_set();
  if (overflow != 0 || value > INT_MAX) raise(PyExc_OverflowError, "Python int too large to convert to C int");
  return static_cast<int>(value);
}

// The descriptor of `fileobj`, or for a closed one still registered the descriptor it was
// registered under (a selector's get_key() finds it by identity).
int registered_fd(const FdCallbacks& fds, py::handle fileobj) {
  try {
    return fileobj_to_fd(fileobj);
  } catch (py::error_already_set& error) {
    if (!error.matches(PyExc_ValueError)) throw;
    const int fd = fds.find_registered(fileobj);
    if (fd < 0) throw;
    return fd;
  }
}

// The descriptor to remove, as registered_fd(); -1 when it was never registered.
int fd_to_remove(const FdCallbacks& fds, py::handle fileobj) {
  try {
    return registered_fd(fds, fileobj);
  } catch (py::error_already_set& error) {
    if (error.matches(PyExc_OverflowError)) return -1;  // never registered: the selector's KeyError
    throw;
  }
}

// The context= keyword of _add_reader/_add_writer (asyncio passes its transports' context from
// 3.15 on): the context the callback runs in; None, or left out, copies the current one.
PyObject* context_keyword(const char* method, const py::kwargs& kwargs) {
  PyObject* context = Py_None;
  for (const auto& [name, value] : kwargs) {
    if (!name.equal(interned<"context">())) {
      throw py::type_error(std::string(method) + "() got an unexpected keyword argument '" +
                           py::str(name).cast<std::string>() + "'");
    }
    context = value.ptr();
  }
  return context;
}

py::object add_callback(py::handle self, unsigned event, py::handle fileobj, py::handle callback, py::args args,
                        PyObject* context) {
  auto& core = self.cast<LoopCore&>();
  core.check_closed();
  const int fd = registered_fd(*core.fds, fileobj);
  Handle* handle = new_handle(&HandleType, callback.ptr(), args.ptr(), context, self.ptr(), &core, 0.0);
  if (handle == nullptr) throw py::error_already_set();
  HandleRef owned(handle);
  auto result = py::reinterpret_borrow<py::object>(reinterpret_cast<PyObject*>(handle));
  core.fds->add(fd, fileobj, event, std::move(owned));
  return result;
}

bool remove_callback(LoopCore& core, unsigned event, py::handle fileobj) {
  if (core.closed || !core.fds) return false;
  const int fd = fd_to_remove(*core.fds, fileobj);
  int error = 0;
  const bool removed = fd >= 0 && core.fds->remove(fd, event, &error);
  if (error != 0) {
    errno = error;
    PyErr_SetFromErrno(PyExc_OSError);
    throw py::error_already_set();
  }
  return removed;
}

}  // namespace

// Both methods take what they replace or drop out of the map before releasing it: releasing a
// file object or a Handle may run Python code (a __del__) that adds or removes readers itself.

void FdCallbacks::add(int fd, py::handle fileobj, unsigned event, HandleRef handle, py::handle owner) {
  const auto parked = slots_.find(fd);
  if (parked != slots_.end() && parked->second.parked_by) {
    if (event == FdWatchers::kReadable && owner && parked->second.parked_by.is(owner)) {
      // Still in the kernel's set for reading: nothing to ask it.
      const py::object taken_back = std::move(parked->second.parked_by);
      const py::object replaced = parked->second.adopt(fileobj);
      parked->second.reader = std::move(handle);
      return;
    }
    // Someone else's reader: the parked one leaves the kernel's set first, so that the kernel
    // is asked for the reader as a selector would ask it (a closed descriptor then fails).
    if (event == FdWatchers::kReadable) unpark(parked);
  }
  const int status = watchers_.watch(fd, watchers_.watched(fd) | event);
  if (status != 0) {
    // As the selector's failed modify(): the descriptor is forgotten, its callbacks not cancelled.
    const auto found = slots_.find(fd);
    if (found != slots_.end()) {
      const Slot dropped = std::move(found->second);
      slots_.erase(found);
    }
    errno = -status;
    PyErr_SetFromErrno(PyExc_OSError);
    throw py::error_already_set();
  }
  const auto found = slots_.try_emplace(fd).first;
  const py::object replaced = found->second.adopt(fileobj);
  std::swap(event == FdWatchers::kReadable ? found->second.reader : found->second.writer, handle);
  cancel(handle);
}

void FdCallbacks::park_reader(int fd, py::handle owner) {
  const auto found = slots_.find(fd);
  if (found == slots_.end()) return;
  parked_now_.push_back(fd);
  HandleRef removed;
  std::swap(removed, found->second.reader);
  found->second.parked_by = py::reinterpret_borrow<py::object>(owner);
  cancel(removed);
}

void FdCallbacks::unpark(std::unordered_map<int, Slot>::iterator found) {
  const py::object owner = std::move(found->second.parked_by);
  const unsigned remaining = watchers_.watched(found->first) & ~FdWatchers::kReadable;
  // A writer on a descriptor closed meanwhile stays registered: a selector would have made no
  // system call for the parked reader, so it would not have noticed either.
  watchers_.narrow(found->first, remaining);
  if (remaining == 0) {
    const Slot dropped = std::move(found->second);
    slots_.erase(found);
  }
}

void FdCallbacks::drop_stale_parked(bool poll_may_block) {
  if (poll_may_block) {
    parked_before_.insert(parked_before_.end(), parked_now_.begin(), parked_now_.end());
    parked_now_.clear();
  }
  for (const int fd : parked_before_) {
    const auto found = slots_.find(fd);
    if (found != slots_.end() && found->second.parked_by) unpark(found);
  }
  parked_before_.clear();
  std::swap(parked_before_, parked_now_);
}

bool FdCallbacks::remove(int fd, unsigned event, int* error) {
  const auto found = slots_.find(fd);
  if (found == slots_.end()) return false;
  HandleRef removed;
  std::swap(removed, event == FdWatchers::kReadable ? found->second.reader : found->second.writer);
  const py::object parked_by = event == FdWatchers::kReadable ? std::move(found->second.parked_by) : py::object();
  const unsigned remaining = watchers_.watched(fd) & ~event;
  const int status = watchers_.watch(fd, remaining);
  // With only a parked reader left, the selector would have unregistered, which raises nothing.
  const bool still_registered = found->second.registered();
  if (remaining == 0 || status != 0) {
    const Slot dropped = std::move(found->second);
    slots_.erase(found);
  }
  if (status != 0 && still_registered && error != nullptr) {
    // As the selector's failed modify(): its callbacks are not cancelled.
    *error = -status;
    return false;
  }
  if (removed.get() == nullptr) return false;
  cancel(removed);
  return true;
}

int FdCallbacks::find_registered(py::handle fileobj) const {
  for (const auto& [fd, slot] : slots_)
    if (slot.registered() && slot.fileobj.is(fileobj)) return fd;
  return -1;
}

void FdCallbacks::schedule_ready(LoopScheduler& scheduler) {
  watchers_.take_ready([&](int fd, unsigned events) {
    for (const unsigned event : {FdWatchers::kReadable, FdWatchers::kWritable}) {
      if (!(events & event)) continue;
      const auto found = slots_.find(fd);
      if (found == slots_.end()) return;
      const HandleRef& handle = event == FdWatchers::kReadable ? found->second.reader : found->second.writer;
      if (handle.get() == nullptr) continue;  // a parked reader's readiness: see park_reader()
      if (handle.cancelled()) {
        remove(fd, event);
      } else {
        scheduler.call_soon(handle.share());
      }
    }
  });
}

py::object FdCallbacks::key(int fd) const {
  const auto found = slots_.find(fd);
  if (found == slots_.end()) return py::none();
  const Slot& slot = found->second;
  // A parked reader is no reader: only the callbacks count.
  const unsigned events = (slot.reader.get() != nullptr ? FdWatchers::kReadable : 0) |
                          (slot.writer.get() != nullptr ? FdWatchers::kWritable : 0);
  if (events == 0) return py::none();
  return py::make_tuple(events, handle_or_none(slot.reader), handle_or_none(slot.writer));
}

std::size_t FdCallbacks::reader_count() const {
  std::size_t count = 0;
  for (const auto& [fd, slot] : slots_) count += slot.reader.get() != nullptr ? 1 : 0;
  return count;
}

std::size_t FdCallbacks::writer_count() const {
  std::size_t count = 0;
  for (const auto& [fd, slot] : slots_) count += slot.writer.get() != nullptr ? 1 : 0;
  return count;
}

void add_fd_methods(py::class_<LoopCore>& cls) {
  cls.def("_add_reader",
          [](py::handle self, py::handle fd, py::handle callback, py::args args, py::kwargs kwargs) {
            return add_callback(self, FdWatchers::kReadable, fd, callback, args,
                                context_keyword("_add_reader", kwargs));
          })
      .def("_add_writer",
           [](py::handle self, py::handle fd, py::handle callback, py::args args, py::kwargs kwargs) {
             return add_callback(self, FdWatchers::kWritable, fd, callback, args,
                                 context_keyword("_add_writer", kwargs));
           })
      .def("_remove_reader",
           [](LoopCore& core, py::handle fd) { return remove_callback(core, FdWatchers::kReadable, fd); })
      .def("_remove_writer",
           [](LoopCore& core, py::handle fd) { return remove_callback(core, FdWatchers::kWritable, fd); })
      .def("_fd_key", [](LoopCore& core, py::handle fileobj) -> py::object {
        if (!core.fds) return py::none();
        const int fd = fd_to_remove(*core.fds, fileobj);
        return fd < 0 ? py::none() : core.fds->key(fd);
      });
}

}  // namespace turboloop::binding
