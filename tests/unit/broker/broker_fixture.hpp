// The fixture of the broker's in-process tests: a Broker embedded in the
// test process, clients, and a raw peer that sends whatever frames it likes.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <future>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <vector>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "slither/broker/broker.hpp"
#include "slither/broker/client.hpp"
#include "slither/broker/protocol.hpp"

namespace slither::test_support {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

// A namespace and runtime directory no other test or run shares.
inline std::string unique_ns() {
  static std::atomic<int> n{0};
  return "ut" + std::to_string(::getpid()) + "-" + std::to_string(n++);
}

inline shm::store_definition store_def(const std::string& name) {
  shm::store_definition def;
  def.options.name = name;
  def.options.initial_segment_bytes = 1 << 20;
  def.tables = {{"kv", shm::table_kind::set, 64}, {"events", shm::table_kind::bag, 64}};
  return def;
}

class BrokerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ns_ = unique_ns();
    dir_ = fs::temp_directory_path() / ("slither-" + ns_);
  }
  void TearDown() override {
    broker_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  broker_options options() {
    broker_options o;
    o.ns = ns_;
    o.runtime_dir = dir_;
    o.stores.push_back(store_def("main"));
    o.view_timeout = 300ms;
    return o;
  }

  Broker& start(broker_options o) {
    broker_ = std::make_unique<Broker>(std::move(o));
    return *broker_;
  }
  Broker& start() {
    start(options());
    auto r = broker_->start();
    EXPECT_TRUE(r) << r.error().message;
    return *broker_;
  }

  client connect(std::chrono::milliseconds timeout = 2000ms) {
    client_options o;
    o.runtime_dir = dir_;
    o.ns = ns_;
    o.timeout = timeout;
    return client::connect(o).value();
  }

  std::string ns_;
  fs::path dir_;
  std::unique_ptr<Broker> broker_;
};

// Raw frames from a DEALER, as a buggy or hostile peer would send them.
class RawPeer {
 public:
  explicit RawPeer(const std::string& endpoint, int receive_timeout_ms = 500)
      : socket_(context_, zmq::socket_type::dealer) {
    socket_.set(zmq::sockopt::linger, 0);
    socket_.set(zmq::sockopt::rcvtimeo, receive_timeout_ms);
    socket_.connect(endpoint);
  }
  void send(const std::vector<buffer>& frames) {
    for (std::size_t i = 0; i < frames.size(); ++i) {
      (void)socket_.send(zmq::buffer(frames[i].data(), frames[i].size()),
                         i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
    }
  }
  // Sends a request: its header and its arguments.
  void request(protocol::message_type type, std::uint64_t id, const Value& args) {
    send(protocol::encode_message({{protocol::protocol_version, type, id}, args}));
  }
  std::optional<protocol::message> receive() {
    std::vector<zmq::message_t> parts;
    if (!zmq::recv_multipart(socket_, std::back_inserter(parts))) return std::nullopt;
    std::vector<protocol::frame> frames;
    for (auto& p : parts) frames.emplace_back(p.data<std::byte>(), p.size());
    auto m = protocol::decode_reply(frames);
    if (!m) return std::nullopt;
    return std::move(*m);
  }

 private:
  zmq::context_t context_{1};
  zmq::socket_t socket_;
};

// Holds store "main"'s writer thread (a write that waits) until released or
// destroyed, so that the writes and stops behind it queue up.
class writer_hold {
 public:
  explicit writer_hold(Broker& b) {
    done_ = std::async(std::launch::async, [&b, gate = release_.get_future().share(), this] {
      return b.write("main", [&](shm::writer&) -> result<void> {
        holding_.set_value();
        gate.wait();
        return {};
      });
    });
    holding_.get_future().wait();
  }
  ~writer_hold() { release(); }
  void release() {
    if (released_) return;
    released_ = true;
    release_.set_value();
    EXPECT_TRUE(done_.get());
  }

 private:
  std::promise<void> release_;
  std::promise<void> holding_;
  std::future<result<void>> done_;
  bool released_ = false;
};

inline buffer header_frame(protocol::message_type type, std::uint64_t id,
                           std::uint16_t version = protocol::protocol_version) {
  const auto h = protocol::encode_header({version, type, id});
  return {h.begin(), h.end()};
}

inline errc error_code_of(const protocol::message& m) {
  EXPECT_EQ(m.head.type, protocol::message_type::reply_error);
  return protocol::read_error_body(m.body).code;
}

}  // namespace slither::test_support
