// Uses slither::broker (and shm, core), as the README's CMake lines do: a
// store, a broker embedded in this program, a client and a reader. Linked
// against the shared libraries, it also proves that what they export is
// enough: the public API's functions, vtables and typeinfo (an exception
// thrown inside a library caught here by its type), and what inline code of
// the public headers calls (`result`'s misuse, `List`'s allocator).
#include <stdlib.h>
#include <unistd.h>
#include <slither/broker/broker.hpp>
#include <slither/broker/client.hpp>
#include <slither/core/codec.hpp>
#include <slither/shm/store.hpp>
#include <slither/version.hpp>

#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

namespace {

// 0 if `broker` serves a client and a reader as it should, else the step that failed.
int embedded_broker(slither::Broker& broker, const slither::client_options& where) {
  if (!broker.register_view("s", "double", slither::view_scope::global,
                            [](const slither::Value& arg, const slither::shm::reader&,
                               std::string_view) -> slither::result<slither::Value> {
                              return arg.as<std::int64_t>() * 2;
                            })) {
    return 10;
  }
  if (!broker.start()) return 11;
  auto c = slither::client::connect(where);
  if (!c) return 12;
  auto array = slither::ndarray::zeros(slither::dtype::f32, {2, 3});
  array.mutable_values<float>()[5] = 1.5F;
  if (!c->put("s", "t", "a", array)) return 13;
  auto seen = broker.reader("s").get_view("t", "a");
  if (!seen || !*seen) return 14;
  const auto in_place = (*seen)->array();
  if (in_place.ndim() != 2 || in_place.shape()[1] != 3 || in_place.values<float>()[5] != 1.5F) {
    return 15;
  }
  auto doubled = c->call_view("s", "double", slither::Value(21));
  if (!doubled || doubled->as<std::int64_t>() != 42) return 16;
  // Thrown inside libslither_broker, caught here by its type.
  try {
    (void)broker.reader("nosuch");
    return 17;
  } catch (const slither::error& e) {
    if (e.code() != slither::errc::not_found) return 18;
  }
  broker.stop();
  return 0;
}

}  // namespace

int main() {
  const slither::Value v =
      slither::Value::map({{"answer", 42}, {"tags", slither::Value::list({"a", "b"})}});
  const auto bytes = slither::encode(v);
  auto back = slither::decode({bytes.data(), bytes.size()});
  if (!back || *back != v) return 1;
  try {
    (void)slither::result<int>(slither::fail(slither::errc::not_found, "none")).value();
    return 5;
  } catch (const slither::error& e) {
    if (e.code() != slither::errc::not_found) return 6;
  }

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

  // An embedded broker in a directory of our own (owner-only, as it requires).
  std::string scratch = (std::filesystem::temp_directory_path() / "slither-consumer-XXXXXX");
  if (::mkdtemp(scratch.data()) == nullptr) return 7;
  slither::broker_options bo;
  bo.ns = ns + "b";
  bo.runtime_dir = std::filesystem::path(scratch) / "run";
  bo.stores.push_back({.options = {.ns = bo.ns, .name = "s"}, .tables = tables});
  o.ns = bo.ns;
  o.runtime_dir = bo.runtime_dir;
  o.timeout = std::chrono::milliseconds(5000);
  int failed = 0;
  {
    slither::Broker broker(bo);
    failed = embedded_broker(broker, o);
  }
  std::filesystem::remove_all(scratch);
  if (failed != 0) return failed;

  std::cout << "consumer ok: slither " << SLITHER_VERSION_STRING << ": " << back->to_string()
            << "\n";
  return 0;
}
