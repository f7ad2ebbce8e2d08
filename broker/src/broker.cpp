#include "slither/broker/broker.hpp"

#include "broker_impl.hpp"

namespace slither {

Broker::Broker(broker_options options) : p_(std::make_unique<impl>(std::move(options))) {}

Broker::~Broker() {
  stop();
}

result<void> Broker::start() {
  detail::log_scope scope(p_->logger);
  return p_->start();
}

void Broker::stop() noexcept {
  detail::log_scope scope(p_->logger);
  p_->stop();
}

const shm::reader& Broker::reader(std::string_view store) const {
  if (p_->s) {
    if (const auto it = p_->s->stores.find(store); it != p_->s->stores.end()) {
      return it->second.read();
    }
  }
  throw error(errc::not_found, "no running store '" + std::string(store) + "' in namespace '" +
                                   p_->options.ns + "'");
}

const std::string& Broker::control_endpoint() const noexcept {
  return p_->endpoint;
}

const std::filesystem::path& Broker::runtime_dir() const noexcept {
  return p_->dir;
}

const std::string& Broker::metrics_endpoint() const noexcept {
  return p_->metrics_address;
}

}  // namespace slither
