// A raw control-socket peer for the broker's cross-process tests: optionally
// drops to another uid, connects (with CURVE keys if given), sends one ping
// and waits for the reply. No client-side checks: what is tested is what the
// broker lets in.
//
//   broker_test_peer ENDPOINT [--uid N] [--timeout-ms N]
//                             [--server-key Z85 --public-key Z85 --secret-key Z85]
//   broker_test_peer --attach NAMESPACE STORE
//
// Exit status: 0 answered, 3 no answer within the timeout, 2 bad use or setup.
// With --attach it attaches a reader to the store, says "attached" on stdout
// and waits to be killed (a reader that dies without detaching).
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <string>
#include <vector>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "slither/broker/protocol.hpp"
#include "slither/shm/store.hpp"

int main(int argc, char** argv) {
  if (argc == 4 && std::string(argv[1]) == "--attach") {
    auto reader = slither::shm::reader::attach(argv[2], argv[3]);
    if (!reader) {
      std::fprintf(stderr, "%s\n", reader.error().message.c_str());
      return 2;
    }
    std::printf("attached\n");
    std::fflush(stdout);
    for (;;) ::pause();
  }
  if (argc < 2) return 2;
  const std::string endpoint = argv[1];
  long uid = -1;
  long timeout_ms = 1000;
  std::string server_key, public_key, secret_key;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const std::string value = argv[i + 1];
    if (flag == "--uid") {
      uid = std::strtol(value.c_str(), nullptr, 10);
    } else if (flag == "--timeout-ms") {
      timeout_ms = std::strtol(value.c_str(), nullptr, 10);
    } else if (flag == "--server-key") {
      server_key = value;
    } else if (flag == "--public-key") {
      public_key = value;
    } else if (flag == "--secret-key") {
      secret_key = value;
    } else {
      return 2;
    }
  }
  if (uid >= 0 &&
      (::setgid(static_cast<gid_t>(uid)) != 0 || ::setuid(static_cast<uid_t>(uid)) != 0)) {
    std::perror("cannot change uid");
    return 2;
  }
  zmq::context_t context{1};
  zmq::socket_t socket(context, zmq::socket_type::dealer);
  socket.set(zmq::sockopt::linger, 0);
  if (!server_key.empty()) {
    socket.set(zmq::sockopt::curve_serverkey, server_key);
    socket.set(zmq::sockopt::curve_publickey, public_key);
    socket.set(zmq::sockopt::curve_secretkey, secret_key);
  }
  socket.connect(endpoint);
  const auto frames = slither::protocol::encode_message(
      {{slither::protocol::protocol_version, slither::protocol::message_type::ping, 1},
       slither::Value(slither::Map{})});
  (void)socket.send(zmq::buffer(frames[0].data(), frames[0].size()), zmq::send_flags::sndmore);
  (void)socket.send(zmq::buffer(frames[1].data(), frames[1].size()), zmq::send_flags::none);
  zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
  if (zmq::poll(&item, 1, std::chrono::milliseconds(timeout_ms)) <= 0) return 3;
  std::vector<zmq::message_t> reply;
  (void)zmq::recv_multipart(socket, std::back_inserter(reply));
  return reply.size() == 2 ? 0 : 2;
}
