// Uses slither::broker (and shm, core), as the README's CMake lines do.
#include <unistd.h>
#include <slither/broker/client.hpp>
#include <slither/core/codec.hpp>
#include <slither/shm/store.hpp>
#include <slither/version.hpp>

#include <iostream>
#include <string>
#include <vector>

int main() {
  const slither::Value v = slither::Value::map({{"answer", 42}});
  const auto bytes = slither::encode(v);
  auto back = slither::decode({bytes.data(), bytes.size()});
  if (!back || *back != v) return 1;

  // A namespace of our own: other tests share /dev/shm.
  const std::string ns = "consumer" + std::to_string(::getpid());
  std::vector<slither::shm::table_spec> tables = {{"t", slither::shm::table_kind::set, 16}};
  auto w = slither::shm::writer::create({.ns = ns, .name = "s"}, tables);
  if (!w || !w->put("t", "k", v)) return 2;
  auto r = slither::shm::reader::attach(ns, "s");
  if (!r || r->get("t", "k").value() != v) return 3;

  // No broker runs: the client must say so, not hang.
  slither::client_options o;
  o.runtime_dir = "/nonexistent/slither-consumer";
  o.timeout = std::chrono::milliseconds(200);
  if (slither::client::connect(o)) return 4;

  std::cout << "consumer ok: slither " << SLITHER_VERSION_STRING << ": " << back->to_string()
            << "\n";
  return 0;
}
