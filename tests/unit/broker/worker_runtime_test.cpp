// The worker runtime against a fake pool in this process: join, hello,
// batches in and results out, heartbeats while the caller is busy, and the
// ways a worker stops (told to, killed, its broker silent).
#include "slither/broker/worker.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <iterator>
#include <thread>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "slither/broker/protocol.hpp"
#include "slither/core/codec.hpp"
#include "worker_protocol.hpp"

namespace slither {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;
namespace wp = worker_protocol;

constexpr worker_id the_worker = 7;

// A pool as a broker would run it, minus the broker: answers one join, then
// sends and receives worker messages on demand.
class FakePool {
 public:
  explicit FakePool(std::chrono::milliseconds heartbeat = 50ms) : heartbeat_(heartbeat) {
    static std::atomic<int> n{0};
    dir_ = fs::temp_directory_path() /
           ("slither-wrt" + std::to_string(::getpid()) + "-" + std::to_string(n++));
    fs::create_directories(dir_);
    // Private, as a broker's runtime directory is: the worker checks it before joining.
    fs::permissions(dir_, fs::perms::owner_all);
    control_.bind("ipc://" + (dir_ / "control").string());
    tasks_.bind("ipc://" + (dir_ / "tasks").string());
    results_.bind("ipc://" + (dir_ / "results").string());
    results_.set(zmq::sockopt::rcvtimeo, 5000);
    joiner_ = std::thread([this] { answer_join(); });
  }
  ~FakePool() {
    if (joiner_.joinable()) joiner_.join();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  worker_options options() const {
    worker_options o;
    o.broker.runtime_dir = dir_;
    o.pool = "p";
    o.credits = 3;
    o.exit_on_kill = false;
    return o;
  }

  // Sends a worker message (header, then extra frames).
  void send(wp::header h, std::vector<buffer> extra = {}) {
    h.worker = h.worker == 0 ? the_worker : h.worker;
    const auto head = wp::encode_header(h);
    (void)tasks_.send(zmq::buffer(head.data(), head.size()),
                      extra.empty() ? zmq::send_flags::none : zmq::send_flags::sndmore);
    for (std::size_t i = 0; i < extra.size(); ++i) {
      (void)tasks_.send(zmq::buffer(extra[i].data(), extra[i].size()),
                        i + 1 < extra.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
    }
  }
  void send_raw(const std::vector<std::string>& frames) {
    for (std::size_t i = 0; i < frames.size(); ++i) {
      (void)tasks_.send(zmq::buffer(frames[i]),
                        i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
    }
  }
  void heartbeat() { send({wp::message_type::heartbeat}); }

  // The next message from the worker that is not a heartbeat (counting those).
  std::optional<std::pair<wp::header, std::vector<zmq::message_t>>> receive() {
    for (;;) {
      std::vector<zmq::message_t> parts;
      if (!zmq::recv_multipart(results_, std::back_inserter(parts))) return std::nullopt;
      std::vector<wp::frame> frames;
      for (auto& p : parts) frames.emplace_back(p.data<std::byte>(), p.size());
      auto h = wp::decode_message(frames, wp::direction::to_broker);
      EXPECT_TRUE(h) << h.error().message;
      if (!h) return std::nullopt;
      if (h->type == wp::message_type::heartbeat) {
        ++heartbeats;
        continue;
      }
      return std::pair(*h, std::move(parts));
    }
  }
  // Heartbeats that arrive within `d`.
  int heartbeats_within(std::chrono::milliseconds d) {
    int n = 0;
    results_.set(zmq::sockopt::rcvtimeo, 20);
    const auto until = std::chrono::steady_clock::now() + d;
    while (std::chrono::steady_clock::now() < until) {
      std::vector<zmq::message_t> parts;
      if (!zmq::recv_multipart(results_, std::back_inserter(parts))) continue;
      std::vector<wp::frame> frames;
      for (auto& p : parts) frames.emplace_back(p.data<std::byte>(), p.size());
      auto h = wp::decode_message(frames, wp::direction::to_broker);
      if (h && h->type == wp::message_type::heartbeat) ++n;
    }
    results_.set(zmq::sockopt::rcvtimeo, 5000);
    return n;
  }

  int heartbeats = 0;

 private:
  void answer_join() {
    std::vector<zmq::message_t> parts;
    if (!zmq::recv_multipart(control_, std::back_inserter(parts))) return;
    std::vector<protocol::frame> frames;
    for (std::size_t i = 1; i < parts.size(); ++i) {
      frames.emplace_back(parts[i].data<std::byte>(), parts[i].size());
    }
    auto req = protocol::decode_request(frames);
    ASSERT_TRUE(req);
    ASSERT_EQ(req->head.type, protocol::message_type::worker_join);
    EXPECT_EQ(req->body.find("pool")->as<std::string>(), "p");
    EXPECT_EQ(req->body.find("credits")->as<std::int64_t>(), 3);
    const Value reply(Map{{"worker", static_cast<std::int64_t>(the_worker)},
                          {"tasks", "ipc://" + (dir_ / "tasks").string()},
                          {"results", "ipc://" + (dir_ / "results").string()},
                          {"heartbeat_ms", static_cast<std::int64_t>(heartbeat_.count())},
                          {"heartbeat_misses", 4},
                          {"local", true},
                          {"ns", "fake"},
                          {"stores", Value(List{"features"})},
                          {"pool", "p"}});
    const auto out = protocol::encode_message(
        {{protocol::protocol_version, protocol::message_type::reply_ok, req->head.request_id},
         reply});
    (void)control_.send(parts[0], zmq::send_flags::sndmore);
    (void)control_.send(zmq::buffer(out[0].data(), out[0].size()), zmq::send_flags::sndmore);
    (void)control_.send(zmq::buffer(out[1].data(), out[1].size()), zmq::send_flags::none);
  }

  std::chrono::milliseconds heartbeat_;
  fs::path dir_;
  zmq::context_t ctx_{1};
  zmq::socket_t control_{ctx_, zmq::socket_type::router};
  zmq::socket_t tasks_{ctx_, zmq::socket_type::push};
  zmq::socket_t results_{ctx_, zmq::socket_type::pull};
  std::thread joiner_;
};

std::vector<buffer> batch_frames(const std::string& function, const List& payload) {
  job_target target;
  target.function = function;
  target.context.session_id = "s";
  return {wp::encode_meta(target), encode(Value(payload))};
}

wp::header batch_header(std::uint64_t batch, std::uint32_t count) {
  wp::header h;
  h.type = wp::message_type::batch;
  h.job = 3;
  h.batch = batch;
  h.attempt = 1;
  h.count = count;
  return h;
}

TEST(WorkerRuntime, JoinsSaysHelloAndRunsABatch) {
  FakePool pool;
  auto w = worker_runtime::connect(pool.options()).value();
  EXPECT_EQ(w.info().id, the_worker);
  EXPECT_EQ(w.info().ns, "fake");
  EXPECT_EQ(w.info().stores, std::vector<std::string>{"features"});
  EXPECT_TRUE(w.info().local);
  auto hello = pool.receive();
  ASSERT_TRUE(hello);
  EXPECT_EQ(hello->first.type, wp::message_type::hello);
  EXPECT_EQ(hello->first.worker, the_worker);
  EXPECT_EQ(hello->first.count, 3u) << "its credit window";
  EXPECT_EQ(hello->first.aux, static_cast<std::uint64_t>(::getpid()));

  pool.send(batch_header(11, 2), batch_frames("mod:fn", {1, 2}));
  auto b = w.next(5s);
  ASSERT_TRUE(b);
  EXPECT_EQ(b->function(), "mod:fn");
  EXPECT_EQ(b->context().session_id, "s");
  EXPECT_EQ(b->batch(), 11u);
  EXPECT_EQ(b->count(), 2u);
  EXPECT_EQ(decode(b->payload()).value(), Value(List{1, 2}));
  batch_results out;
  out.count = 2;
  const auto bytes = encode(Value(List{Value(), 4}));
  out.payload.assign(bytes.begin(), bytes.end());
  indexed_error e;
  e.index = 0;
  e.error.type = "ValueError";
  e.error.message = "no";
  out.errors.push_back(e);
  ASSERT_TRUE(w.respond(*b, std::move(out)));
  auto result = pool.receive();
  ASSERT_TRUE(result);
  EXPECT_EQ(result->first.type, wp::message_type::result);
  EXPECT_EQ(result->first.batch, 11u);
  EXPECT_EQ(result->first.count, 2u);
  auto& parts = result->second;
  EXPECT_EQ(decode({parts[1].data<std::byte>(), parts[1].size()}).value(), Value(List{Value(), 4}));
  auto errors = wp::decode_item_errors({parts[2].data<std::byte>(), parts[2].size()}, 2).value();
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].error.message, "no");

  pool.send(batch_header(12, 1), batch_frames("mod:fn", {1}));
  auto b2 = w.next(5s);
  ASSERT_TRUE(b2);
  ASSERT_TRUE(w.respond(*b2, batch_exception{"KeyError", "k", "tb"}));
  auto failed = pool.receive();
  ASSERT_TRUE(failed);
  EXPECT_EQ(failed->first.type, wp::message_type::batch_error);
  auto err = wp::decode_error({failed->second[1].data<std::byte>(), failed->second[1].size()});
  EXPECT_EQ(err.value().type, "KeyError");
  w.close();
  auto bye = pool.receive();
  ASSERT_TRUE(bye);
  EXPECT_EQ(bye->first.type, wp::message_type::bye);
}

TEST(WorkerRuntime, HeartbeatsGoOutWhileTheCallerIsBusy) {
  FakePool pool(50ms);
  auto w = worker_runtime::connect(pool.options()).value();
  ASSERT_TRUE(pool.receive());  // hello
  std::atomic<bool> busy{true};
  // The caller holds on to a batch for a long time (a handler holding the GIL).
  std::thread broker_side([&] {
    while (busy) {
      pool.heartbeat();
      std::this_thread::sleep_for(25ms);
    }
  });
  EXPECT_GE(pool.heartbeats_within(600ms), 6) << "one each 50 ms, from the runtime's own thread";
  busy = false;
  broker_side.join();
  EXPECT_FALSE(w.stopped());
}

TEST(WorkerRuntime, StopsWhenTheBrokerFallsSilent) {
  FakePool pool(50ms);
  auto w = worker_runtime::connect(pool.options()).value();
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(w.next(5s)) << "no batch, no heartbeat: the broker is gone";
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
  ASSERT_TRUE(w.stopped());
  EXPECT_NE(w.stopped()->find("fell silent"), std::string::npos) << *w.stopped();
  EXPECT_FALSE(w.respond(worker_batch{}, batch_results{}));
}

TEST(WorkerRuntime, StopsWhenToldAndWhenKilled) {
  for (const std::uint32_t now : {0u, 1u}) {
    FakePool pool;
    auto w = worker_runtime::connect(pool.options()).value();
    wp::header stop;
    stop.type = wp::message_type::stop;
    stop.count = now;
    pool.send(stop);
    EXPECT_FALSE(w.next(5s));
    ASSERT_TRUE(w.stopped());
    EXPECT_NE(w.stopped()->find(now == 1 ? "killed" : "stopped by the broker"), std::string::npos)
        << *w.stopped();
  }
}

// The caller runs a batch (it is not in next()): the receiving thread reads
// for it, so batches sent meanwhile wait in its queue, and a stop is acted on
// without the caller coming back. Then next() takes the socket back.
TEST(WorkerRuntime, ReadsForACallerBusyWithABatch) {
  FakePool pool;
  auto w = worker_runtime::connect(pool.options()).value();
  ASSERT_TRUE(pool.receive());  // hello
  pool.send(batch_header(1, 1), batch_frames("mod:fn", {1}));
  auto b = w.next(5s);
  ASSERT_TRUE(b);
  pool.send(batch_header(2, 1), batch_frames("mod:fn", {2}));
  pool.send(batch_header(3, 1), batch_frames("mod:fn", {3}));
  ASSERT_TRUE(w.respond(*b, batch_results{}));
  for (const std::uint64_t want : {2u, 3u}) {
    auto next = w.next(5s);
    ASSERT_TRUE(next);
    EXPECT_EQ(next->batch(), want);
  }
  // Busy again, for a long time: the stop still comes through.
  pool.send(batch_header(4, 1), batch_frames("mod:fn", {4}));
  auto busy = w.next(5s);
  ASSERT_TRUE(busy);
  wp::header stop;
  stop.type = wp::message_type::stop;
  pool.send(stop);
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (!w.stopped() && std::chrono::steady_clock::now() < deadline) {
    pool.heartbeat();  // the broker lives: only its stop may end the worker
    std::this_thread::sleep_for(5ms);
  }
  ASSERT_TRUE(w.stopped()) << "a stop reaches a worker whose caller is busy";
  EXPECT_NE(w.stopped()->find("stopped by the broker"), std::string::npos) << *w.stopped();
}

// A caller that comes back to next() while the receiving thread reads for
// it takes the socket over, again and again, and misses no batch.
TEST(WorkerRuntime, HandsTheSocketBackAndForth) {
  FakePool pool;
  auto w = worker_runtime::connect(pool.options()).value();
  ASSERT_TRUE(pool.receive());  // hello
  for (std::uint64_t i = 1; i <= 20; ++i) {
    pool.send(batch_header(i, 1), batch_frames("mod:fn", {1}));
    auto b = w.next(5s);
    ASSERT_TRUE(b) << "batch " << i;
    EXPECT_EQ(b->batch(), i);
    if (i % 2 == 0) {
      // Longer than the receiving thread takes to look: it holds the socket by now.
      pool.heartbeat();
      std::this_thread::sleep_for(80ms);
    }
    ASSERT_TRUE(w.respond(*b, batch_results{}));
  }
  EXPECT_FALSE(w.stopped());
}

TEST(WorkerRuntime, IgnoresMalformedAndMisaddressedMessages) {
  FakePool pool;
  auto w = worker_runtime::connect(pool.options()).value();
  pool.send_raw({"garbage"});
  pool.send_raw({std::string(48, 'x'), "y"});
  wp::header other = batch_header(1, 1);
  other.worker = the_worker + 1;
  pool.send(other, batch_frames("fn", {1}));
  pool.send(batch_header(2, 1), {buffer{std::byte{0xff}}, encode(Value(List{1}))});  // bad meta
  pool.send(batch_header(3, 1), batch_frames("fn", {1}));
  auto b = w.next(5s);
  ASSERT_TRUE(b);
  EXPECT_EQ(b->batch(), 3u) << "only the well-formed batch for this worker";
}

TEST(WorkerRuntime, RefusesBadOptionsAndAnAbsentBroker) {
  worker_options o;
  o.credits = 0;
  EXPECT_EQ(worker_runtime::connect(o).error().code, errc::invalid_argument);
  o.credits = 2;
  o.broker.runtime_dir = fs::temp_directory_path() / "slither-no-such-broker";
  EXPECT_EQ(worker_runtime::connect(o).error().code, errc::unavailable);
}

TEST(WorkerRuntime, ReadsItsOptionsFromTheEnvironment) {
  ::setenv("SLITHER_CONTROL_ENDPOINT", "ipc:///x/control", 1);
  ::setenv("SLITHER_POOL", "gpu", 1);
  ::setenv("SLITHER_WORKER_TOKEN", "t0k", 1);
  ::setenv("SLITHER_WORKER_CREDITS", "5", 1);
  auto o = worker_options::from_environment().value();
  EXPECT_EQ(o.broker.endpoint, "ipc:///x/control");
  EXPECT_EQ(o.pool, "gpu");
  EXPECT_EQ(o.token, "t0k");
  EXPECT_EQ(o.credits, 5u);
  ::setenv("SLITHER_WORKER_CREDITS", "five", 1);
  auto bad = worker_options::from_environment();
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("SLITHER_WORKER_CREDITS"), std::string::npos);
  for (const char* v : {"SLITHER_CONTROL_ENDPOINT", "SLITHER_POOL", "SLITHER_WORKER_TOKEN",
                        "SLITHER_WORKER_CREDITS"}) {
    ::unsetenv(v);
  }
}

}  // namespace
}  // namespace slither
