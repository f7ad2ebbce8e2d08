// The worker pool's supervision, with real worker processes: deaths and
// restarts, timeouts, affinity, recycling, workers started by others, start
// failures, a dead broker's leftovers, clients that go away.
#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/wait.h>

#include <fstream>
#include <iterator>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "control_channel.hpp"
#include "dispatch_fixture.hpp"
#include "job_wire.hpp"
#include "slither/broker/protocol.hpp"
#include "worker_protocol.hpp"

extern char** environ;

namespace slither {
namespace {

using namespace test_support;

bool alive(pid_t pid) {
  return ::kill(pid, 0) == 0;
}

// Gone, or dead and waiting for a reaper (the broker reaps its own children).
bool gone_or_zombie(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  if (!std::getline(stat, text)) return true;
  const auto close = text.rfind(')');
  return close != std::string::npos && close + 2 < text.size() && text[close + 2] == 'Z';
}

// A process started by the test, killed and reaped at the end.
struct started_process {
  explicit started_process(std::vector<std::string> args) {
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    if (posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ) != 0) pid = -1;
  }
  ~started_process() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      int status = 0;
      ::waitpid(pid, &status, 0);
    }
  }
  // Reaps it if it has exited.
  bool exited() {
    int status = 0;
    if (pid > 0 && ::waitpid(pid, &status, WNOHANG) == pid) {
      pid = -1;
      return true;
    }
    return pid <= 0;
  }
  pid_t pid = -1;
};

TEST_F(DispatchTest, AKilledWorkerIsReplacedAndItsBatchRetriedElsewhere) {
  Broker& b = start(2);
  ASSERT_TRUE(wait_workers(2));
  const auto before = worker_pids();
  auto o = job("pid", 1, 2);
  o.context.metadata = Map{};
  retry_policy r;
  r.max_attempts = 3;
  r.delay = backoff{0ms, 1.0, 0ms};
  o.on_error = r;
  // Kill one worker; the pool starts another, and a job still runs to its end.
  ASSERT_EQ(::kill(before[0], SIGKILL), 0);
  ASSERT_TRUE(eventually([&] {
    const auto now = worker_pids();
    return now.size() == 2 && std::find(now.begin(), now.end(), before[0]) == now.end();
  }));
  auto report = dispatch(b, numbered(20), o).value();
  for (const auto& res : report.results) EXPECT_TRUE(res.ok());
  const Value st = pool_stats();
  EXPECT_GE(count(st, "worker_deaths"), 1);
  EXPECT_GE(count(st, "restarts"), 1);
  EXPECT_EQ(count(st, "spawned"), 3);
}

TEST_F(DispatchTest, AHungHandlerTimesOutItsWorkerIsReplacedAndThePolicyApplies) {
  Broker& b = start(1);
  ASSERT_TRUE(wait_workers(1));
  const pid_t first = worker_pids()[0];
  auto o = job("sleep", 2, 1);
  o.context.metadata = Map{{"ms", 60000}};
  o.timeout = 300ms;
  o.on_error = skip_policy{};
  const auto t0 = clock::now();
  auto report = dispatch(b, numbered(2), o).value();
  EXPECT_LT(clock::now() - t0, 10s);
  ASSERT_EQ(report.results.size(), 2u);
  for (const auto& r : report.results) {
    EXPECT_EQ(r.status, item_status::skipped);
    ASSERT_TRUE(r.error);
    EXPECT_EQ(r.error->kind, failure_kind::timeout);
  }
  EXPECT_TRUE(eventually([&] { return !alive(first) || ::waitpid(first, nullptr, WNOHANG) != 0; }));
  ASSERT_TRUE(eventually([&] {
    const auto now = worker_pids();
    return now.size() == 1 && now[0] != first;
  }));
  EXPECT_EQ(count(pool_stats(), "timeouts"), 1);
  EXPECT_TRUE(dispatch(b, numbered(4), job("double")).value().results.at(0).ok());
}

TEST_F(DispatchTest, ASessionStaysOnOneWorkerAndMovesWhenItDies) {
  Broker& b = start(3);
  ASSERT_TRUE(wait_workers(3));
  auto o = job("pid", 1, 2);
  o.context.session_id = "model-a";
  o.affinity = affinity_mode::hint;
  retry_policy r;
  r.max_attempts = 3;
  r.delay = backoff{0ms, 1.0, 0ms};
  o.on_error = r;
  std::uint64_t produced = 0;
  auto stream = dispatch_stream(
                    b,
                    [&]() -> std::optional<Item> {
                      if (produced == 60) return std::nullopt;
                      const auto i = produced++;
                      return wrap(Value(static_cast<std::int64_t>(i)), i);
                    },
                    o)
                    .value();
  std::set<std::int64_t> first_pids;
  for (int i = 0; i < 20; ++i) {
    auto res = stream.next();
    ASSERT_TRUE(res && res->ok());
    first_pids.insert(res->item.payload.as<std::int64_t>());
  }
  ASSERT_EQ(first_pids.size(), 1u) << "the session's batches ran on one worker";
  const auto pinned = static_cast<pid_t>(*first_pids.begin());
  ASSERT_EQ(::kill(pinned, SIGKILL), 0);
  std::vector<std::int64_t> later;
  while (auto res = stream.next()) {
    ASSERT_TRUE(res->ok()) << "retried elsewhere: " << (res->error ? res->error->describe() : "");
    later.push_back(res->item.payload.as<std::int64_t>());
  }
  ASSERT_EQ(later.size(), 40u);
  // The batches the dead worker held were retried wherever there was room,
  // one per worker; the session's later batches all run on its new worker.
  const std::set<std::int64_t> last(later.end() - 20, later.end());
  EXPECT_EQ(last.size(), 1u) << "the session moved to one other worker";
  EXPECT_EQ(last.count(pinned), 0u);
  ASSERT_FALSE(stream.moves().empty()) << "and the caller was told";
  EXPECT_EQ(stream.moves()[0].session, "model-a");
  EXPECT_NE(stream.moves()[0].from, stream.moves()[0].to);
}

TEST_F(DispatchTest, RecyclingByMaxBatchesFailsNoItem) {
  auto p = pool(2);
  p.max_batches = 3;
  Broker& b = start(options({p}));
  auto report = dispatch(b, numbered(60), job("double", 2, 2)).value();
  ASSERT_EQ(report.results.size(), 60u);
  for (const auto& r : report.results) {
    EXPECT_TRUE(r.ok()) << (r.error ? r.error->describe() : "");
  }
  const Value st = pool_stats();
  EXPECT_GE(count(st, "recycled"), 5);
  EXPECT_GE(count(st, "spawned"), 7);
  EXPECT_EQ(count(st, "worker_deaths"), 0) << "retired workers leave as expected";
}

TEST_F(DispatchTest, RecyclingByResidentMemoryFailsNoItem) {
  auto p = pool(1);
  p.max_rss_mib = 1;  // any process is larger: recycled after each heartbeat
  p.heartbeat = 50ms;
  p.heartbeat_misses = 40;
  Broker& b = start(options({p}));
  ASSERT_TRUE(eventually([&] { return count(pool_stats(), "recycled") >= 2; }));
  auto report = dispatch(b, numbered(40), job("double", 2, 2)).value();
  for (const auto& r : report.results) {
    EXPECT_TRUE(r.ok()) << (r.error ? r.error->describe() : "");
  }
  EXPECT_EQ(count(pool_stats(), "worker_deaths"), 0);
}

TEST_F(DispatchTest, AWorkerThatStopsHeartbeatingIsKilledAndReplaced) {
  auto p = pool(1);
  p.heartbeat = 50ms;
  p.heartbeat_misses = 4;
  start(options({p}));
  ASSERT_TRUE(wait_workers(1));
  const pid_t frozen = worker_pids()[0];
  ASSERT_EQ(::kill(frozen, SIGSTOP), 0);  // alive, silent
  ASSERT_TRUE(eventually([&] {
    const auto now = worker_pids();
    return now.size() == 1 && now[0] != frozen;
  }));
  EXPECT_TRUE(eventually([&] { return gone_or_zombie(frozen); }));
  EXPECT_GE(count(pool_stats(), "worker_deaths"), 1);
}

TEST_F(DispatchTest, WorkersStartedByOthersJoinAndServe) {
  Broker& b = start(options({pool(0)}));
  std::vector<std::unique_ptr<started_process>> workers;
  for (int i = 0; i < 2; ++i) {
    workers.push_back(std::make_unique<started_process>(std::vector<std::string>{
        SLITHER_TEST_WORKER_EXE, "--runtime-dir", dir_.string(), "--namespace", ns_}));
  }
  ASSERT_TRUE(wait_workers(2));
  auto report = dispatch(b, numbered(40), job("pid", 2, 4)).value();
  std::set<std::int64_t> pids;
  for (const auto& r : report.results) {
    ASSERT_TRUE(r.ok());
    pids.insert(r.item.payload.as<std::int64_t>());
  }
  for (const auto pid : pids) {
    EXPECT_TRUE(pid == workers[0]->pid || pid == workers[1]->pid) << pid;
  }
  EXPECT_EQ(count(pool_stats(), "spawned"), 0);
  // They leave when the broker stops: told to (their heartbeats would take 2 s).
  broker_->stop();
  EXPECT_TRUE(eventually([&] { return workers[0]->exited() && workers[1]->exited(); }, 1s));
}

TEST_F(DispatchTest, WorkersThatCannotStartFailTheJobClearlyWithoutARestartLoop) {
  auto p = pool(2);
  p.command = {"/bin/sh", "-c", "echo 'no module named slither' >&2; exit 3"};
  p.max_start_failures = 3;
  p.restart_backoff = backoff{10ms, 2.0, 500ms};
  start(options({p}));
  ASSERT_TRUE(eventually([&] { return pool_stats().find("failing") != nullptr; }));
  const auto t0 = clock::now();
  auto job_ = dispatch_job::open(*broker_, job("double"));
  ASSERT_FALSE(job_);
  EXPECT_EQ(job_.error().code, errc::unavailable);
  EXPECT_NE(job_.error().message.find("exited with status 3"), std::string::npos)
      << job_.error().message;
  EXPECT_NE(job_.error().message.find("no module named slither"), std::string::npos)
      << job_.error().message;
  std::this_thread::sleep_for(1s);
  const auto spawned = count(pool_stats(), "spawned");
  const auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - t0);
  // 2 slots, a few starts before failing, then at most one per slot per 500 ms.
  EXPECT_LE(spawned, 8 + 2 * (elapsed.count() / 500 + 1)) << "spawned " << spawned;
}

TEST_F(DispatchTest, AMissingInterpreterIsAStartFailure) {
  auto p = pool(1);
  p.command = {};
  p.python = "/nonexistent/python3";
  p.max_start_failures = 2;
  start(options({p}));
  ASSERT_TRUE(eventually([&] { return pool_stats().find("failing") != nullptr; }));
  auto job_ = dispatch_job::open(*broker_, job("double"));
  ASSERT_FALSE(job_);
  EXPECT_NE(job_.error().message.find("/nonexistent/python3"), std::string::npos)
      << job_.error().message;
}

TEST_F(DispatchTest, ABrokerKillsTheWorkersADeadOneLeftAndRemovesTheirRecords) {
  fs::create_directories(dir_ / "workers");
  fs::permissions(dir_, fs::perms::owner_all, fs::perm_options::replace);
  started_process leftover({"/bin/sleep", "60"});
  started_process stranger({"/bin/sleep", "60"});
  ASSERT_TRUE(eventually([&] {
    std::ifstream stat("/proc/" + std::to_string(leftover.pid) + "/stat");
    return stat.good();
  }));
  // The dead broker's record of its worker: pid and start time (field 22).
  std::ifstream stat("/proc/" + std::to_string(leftover.pid) + "/stat");
  std::string text;
  std::getline(stat, text);
  std::istringstream fields(text.substr(text.rfind(')') + 2));
  std::string field;
  for (int i = 3; i <= 22; ++i) fields >> field;
  std::ofstream(dir_ / "workers" / std::to_string(leftover.pid)) << field << "\n";
  // A record whose start time does not match is a reused pid: left alone.
  std::ofstream(dir_ / "workers" / std::to_string(stranger.pid)) << "12345\n";
  start(options({pool(0)}));
  EXPECT_TRUE(eventually([&] { return leftover.exited(); }, 5s));
  EXPECT_FALSE(stranger.exited());
  EXPECT_FALSE(fs::exists(dir_ / "workers" / std::to_string(leftover.pid)));
  EXPECT_FALSE(fs::exists(dir_ / "workers" / std::to_string(stranger.pid)));
}

TEST_F(DispatchTest, MalformedWorkerMessagesAreDroppedAndCounted) {
  Broker& b = start(1);
  ASSERT_TRUE(wait_workers(1));
  const worker_id id = static_cast<worker_id>(
      pool_stats().find("workers")->as<List>()[0].find("id")->as<std::int64_t>());
  zmq::context_t ctx(1);
  zmq::socket_t push(ctx, zmq::socket_type::push);
  push.set(zmq::sockopt::linger, 1000);
  push.connect("ipc://" + (dir_ / "default.results").string());
  const auto send = [&](std::vector<std::string> frames) {
    for (std::size_t i = 0; i < frames.size(); ++i) {
      (void)push.send(zmq::buffer(frames[i]),
                      i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
    }
  };
  const auto header = [](worker_protocol::header h) {
    const auto bytes = worker_protocol::encode_header(h);
    return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  };
  worker_protocol::header h;
  h.type = worker_protocol::message_type::result;
  h.worker = id;
  h.batch = 999;
  h.count = 1;
  send({"junk"});                               // no header
  send({std::string(48, '\0')});                // bad magic
  send({header(h)});                            // a result without its frames
  send({header(h), "x", "not an error list"});  // a result for no running batch
  worker_protocol::header stranger = h;
  stranger.worker = id + 1000;  // no such worker
  stranger.type = worker_protocol::message_type::heartbeat;
  send({header(stranger)});
  worker_protocol::header stop = h;
  stop.type = worker_protocol::message_type::stop;  // travels the other way
  send({header(stop)});
  EXPECT_TRUE(eventually([&] { return count(pool_stats(), "rejected_messages") >= 5; }));
  EXPECT_GE(count(pool_stats(), "stale_events"), 1) << "the result of no running batch";
  // The pool serves on, with the same worker.
  EXPECT_TRUE(dispatch(b, numbered(8), job("double")).value().results.at(7).ok());
  EXPECT_EQ(count(pool_stats(), "worker_deaths"), 0);
}

TEST_F(DispatchTest, BadJobRequestsGetErrorsAndChangeNothing) {
  Broker& b = start(1);
  const std::string endpoint = "ipc://" + (dir_ / "control").string();
  zmq::context_t ctx(1);
  auto peer = detail::open_control_socket(ctx, where(), endpoint).value();
  const auto request = [&](protocol::message_type type, Value args) {
    return detail::control_request(peer, endpoint, type, detail::job_wire::control_ids + 7,
                                   std::move(args), 5s);
  };
  // Another connection's job cannot be touched.
  auto owned = dispatch_job::open(b, job("double")).value();
  auto stolen = request(protocol::message_type::dispatch_cancel,
                        Value(Map{{"job", static_cast<std::int64_t>(owned.id())}}));
  ASSERT_FALSE(stolen);
  EXPECT_NE(stolen.error().message.find("another connection"), std::string::npos);
  auto unknown = request(protocol::message_type::dispatch_ack, Value(Map{{"job", 12345}}));
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code, errc::not_found);
  auto no_job = request(protocol::message_type::dispatch_input_end, Value(Map{}));
  ASSERT_FALSE(no_job);
  EXPECT_NE(no_job.error().message.find("'job'"), std::string::npos);
  // A submit without its batch frame.
  auto two_frames = request(protocol::message_type::dispatch_submit,
                            Value(Map{{"job", static_cast<std::int64_t>(owned.id())}}));
  ASSERT_FALSE(two_frames);
  EXPECT_EQ(two_frames.error().code, errc::protocol_error);
  // A join naming no such pool.
  auto join = request(protocol::message_type::worker_join, Value(Map{{"pool", "nope"}}));
  ASSERT_FALSE(join);
  EXPECT_EQ(join.error().code, errc::not_found);
  auto token = request(protocol::message_type::worker_join, Value(Map{{"token", "forged"}}));
  ASSERT_FALSE(token);
  EXPECT_EQ(token.error().code, errc::not_found);
  // The owner's job is untouched.
  ASSERT_TRUE(owned.submit(batch_of(List{2}), 1));
  auto out = owned.next(5s).value();
  ASSERT_TRUE(out);
  EXPECT_EQ(payloads_of(out->payload.bytes), List{4});
}

TEST_F(DispatchTest, AJobWhoseClientStopsReadingIsCancelledAfterItsIdleTimeout) {
  Broker& b = start(1);
  auto o = job("double", 1, 4);
  o.idle_timeout = 300ms;
  auto j = dispatch_job::open(b, o).value();
  ASSERT_TRUE(j.submit(batch_of(List{1}), 1));
  ASSERT_TRUE(j.submit(batch_of(List{2}), 1));
  // Results wait for a client that reads none.
  ASSERT_TRUE(eventually([&] { return pool_stats().find("jobs")->as<List>().empty(); }, 10s));
  std::size_t batches = 0;
  for (;;) {
    auto out = j.next(5s).value();
    if (!out) break;
    ++batches;
  }
  EXPECT_EQ(batches, 2u) << "what was sent still arrives";
  ASSERT_TRUE(j.error());
  EXPECT_NE(j.error()->message.find("read no results"), std::string::npos) << j.error()->message;
}

TEST_F(DispatchTest, AJobWhoseClientDisconnectsIsCancelled) {
  start(1);
  ASSERT_TRUE(wait_workers(1));
  const std::string endpoint = "ipc://" + (dir_ / "control").string();
  {
    // A client that opens a job, submits a batch and dies (its socket closes
    // without a word, as a killed process's would).
    zmq::context_t ctx(1);
    auto peer = detail::open_control_socket(ctx, where(), endpoint).value();
    auto o = job("sleep", 1, 2);
    o.context.metadata = Map{{"ms", 60000}};
    const auto opened =
        detail::control_request(peer, endpoint, protocol::message_type::dispatch_open,
                                detail::job_wire::control_ids, detail::job_wire::open_args(o), 5s)
            .value();
    const auto id = opened.find("job")->as<std::int64_t>();
    const auto head = protocol::encode_header(
        {protocol::protocol_version, protocol::message_type::dispatch_submit, 0});
    const auto args = encode(Value(Map{{"job", id}, {"count", 1}}));
    const auto batch = batch_of(List{1});
    (void)peer.send(zmq::buffer(head.data(), head.size()), zmq::send_flags::sndmore);
    (void)peer.send(zmq::buffer(args.data(), args.size()), zmq::send_flags::sndmore);
    (void)peer.send(zmq::buffer(batch.data(), batch.size()), zmq::send_flags::none);
    ASSERT_TRUE(eventually([&] { return count(pool_stats(), "batches_sent") == 1; }));
    ASSERT_EQ(pool_stats().find("jobs")->as<List>().size(), 1u);
  }
  EXPECT_TRUE(eventually([&] { return pool_stats().find("jobs")->as<List>().empty(); }))
      << "the job of a client that went away is cancelled and forgotten";
}

}  // namespace
}  // namespace slither
