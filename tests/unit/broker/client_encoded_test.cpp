// The client's calls that take values already encoded (as the Python
// extension sends them), against a broker embedded in the test process.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>

#include "slither/broker/broker.hpp"
#include "slither/broker/client.hpp"
#include "slither/core/codec.hpp"

namespace slither {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

std::string unique_ns() {
  static std::atomic<int> n{0};
  return "enc" + std::to_string(::getpid()) + "-" + std::to_string(n++);
}

std::span<const std::byte> span_of(const buffer& b) {
  return {b.data(), b.size()};
}

class EncodedClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ns_ = unique_ns();
    dir_ = fs::temp_directory_path() / ("slither-" + ns_);
    broker_options o;
    o.ns = ns_;
    o.runtime_dir = dir_;
    shm::store_definition def;
    def.options.name = "main";
    def.options.initial_segment_bytes = 1 << 20;
    def.tables = {{"kv", shm::table_kind::set, 64}};
    o.stores.push_back(def);
    broker_ = std::make_unique<Broker>(std::move(o));
    ASSERT_TRUE(broker_->register_view(
        "main", "echo", view_scope::global,
        [](const Value& arg, const shm::reader&, std::string_view session) -> result<Value> {
          return Value::map({{"arg", arg}, {"session", session}});
        }));
    auto started = broker_->start();
    ASSERT_TRUE(started) << started.error().message;
    client_options c;
    c.runtime_dir = dir_;
    c.ns = ns_;
    c.timeout = 2000ms;
    client_.emplace(client::connect(c).value());
  }
  void TearDown() override {
    client_.reset();
    broker_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  std::optional<Value> stored(std::string_view key) {
    return broker_->reader("main").get("kv", key).value();
  }

  std::string ns_;
  fs::path dir_;
  std::unique_ptr<Broker> broker_;
  std::optional<client> client_;
};

TEST_F(EncodedClientTest, PutStoresTheEncodedValue) {
  auto a = ndarray::zeros(dtype::f64, {50});  // padded in the message: re-padded when spliced
  a.mutable_values<double>()[7] = 3.5;
  const Value v = Value::map({{"z", 1}, {"a", a}, {"s", "text"}});
  auto version = client_->put_encoded("main", "kv", "k", span_of(encode(v)));
  ASSERT_TRUE(version) << version.error().message;
  EXPECT_EQ(*version, 1u);
  const std::optional<Value> back = stored("k");
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, v);
  std::vector<std::string> keys;
  for (const auto& [k, e] : back->as<Map>()) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"z", "a", "s"})) << "key order kept";
}

TEST_F(EncodedClientTest, AnInvalidEncodingIsRefusedBeforeSending) {
  const buffer repeated = {std::byte{codec_version}, std::byte{0xb2}, std::byte{0x81},
                           std::byte{'a'},           std::byte{1},    std::byte{0x81},
                           std::byte{'a'},           std::byte{2}};
  auto r = client_->put_encoded("main", "kv", "k", span_of(repeated));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::decode_error);
  EXPECT_NE(r.error().message.find("encoded 'value'"), std::string::npos) << r.error().message;
  EXPECT_FALSE(stored("k"));
  EXPECT_TRUE(client_->ping()) << "the connection is still usable";
}

TEST_F(EncodedClientTest, PutManyAndCompareAndSet) {
  const Value entries = Value::list({Value::list({"a", 1}), Value::list({"b", "two"})});
  ASSERT_TRUE(client_->put_many_encoded("main", "kv", span_of(encode(entries))));
  EXPECT_EQ(stored("a"), Value(1));
  EXPECT_EQ(stored("b"), Value("two"));

  auto v = client_->compare_and_set_encoded("main", "kv", "a", 1, span_of(encode(Value(10))));
  ASSERT_TRUE(v) << v.error().message;
  EXPECT_EQ(stored("a"), Value(10));
  auto stale = client_->compare_and_set_encoded("main", "kv", "a", 1, span_of(encode(Value(11))));
  ASSERT_FALSE(stale);
  EXPECT_EQ(stale.error().code, errc::conflict);
}

TEST_F(EncodedClientTest, CallViewReturnsTheResultEncoded) {
  const Value arg = Value::map({{"n", 3}, {"tags", Value::list({"x"})}});
  auto out = client_->call_view_encoded("main", "echo", span_of(encode(arg)), "s1");
  ASSERT_TRUE(out) << out.error().message;
  auto back = decode(span_of(*out));
  ASSERT_TRUE(back) << back.error().message;
  // A global view is called without the session.
  EXPECT_EQ(*back, Value::map({{"arg", arg}, {"session", ""}}));

  auto missing = client_->call_view_encoded("main", "nope", span_of(encode(Value{})));
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, errc::not_found);
}

}  // namespace
}  // namespace slither
