// Scheduler: asyncio's _run_once semantics with a fake clock and a fake poll.
#include <algorithm>
#include <functional>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "catch.hpp"
#include "core/scheduler.hpp"

namespace {

struct Flags {
  bool cancelled = false;
  bool scheduled = false;
};

// A scheduled callback whose cancel/scheduled state the test can see after the scheduler moved it.
struct Item {
  std::function<void()> callback;
  std::shared_ptr<Flags> flags = std::make_shared<Flags>();
  bool cancelled() const { return flags->cancelled; }
  void set_scheduled(bool scheduled) { flags->scheduled = scheduled; }
};

using Scheduler = turboloop::core::Scheduler<Item>;

struct Harness {
  Scheduler scheduler;
  double now = 100.0;
  std::vector<double> polls;
  std::vector<std::string> log;

  Item item(std::string name, std::function<void()> extra = {}) {
    return Item{[this, name, extra] {
      log.push_back(name);
      if (extra) extra();
    }};
  }

  void run_once() {
    scheduler.run_once([this] { return now; }, 1e-9, [this](double timeout) { polls.push_back(timeout); },
                       [](Item& item) { item.callback(); });
  }
};

}  // namespace

TEST_CASE("what a callback schedules runs in the next iteration") {
  Harness h;
  h.scheduler.call_soon(h.item("a", [&] { h.scheduler.call_soon(h.item("c")); }));
  h.scheduler.call_soon(h.item("b"));
  h.run_once();
  REQUIRE(h.log == std::vector<std::string>{"a", "b"});
  h.run_once();
  REQUIRE(h.log == std::vector<std::string>{"a", "b", "c"});
}

TEST_CASE("poll timeout: 0 with work ready, until the next timer, forever when idle") {
  Harness h;
  h.run_once();
  REQUIRE(h.polls.back() == Scheduler::kForever);
  h.scheduler.call_at(h.now + 2.5, h.item("t"));
  h.run_once();
  REQUIRE(h.polls.back() == Approx(2.5));
  h.scheduler.call_soon(h.item("x"));
  h.run_once();
  REQUIRE(h.polls.back() == 0.0);
  h.scheduler.call_at(h.now + 1e9, h.item("far"));
  h.now += 10;  // the 2.5 s timer is now overdue: its timeout clamps at 0
  h.run_once();
  REQUIRE(h.polls.back() == 0.0);
  REQUIRE(h.log == std::vector<std::string>{"x", "t"});
  h.run_once();
  REQUIRE(h.polls.back() == Scheduler::kMaxPollSeconds);
}

TEST_CASE("a pending stop makes the poll non-blocking") {
  Harness h;
  h.scheduler.stop();
  h.run_once();
  REQUIRE(h.polls.back() == 0.0);
}

TEST_CASE("timers fire in deadline order, equal deadlines in scheduling order, after ready callbacks") {
  Harness h;
  h.scheduler.call_at(h.now + 2, h.item("t2"));
  h.scheduler.call_at(h.now + 1, h.item("t1a"));
  h.scheduler.call_at(h.now + 1, h.item("t1b"));
  h.scheduler.call_soon(h.item("soon"));
  h.now += 5;
  h.run_once();
  REQUIRE(h.log == std::vector<std::string>{"soon", "t1a", "t1b", "t2"});
}

TEST_CASE("a NaN deadline is due at once, as in asyncio") {
  Harness h;
  h.scheduler.call_at(std::numeric_limits<double>::quiet_NaN(), h.item("nan"));
  h.run_once();
  REQUIRE(h.polls.back() == 0.0);
  REQUIRE(h.log == std::vector<std::string>{"nan"});
}

TEST_CASE("timers not yet due stay scheduled") {
  Harness h;
  Item timer = h.item("later");
  auto flags = timer.flags;
  h.scheduler.call_at(h.now + 1, std::move(timer));
  REQUIRE(flags->scheduled);
  h.run_once();
  REQUIRE(h.log.empty());
  REQUIRE(flags->scheduled);
  h.now += 1;
  h.run_once();
  REQUIRE(h.log == std::vector<std::string>{"later"});
  REQUIRE_FALSE(flags->scheduled);
}

TEST_CASE("cancelled callbacks and timers are skipped") {
  Harness h;
  Item soon = h.item("soon");
  soon.flags->cancelled = true;
  h.scheduler.call_soon(std::move(soon));
  Item timer = h.item("timer");
  auto flags = timer.flags;
  h.scheduler.call_at(h.now + 1, std::move(timer));
  flags->cancelled = true;
  h.scheduler.timer_cancelled();
  h.run_once();
  REQUIRE(h.polls.back() == 0.0);  // the cancelled callback still counts as ready, as in asyncio
  h.run_once();
  // The cancelled timer at the heap's top was dropped before polling, so the poll blocks.
  REQUIRE(h.polls.back() == Scheduler::kForever);
  REQUIRE_FALSE(flags->scheduled);
  REQUIRE(h.log.empty());
}

TEST_CASE("the heap is compacted when most of a large heap is cancelled") {
  Harness h;
  std::vector<std::shared_ptr<Flags>> all;
  for (int i = 0; i < 300; ++i) {
    std::string name = std::to_string(i);  // not "t" + ...: GCC 12's -Wrestrict misfires on it at -O3
    Item timer = h.item(name.insert(0, 1, 't'));
    all.push_back(timer.flags);
    h.scheduler.call_at(h.now + 10 + i, std::move(timer));
  }
  // Cancel 200 timers that are not at the top of the heap.
  for (int i = 50; i < 250; ++i) {
    all[i]->cancelled = true;
    h.scheduler.timer_cancelled();
  }
  h.run_once();
  REQUIRE(h.scheduler.timer_count() == 100);
  for (int i = 50; i < 250; ++i) REQUIRE_FALSE(all[i]->scheduled);
  REQUIRE(all[0]->scheduled);
}

TEST_CASE("an exception from a callback leaves the rest of the batch queued") {
  Harness h;
  h.scheduler.call_soon(h.item("a", [] { throw std::runtime_error("boom"); }));
  h.scheduler.call_soon(h.item("b"));
  REQUIRE_THROWS_AS(h.run_once(), std::runtime_error);
  REQUIRE(h.log == std::vector<std::string>{"a"});
  REQUIRE(h.scheduler.ready_count() == 1);
  h.run_once();
  REQUIRE(h.log == std::vector<std::string>{"a", "b"});
}

TEST_CASE("run_until_stopped stops after the iteration that called stop and clears the request") {
  Harness h;
  h.scheduler.call_soon(h.item("a", [&] {
    h.scheduler.stop();
    h.scheduler.call_soon(h.item("next"));
  }));
  h.scheduler.call_soon(h.item("b"));
  h.scheduler.run_until_stopped([&] { return h.now; }, 1e-9, [](double) {}, [](Item& item) { item.callback(); });
  REQUIRE(h.log == std::vector<std::string>{"a", "b"});
  REQUIRE_FALSE(h.scheduler.stopping());
  REQUIRE(h.scheduler.ready_count() == 1);
}

TEST_CASE("items sent from other threads run in the iteration after they arrive") {
  Harness h;
  REQUIRE(h.scheduler.call_soon_threadsafe(h.item("x")));
  REQUIRE_FALSE(h.scheduler.call_soon_threadsafe(h.item("y")));
  h.run_once();
  REQUIRE(h.log == std::vector<std::string>{"x", "y"});
}

TEST_CASE("items sent from other threads keep their place before later call_soon items") {
  Harness h;
  h.scheduler.call_soon(h.item("first"));
  h.scheduler.call_soon_threadsafe(h.item("threadsafe"));
  h.scheduler.call_soon(h.item("later"));
  h.run_once();
  REQUIRE(h.log == std::vector<std::string>{"first", "threadsafe", "later"});
}

TEST_CASE("clear drops everything and unschedules timers") {
  Harness h;
  Item timer = h.item("t");
  auto flags = timer.flags;
  h.scheduler.call_at(h.now + 1, std::move(timer));
  h.scheduler.call_soon(h.item("s"));
  h.scheduler.call_soon_threadsafe(h.item("x"));
  h.scheduler.clear();
  REQUIRE_FALSE(flags->scheduled);
  REQUIRE(h.scheduler.ready_count() == 0);
  REQUIRE(h.scheduler.timer_count() == 0);
  h.now += 5;
  h.run_once();
  REQUIRE(h.log.empty());
}

TEST_CASE("for_each visits ready items, timers, and items other threads sent but the loop has not taken") {
  Harness h;
  h.scheduler.call_soon(h.item("ready"));
  h.scheduler.call_at(h.now + 1, h.item("timer"));
  Item sent = h.item("threadsafe");
  const Flags* sent_flags = sent.flags.get();
  h.scheduler.call_soon_threadsafe(std::move(sent));
  std::vector<const Flags*> visited;
  h.scheduler.for_each([&](const Item& item) { visited.push_back(item.flags.get()); });
  REQUIRE(visited.size() == 3);
  REQUIRE(std::count(visited.begin(), visited.end(), sent_flags) == 1);
}
