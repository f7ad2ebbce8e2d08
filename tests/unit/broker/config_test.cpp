#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <span>

#include "slither/broker/broker.hpp"

namespace slither {
namespace {

namespace fs = std::filesystem;

struct bad_case {
  const char* toml;
  const char* expect;  // a piece of the error message
};

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> n{0};
    ns_ = "cfg" + std::to_string(::getpid()) + "-" + std::to_string(n++);
    dir_ = fs::temp_directory_path() / ("slither-" + ns_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  fs::path write(const std::string& name, const std::string& text) {
    const auto p = dir_ / name;
    std::ofstream(p) << text;
    return p;
  }

  // A config with one store "s" (tables t: set, b: bag) and `extra` appended to the store.
  fs::path config(const std::string& extra) {
    return write("slither.toml", "[broker]\nnamespace = \"" + ns_ +
                                     "\"\nruntime_dir = \"run\"\n\n"
                                     "[[stores]]\nname = \"s\"\n" +
                                     extra +
                                     "\n[[stores.tables]]\nname = \"t\"\n"
                                     "[[stores.tables]]\nname = \"b\"\nkind = \"bag\"\n"
                                     "initial_capacity = 16\n");
  }

  // Each case's config, written as a.toml, is refused naming what `expect` says.
  void expect_refused(std::span<const bad_case> cases) {
    for (const auto& c : cases) {
      auto r = load_config(write("a.toml", c.toml));
      ASSERT_FALSE(r) << c.toml;
      EXPECT_EQ(r.error().code, errc::invalid_argument);
      EXPECT_NE(r.error().message.find(c.expect), std::string::npos)
          << "config:\n"
          << c.toml << "\nerror: " << r.error().message;
    }
  }

  // Starts a broker from `cfg` and returns its start result.
  result<void> start(const fs::path& cfg) {
    auto options = load_config(cfg).value();
    broker_ = std::make_unique<Broker>(std::move(options));
    return broker_->start();
  }

  std::string ns_;
  fs::path dir_;
  std::unique_ptr<Broker> broker_;
};

TEST_F(ConfigTest, ReadsBrokerSettingsAndStores) {
  const auto cfg = write("a.toml", R"(
[broker]
namespace = "demo"
runtime_dir = "/tmp/x"
control_endpoint = "tcp://127.0.0.1:5999"
write_queue_limit = 10
view_timeout_ms = 250
max_message_bytes = 65536

[[stores]]
name = "features"
initial_segment_bytes = 2097152
max_readers = 1500
index_bytes_at_once = 65536
  [[stores.tables]]
  name = "users"
  [[stores.tables]]
  name = "tags"
  kind = "bag"
  initial_capacity = 8
  [[stores.tables]]
  name = "events"
  kind = "ordered_set"

[[pools]]
name = "default"
)");
  auto o = load_config(cfg);
  ASSERT_TRUE(o) << o.error().message;
  EXPECT_EQ(o->ns, "demo");
  EXPECT_EQ(o->runtime_dir, fs::path("/tmp/x"));
  EXPECT_EQ(o->control_endpoint, "tcp://127.0.0.1:5999");
  EXPECT_EQ(o->write_queue_limit, 10u);
  EXPECT_EQ(o->view_timeout, std::chrono::milliseconds(250));
  EXPECT_EQ(o->limits.max_message_bytes, 65536u);
  ASSERT_EQ(o->stores.size(), 1u);
  const auto& s = o->stores[0];
  EXPECT_EQ(s.options.name, "features");
  EXPECT_EQ(s.options.ns, "demo");
  EXPECT_EQ(s.options.initial_segment_bytes, 2097152u);
  EXPECT_EQ(s.options.max_readers, 1500u);
  EXPECT_EQ(s.options.index_bytes_at_once, 65536u);
  ASSERT_EQ(s.tables.size(), 3u);
  EXPECT_EQ(s.tables[1].name, "tags");
  EXPECT_EQ(s.tables[1].kind, shm::table_kind::bag);
  EXPECT_EQ(s.tables[1].initial_capacity, 8u);
  EXPECT_EQ(s.tables[2].kind, shm::table_kind::ordered_set);
  EXPECT_FALSE(s.load);
  ASSERT_EQ(o->pools.size(), 1u);
  EXPECT_EQ(o->pools[0].name, "default");
  EXPECT_EQ(o->pools[0].size, pool_options{}.size);
}

TEST_F(ConfigTest, ReadsEveryPoolKey) {
  auto o = load_config(write("a.toml", R"(
[[pools]]
name = "gpu"
size = 3
python = "/opt/py/bin/python3"
command = ["/usr/bin/env", "python3", "-m", "slither.worker"]
pythonpath = ["lib", "/abs/mods"]
env = { OMP_NUM_THREADS = "1", MODE = "fast" }
cwd = "work"
credits = 4
heartbeat_ms = 250
heartbeat_misses = 6
restart_backoff_ms = 50
restart_backoff_max_ms = 5000
max_start_failures = 2
max_batches = 100
max_rss_mib = 512
endpoint = "tcp://10.0.0.1:7000"

[[pools]]
name = "cpu"
)"));
  ASSERT_TRUE(o) << o.error().message;
  ASSERT_EQ(o->pools.size(), 2u);
  const auto& p = o->pools[0];
  EXPECT_EQ(p.name, "gpu");
  EXPECT_EQ(p.size, 3u);
  EXPECT_EQ(p.python, "/opt/py/bin/python3");
  EXPECT_EQ(p.command,
            (std::vector<std::string>{"/usr/bin/env", "python3", "-m", "slither.worker"}));
  ASSERT_EQ(p.pythonpath.size(), 2u);
  EXPECT_EQ(fs::path(p.pythonpath[0]), dir_ / "lib") << "relative to the config file";
  EXPECT_EQ(p.pythonpath[1], "/abs/mods");
  EXPECT_EQ(p.env.at("OMP_NUM_THREADS"), "1");
  EXPECT_EQ(p.env.at("MODE"), "fast");
  EXPECT_EQ(p.cwd, dir_ / "work");
  EXPECT_EQ(p.credits, 4u);
  EXPECT_EQ(p.heartbeat, std::chrono::milliseconds(250));
  EXPECT_EQ(p.heartbeat_misses, 6u);
  EXPECT_EQ(p.restart_backoff.initial, std::chrono::milliseconds(50));
  EXPECT_EQ(p.restart_backoff.max, std::chrono::milliseconds(5000));
  EXPECT_EQ(p.max_start_failures, 2u);
  EXPECT_EQ(p.max_batches, 100u);
  EXPECT_EQ(p.max_rss_mib, 512u);
  EXPECT_EQ(p.endpoint, "tcp://10.0.0.1:7000");
  EXPECT_EQ(o->pools[1].name, "cpu");
}

TEST_F(ConfigTest, BadConfigsNameFileLineAndField) {
  const bad_case cases[] = {
      {"[broker]\nnamespace = 3\n", "a.toml:2: field 'broker.namespace': must be a string"},
      {"[broker]\nwrite_queue_limit = -1\n", "field 'broker.write_queue_limit'"},
      {"[broker]\nnamspace = \"x\"\n", "field 'broker.namspace': unknown key"},
      {"[[stores]]\nname = \"s\"\n", "field 'stores[0].tables'"},
      {"[[stores]]\nname = \"s\"\n[[stores.tables]]\nname = \"t\"\nkind = \"tree\"\n",
       "a.toml:5: field 'stores[0].tables[0].kind': 'tree' is not a table kind"},
      {"[[stores]]\nname = \"s\"\n[[stores.tables]]\nkind = \"set\"\n",
       "field 'stores[0].tables[0].name': is missing"},
      {"[[stores]]\nname = \"s\"\nload = { file = \"rows.txt\", table = \"t\", key = \"id\" }\n"
       "[[stores.tables]]\nname = \"t\"\n",
       "field 'stores[0].load.file': 'rows.txt' is neither"},
      {"[[stores]]\nname = \"s\"\nload = { file = \"missing.csv\", table = \"t\", key = \"id\" }\n"
       "[[stores.tables]]\nname = \"t\"\n",
       "is not a readable file"},
      {"[broker\n", "a.toml:1:"},
      {"bogus = 1\n", "field 'bogus': unknown key"},
  };
  expect_refused(cases);
}

TEST_F(ConfigTest, DurationsAndSizesPastTheirRangeAreErrorsNamingTheKey) {
  const bad_case cases[] = {
      // 9.2e12 ms once became a 3 ms timeout (the deadline overflowed).
      {"[broker]\nview_timeout_ms = 9200000000000\n",
       "a.toml:2: field 'broker.view_timeout_ms': 9200000000000 is past the largest value, "
       "1000000000000 ms"},
      {"[broker]\nview_timeout_ms = 0\n", "field 'broker.view_timeout_ms': 0 is below"},
      {"[broker]\nstop_grace_ms = 9223372036854775807\n", "field 'broker.stop_grace_ms'"},
      {"[broker]\nmax_message_bytes = 9223372036854775807\n",
       "field 'broker.max_message_bytes': 9223372036854775807 is past the largest value, "
       "281474976710656"},
      {"[broker]\nwrite_queue_bytes = 0\n", "field 'broker.write_queue_bytes'"},
      {"[broker]\nmax_clients = 1.5\n", "field 'broker.max_clients': must be an integer"},
      {"[broker]\nview_concurrency = 0\n", "field 'broker.view_concurrency'"},
      {"[broker]\nlarge_write_lease_ms = 0\n",
       "a.toml:2: field 'broker.large_write_lease_ms': 0 is below the least value, 1"},
      {"[broker]\nlarge_write_lease_ms = \"60s\"\n",
       "field 'broker.large_write_lease_ms': must be an integer"},
      {"[broker]\nlarge_write_lease_ms = 9200000000000\n",
       "field 'broker.large_write_lease_ms': 9200000000000 is past the largest value"},
      {"[broker]\nallow_remote = \"yes\"\n", "field 'broker.allow_remote': must be true or false"},
      {"[[stores]]\nname = \"s\"\ninitial_segment_bytes = 9223372036854775807\n"
       "[[stores.tables]]\nname = \"t\"\n",
       "field 'stores[0].initial_segment_bytes'"},
      {"[[stores]]\nname = \"s\"\nmax_readers = 65537\n[[stores.tables]]\nname = \"t\"\n",
       "field 'stores[0].max_readers': 65537 is past the largest value, 65536 readers"},
      {"[[stores]]\nname = \"s\"\nmax_readers = 0\n[[stores.tables]]\nname = \"t\"\n",
       "field 'stores[0].max_readers': 0 is below the least value, 1"},
      {"[[stores]]\nname = \"s\"\nindex_bytes_at_once = 64\n[[stores.tables]]\nname = \"t\"\n",
       "a.toml:3: field 'stores[0].index_bytes_at_once': 64 is below the least value, 128"},
      {"[[stores]]\nname = \"s\"\nindex_bytes_at_once = 536870913\n"
       "[[stores.tables]]\nname = \"t\"\n",
       "field 'stores[0].index_bytes_at_once': 536870913 is past the largest value, 536870912 "
       "bytes"},
      {"[[stores]]\nname = \"s\"\nindex_bytes_at_once = \"1M\"\n[[stores.tables]]\nname = \"t\"\n",
       "field 'stores[0].index_bytes_at_once': must be an integer"},
  };
  expect_refused(cases);
}

TEST_F(ConfigTest, ReadsTheLimitsAndSecuritySettings) {
  auto o = load_config(write("a.toml", R"(
[broker]
control_endpoint = "tcp://127.0.0.1:5999"
curve_secret_key_file = "keys/broker.key"
curve_allowed_clients_file = "/etc/slither/clients"
allow_remote = true
max_clients = 64
write_queue_bytes = 1000000
client_write_queue_bytes = 250000
inline_write_bytes = 0
max_decoded_bytes = 5000000
max_reply_bytes = 3000000
view_concurrency = 3
stop_grace_ms = 0
large_write_lease_ms = 1500
)"));
  ASSERT_TRUE(o) << o.error().message;
  EXPECT_EQ(o->curve_secret_key_file, dir_ / "keys/broker.key");
  EXPECT_EQ(o->curve_allowed_clients_file, fs::path("/etc/slither/clients"));
  EXPECT_TRUE(o->allow_remote);
  EXPECT_EQ(o->max_clients, 64u);
  EXPECT_EQ(o->write_queue_bytes, 1000000u);
  EXPECT_EQ(o->client_write_queue_bytes, 250000u);
  EXPECT_EQ(o->inline_write_bytes, 0u);
  EXPECT_EQ(o->limits.max_decoded_bytes, 5000000u);
  EXPECT_EQ(o->max_reply_bytes, 3000000u);
  EXPECT_EQ(o->view_concurrency, 3u);
  EXPECT_EQ(o->stop_grace, std::chrono::milliseconds(0));
  EXPECT_EQ(o->large_write_lease, std::chrono::milliseconds(1500));
}

TEST_F(ConfigTest, OptionsOutOfRangeAreRefusedAtStartToo) {
  // The same bounds hold for options set in C++.
  auto o = load_config(config("")).value();
  o.view_timeout = std::chrono::milliseconds(9'200'000'000'000);
  Broker b(o);
  auto r = b.start();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::invalid_argument);
  EXPECT_NE(r.error().message.find("view_timeout 9200000000000 ms is outside"), std::string::npos)
      << r.error().message;
}

TEST_F(ConfigTest, ALeaseOfNoTimeIsRefusedAtStart) {
  auto o = load_config(config("")).value();
  o.large_write_lease = std::chrono::milliseconds(0);
  Broker b(o);
  auto r = b.start();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::invalid_argument);
  EXPECT_NE(r.error().message.find("large_write_lease 0 ms is outside 1.."), std::string::npos)
      << r.error().message;
}

TEST_F(ConfigTest, LoadsJsonLinesRowsAsEntries) {
  write("users.jsonl",
        "{\"id\": \"ada\", \"age\": 36}\n\n{\"id\": 7, \"age\": 41, \"tags\": [\"x\"]}\n");
  const auto cfg = config("load = { file = \"users.jsonl\", table = \"t\", key = \"id\" }");
  ASSERT_TRUE(start(cfg));
  const auto& r = broker_->reader("s");
  EXPECT_EQ(r.size("t").value(), 2u);
  EXPECT_EQ(r.get("t", "ada").value(), std::optional(Value::map({{"id", "ada"}, {"age", 36}})));
  EXPECT_EQ((*r.get("t", "7").value())["tags"], Value::list({"x"}));
}

TEST_F(ConfigTest, LoadsCsvRowsWithNumbersAndQuotedText) {
  write("items.csv",
        "sku,price,qty,note\n"
        "a1,2.5,3,plain\n"
        "b2,10,-4,\"has, comma and \"\"quotes\"\"\nand a newline\"\n"
        "c3,x1,07,\"42\"\n");
  const auto cfg = config(
      "load = [{ file = \"items.csv\", table = \"t\", key = \"sku\" },"
      " { file = \"items.csv\", table = \"b\", key = \"qty\" }]");
  ASSERT_TRUE(start(cfg));
  const auto& r = broker_->reader("s");
  EXPECT_EQ(
      r.get("t", "a1").value(),
      std::optional(Value::map({{"sku", "a1"}, {"price", 2.5}, {"qty", 3}, {"note", "plain"}})));
  const auto b2 = r.get("t", "b2").value().value();
  EXPECT_EQ(b2["price"], Value(10));
  EXPECT_EQ(b2["note"], Value("has, comma and \"quotes\"\nand a newline"));
  const auto c3 = r.get("t", "c3").value().value();
  EXPECT_EQ(c3["price"], Value("x1"));
  EXPECT_EQ(c3["qty"], Value(7));
  EXPECT_EQ(c3["note"], Value("42"));  // quoted: stays text
  EXPECT_TRUE(r.contains("b", "-4").value());
}

TEST_F(ConfigTest, BadRowsFailTheStartNamingFileAndLine) {
  const std::pair<std::string, std::string> cases[] = {
      {"{\"id\": \"a\"}\n{\"id\": \"b\"\n", "rows.jsonl:2:"},
      {"{\"id\": \"a\"}\n[1, 2]\n", "rows.jsonl:2: row is a JSON list"},
      {"{\"id\": \"a\"}\n\n{\"name\": \"b\"}\n", "rows.jsonl:3: row has no key field 'id'"},
      {"{\"id\": [1]}\n", "rows.jsonl:1: key field 'id' is a list"},
  };
  for (const auto& [rows, expect] : cases) {
    write("rows.jsonl", rows);
    auto r = start(config("load = { file = \"rows.jsonl\", table = \"t\", key = \"id\" }"));
    ASSERT_FALSE(r) << rows;
    EXPECT_NE(r.error().message.find(expect), std::string::npos) << r.error().message;
    EXPECT_NE(r.error().message.find("store 's'"), std::string::npos) << r.error().message;
  }
  const std::pair<std::string, std::string> csv_cases[] = {
      {"id,v\na,1\nb,2,3\n", "rows.csv:3: row has 3 fields, the header has 2"},
      {"id,v\na,\"open\n", "rows.csv:2: quoted field is never closed"},
      {"", "rows.csv:1: empty file"},
      {"id,v,name,v\na,1,x,2\n", "rows.csv:1: column 'v' appears twice in the header row"},
  };
  for (const auto& [rows, expect] : csv_cases) {
    write("rows.csv", rows);
    auto r = start(config("load = { file = \"rows.csv\", table = \"t\", key = \"id\" }"));
    ASSERT_FALSE(r) << rows;
    EXPECT_NE(r.error().message.find(expect), std::string::npos) << r.error().message;
  }
}

TEST_F(ConfigTest, BadPoolsNameTheField) {
  const bad_case cases[] = {
      {"[[pools]]\nsize = 1\n", "field 'pools[0].name': is required"},
      {"[[pools]]\nname = \"p\"\nsize = -1\n", "field 'pools[0].size'"},
      {"[[pools]]\nname = \"p\"\nsize = 5000\n", "field 'pools[0].size'"},
      {"[[pools]]\nname = \"p\"\ncredits = 0\n", "field 'pools[0].credits'"},
      {"[[pools]]\nname = \"p\"\ncommand = \"python3 -m x\"\n",
       "field 'pools[0].command': must be a list of strings"},
      {"[[pools]]\nname = \"p\"\ncommand = [1]\n", "field 'pools[0].command': must hold only"},
      {"[[pools]]\nname = \"p\"\nenv = { A = 1 }\n", "field 'pools[0].env.A': must be a string"},
      {"[[pools]]\nname = \"p\"\nheartbeat_ms = 0\n", "field 'pools[0].heartbeat_ms'"},
      {"[[pools]]\nname = \"p\"\nrestart_backoff_ms = 100\nrestart_backoff_max_ms = 10\n",
       "field 'pools[0].restart_backoff_max_ms'"},
      {"[[pools]]\nname = \"p\"\nmax_rss = 1\n", "field 'pools[0].max_rss': unknown key"},
      {"pools = 3\n", "field 'pools': must be an array"},
  };
  expect_refused(cases);
}

TEST_F(ConfigTest, PoolsAreCheckedAtStart) {
  for (const auto& [toml, expect] : std::vector<std::pair<std::string, std::string>>{
           {"[[pools]]\nname = \"bad name\"\nsize = 0\n", "pool name 'bad name'"},
           {"[[pools]]\nname = \"p\"\nsize = 0\n[[pools]]\nname = \"p\"\nsize = 0\n",
            "pool 'p' is declared twice"},
           {"[[pools]]\nname = \"p\"\nsize = 0\nendpoint = \"udp://x\"\n",
            "must be empty (ipc) or tcp://"}}) {
    auto o = load_config(
        write("b.toml", "[broker]\nnamespace = \"" + ns_ + "\"\nruntime_dir = \"run\"\n" + toml));
    ASSERT_TRUE(o) << o.error().message;
    Broker b(std::move(*o));
    auto r = b.start();
    ASSERT_FALSE(r) << toml;
    EXPECT_NE(r.error().message.find(expect), std::string::npos) << r.error().message;
  }
}

}  // namespace
}  // namespace slither
