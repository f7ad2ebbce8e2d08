// The worker pool's spawned workers: starting them, logging their output,
// noticing their exits, restarting them with backoff, and telling a pool
// whose workers cannot start apart from one whose workers merely die.
#include <unistd.h>

#include <array>
#include <csignal>
#include <cstdlib>
#include <random>
#include <thread>

#include "broker_log.hpp"
#include "worker_pool.hpp"

extern char** environ;  // NOLINT: POSIX

namespace slither::detail {

namespace asio = boost::asio;

namespace {

// Output kept per spawned worker for the error of a pool that cannot start.
constexpr std::size_t tail_bytes = 2048;
// How long stop waits for spawned workers to exit before it kills them.
constexpr std::chrono::milliseconds stop_grace{1000};

std::string random_token() {
  std::random_device rd;
  std::string out;
  static constexpr char hex[] = "0123456789abcdef";
  for (int i = 0; i < 32; ++i) out.push_back(hex[rd() % 16]);
  return out;
}

std::string default_python() {
  const char* env = std::getenv("SLITHER_PYTHON");
  return env != nullptr && *env != '\0' ? env : "python3";
}

}  // namespace

std::vector<std::string> worker_pool::worker_env(const slot& s) const {
  std::map<std::string, std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const std::string entry(*e);
    const auto eq = entry.find('=');
    if (eq != std::string::npos) env[entry.substr(0, eq)] = entry.substr(eq + 1);
  }
  for (const auto& [k, v] : opts_.env) env[k] = v;
  if (!opts_.pythonpath.empty()) {
    std::string path;
    for (const auto& p : opts_.pythonpath) path += (path.empty() ? "" : ":") + p;
    if (const auto it = env.find("PYTHONPATH"); it != env.end() && !it->second.empty()) {
      path += ":" + it->second;
    }
    env["PYTHONPATH"] = path;
  }
  env["SLITHER_CONTROL_ENDPOINT"] = host_.join_endpoint;
  env["SLITHER_NAMESPACE"] = host_.ns;
  env["SLITHER_POOL"] = opts_.name;
  env["SLITHER_WORKER_TOKEN"] = s.token;
  env["SLITHER_WORKER_CREDITS"] = std::to_string(opts_.credits);
  env.erase("SLITHER_RUNTIME_DIR");  // the endpoint says where
  std::vector<std::string> out;
  out.reserve(env.size());
  for (const auto& [k, v] : env) out.push_back(k + "=" + v);
  return out;
}

void worker_pool::spawn(slot& s) {
  if (stopping_) return;
  s.token = random_token();
  s.worker = 0;
  s.said_hello = false;
  s.tail.clear();
  s.partial_line.clear();
  spawn_spec spec;
  spec.argv = opts_.command;
  if (spec.argv.empty()) {
    spec.argv = {opts_.python.empty() ? default_python() : opts_.python, "-m", "slither.worker"};
  }
  spec.env = worker_env(s);
  spec.cwd = opts_.cwd;
  auto child = child_process::spawn(spec);
  if (!child) return start_failed(s, child.error().message);
  ++spawned_;
  ++s.generation;
  s.pid = child->pid();
  s.child.emplace(std::move(*child));
  records_.add(s.pid);
  broker_log().debug("pool '{}': spawned worker process {} ({})", opts_.name, s.pid, spec.argv[0]);
  s.output.reset();
  if (const int fd = s.child->take_output(); fd >= 0) s.output.emplace(*host_.io, fd);
  read_output(s);
  watch_exit(s);
}

void worker_pool::watch_exit(slot& s) {
  if (s.child->exit_fd() < 0) {
    s.exit_wait.reset();  // no pidfd: the tick polls instead
    return;
  }
  s.exit_wait.emplace(*host_.io, ::dup(s.child->exit_fd()));
  s.exit_wait->async_wait(asio::posix::stream_descriptor::wait_read,
                          [this, &s, alive = std::weak_ptr<char>(s.alive),
                           gen = s.generation](const boost::system::error_code& ec) {
                            if (ec || alive.expired() || stopping_ || gen != s.generation) return;
                            if (!s.child) return;
                            if (const auto status = s.child->try_reap()) on_exit(s, *status);
                          });
}

void worker_pool::read_output(slot& s) {
  if (!s.output) return;
  s.output->async_read_some(
      asio::buffer(s.buffer), [this, &s, alive = std::weak_ptr<char>(s.alive), gen = s.generation,
                               pid = s.pid](const boost::system::error_code& ec, std::size_t n) {
        if (alive.expired() || gen != s.generation) return;
        s.partial_line.append(s.buffer.data(), n);
        s.tail.append(s.buffer.data(), n);
        if (s.tail.size() > tail_bytes) s.tail.erase(0, s.tail.size() - tail_bytes);
        for (auto nl = s.partial_line.find('\n'); nl != std::string::npos;
             nl = s.partial_line.find('\n')) {
          broker_log().info("[{}/{}] {}", opts_.name, pid, s.partial_line.substr(0, nl));
          s.partial_line.erase(0, nl + 1);
        }
        if (!ec) return read_output(s);
        // The end of its output: it exited (or the pool stops).
        if (!s.partial_line.empty())
          broker_log().info("[{}/{}] {}", opts_.name, pid, s.partial_line);
        s.partial_line.clear();
      });
}

void worker_pool::on_exit(slot& s, int status) {
  const pid_t pid = s.pid;
  records_.remove(pid);
  const std::string how = describe_exit(status);
  if (s.worker != 0) {
    const auto it = workers_.find(s.worker);
    const bool expected = it != workers_.end() && it->second->retiring;
    drop(s.worker, "its process " + std::to_string(pid) + " " + how, expected);
  }
  s.exit_wait.reset();
  const bool started = s.said_hello;
  s.child.reset();
  if (stopping_) return;
  if (!started) {
    std::string output = s.tail;
    while (!output.empty() && (output.back() == '\n' || output.back() == '\r')) output.pop_back();
    return start_failed(s, "worker process " + std::to_string(pid) + " " + how +
                               " before it joined" + (output.empty() ? "" : ": " + output));
  }
  s.replacement = true;
  schedule_restart(s);
}

void worker_pool::start_failed(slot& s, const std::string& why) {
  ++s.failures;
  ++start_failures_;
  broker_log().warn("pool '{}': {}", opts_.name, why);
  if (start_failures_ >= opts_.max_start_failures) {
    dispatch_error e = failure_of(
        failure_kind::circuit_open,
        "pool '" + opts_.name + "' cannot start its workers: " + std::to_string(start_failures_) +
            " in a row failed (last: " + why + ")");
    e.type = "pool_failed";
    const bool first = !failing_;
    failing_ = e;
    if (first) broker_log().error("{}", e.message);
    (void)engine_.handle(pool_failed{std::move(e)}, clock::now());
    apply();
  }
  s.replacement = true;
  schedule_restart(s);
}

void worker_pool::schedule_restart(slot& s) {
  if (stopping_) return;
  const auto delay = failing_          ? opts_.restart_backoff.max
                     : s.failures == 0 ? std::chrono::milliseconds(0)
                                       : opts_.restart_backoff.delay(s.failures);
  if (!s.restart) s.restart.emplace(*host_.io);
  s.restart->expires_after(delay);
  s.restart->async_wait(
      [this, &s, alive = std::weak_ptr<char>(s.alive)](const boost::system::error_code& ec) {
        if (ec || alive.expired() || stopping_ || s.child) return;
        spawn(s);
      });
}

void worker_pool::stop_children() noexcept {
  for (auto& s : slots_) {
    if (s->restart) s->restart->cancel();
    s->exit_wait.reset();
    s->output.reset();
  }
  // They were told to stop; one still in a handler, or not yet joined, is
  // asked again with SIGTERM, and then killed.
  const auto reap_until = [this](clock::time_point deadline) {
    for (;;) {
      bool running = false;
      for (auto& s : slots_) {
        if (s->child && s->child->try_reap()) {
          records_.remove(s->child->pid());
          s->child.reset();
        }
        running = running || s->child.has_value();
      }
      if (!running || clock::now() >= deadline) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  };
  reap_until(clock::now() + stop_grace / 5);
  for (auto& s : slots_) {
    if (s->child) s->child->signal(SIGTERM);
  }
  reap_until(clock::now() + stop_grace);
  for (auto& s : slots_) {
    if (s->child) {
      records_.remove(s->child->pid());
      s->child.reset();  // kills and reaps
    }
    s->alive.reset();
  }
}

}  // namespace slither::detail
