// Dispatch through a real broker to worker processes, from C++:
//
// - dispatch_cxx_trivial: 200k small dict items, batches of 64, through an
//   embedded broker to 2 workers running a trivial handler (decode the batch,
//   encode it back), driven by `slither::dispatch` (batching, encoding and
//   decoding on the caller's thread included).
// - dispatch_rtt: one one-item batch, submitted and its result taken, through
//   the same broker and a worker.
// - zmq_rtt_ipc: the floor under it, a raw ZeroMQ REQ/REP round trip over
//   ipc between this process and a child.
//
// Workers: the C++ test worker (slither-test-worker, handler "identity")
// unless SLITHER_BENCH_WORKER names another command (e.g. "python3 -m
// slither.worker") and SLITHER_BENCH_FUNCTION its function ("mod:identity").
#include <benchmark/benchmark.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <thread>
#include <zmq.hpp>

#include "../bench_broker.hpp"
#include "slither/broker/broker.hpp"
#include "slither/broker/client.hpp"
#include "slither/broker/dispatch.hpp"

extern char** environ;

namespace {

using namespace slither;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

// One broker with a pool of 2 workers for the whole run.
Broker& broker() {
  static const std::unique_ptr<Broker> b = bench::start_broker("bench");
  return *b;
}

std::string function_name() {
  return bench::function_name("identity");
}

std::vector<Item> small_dicts(std::size_t n) {
  std::vector<Item> items;
  items.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    items.push_back(wrap(Value::map({{"id", static_cast<std::int64_t>(i)},
                                     {"name", "item-" + std::to_string(i)},
                                     {"score", 0.5}}),
                         i));
  }
  return items;
}

void dispatch_cxx_trivial(benchmark::State& state) {
  Broker& b = broker();
  job_options o;
  o.function = function_name();
  o.batching = fixed_batch{64};
  o.max_in_flight = 16;
  const auto source = small_dicts(200'000);
  for (auto _ : state) {
    state.PauseTiming();
    auto items = source;
    state.ResumeTiming();
    auto report = dispatch(b, std::move(items), o).value();
    if (report.error) state.SkipWithError(report.error->describe().c_str());
    benchmark::DoNotOptimize(report.results.data());
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(source.size()));
}

void dispatch_rtt(benchmark::State& state) {
  job_options o;
  o.function = function_name();
  o.batching = fixed_batch{1};
  o.max_in_flight = 1;
  auto job = dispatch_job::open(broker(), o).value();
  const buffer one = encode_batch(small_dicts(1));
  for (auto _ : state) {
    if (!job.submit(one, 1)) state.SkipWithError("submit failed");
    auto out = job.next(10s);
    if (!out || !*out) state.SkipWithError("no result");
  }
}

// The raw floor: REQ/REP over ipc to a child process that echoes.
void zmq_rtt_ipc(benchmark::State& state) {
  const auto dir = fs::temp_directory_path() / ("slither-zmqrtt-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string endpoint = "ipc://" + (dir / "echo").string();
  std::string self = fs::read_symlink("/proc/self/exe").string();
  std::string flag = "--zmq-echo";
  std::string ep = endpoint;
  char* argv[] = {self.data(), flag.data(), ep.data(), nullptr};
  pid_t pid = 0;
  if (posix_spawn(&pid, self.c_str(), nullptr, nullptr, argv, environ) != 0) {
    state.SkipWithError("cannot start the echo process");
    return;
  }
  {
    zmq::context_t ctx(1);
    zmq::socket_t req(ctx, zmq::socket_type::req);
    req.set(zmq::sockopt::linger, 0);
    req.connect(endpoint);
    const buffer one = encode_batch(small_dicts(1));
    zmq::message_t reply;
    // Not timed: the child's start, and the connection, which retries every
    // 100 ms until the child has bound (it would add 20+ µs a round trip).
    for (int i = 0; i < 200; ++i) {
      (void)req.send(zmq::buffer(one.data(), one.size()), zmq::send_flags::none);
      (void)req.recv(reply, zmq::recv_flags::none);
    }
    for (auto _ : state) {
      (void)req.send(zmq::buffer(one.data(), one.size()), zmq::send_flags::none);
      (void)req.recv(reply, zmq::recv_flags::none);
    }
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  fs::remove_all(dir);
}

BENCHMARK(dispatch_cxx_trivial)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);
BENCHMARK(dispatch_rtt)->Unit(benchmark::kMicrosecond)->UseRealTime()->Iterations(5000);
BENCHMARK(zmq_rtt_ipc)->Unit(benchmark::kMicrosecond)->UseRealTime()->Iterations(5000);

int echo(const char* endpoint) {
  zmq::context_t ctx(1);
  zmq::socket_t rep(ctx, zmq::socket_type::rep);
  rep.bind(endpoint);
  for (;;) {
    zmq::message_t m;
    if (!rep.recv(m, zmq::recv_flags::none)) return 1;
    (void)rep.send(m, zmq::send_flags::none);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::string_view(argv[1]) == "--zmq-echo") return echo(argv[2]);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
