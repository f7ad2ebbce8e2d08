// Issue 11's requests (reload, create_table, drop_table, put_many's atomic
// flag, large writes' reserve/commit/abort) from a raw peer that lies:
// truncated and oversized payloads, arguments of the wrong kind, lengths that
// promise more than the frame holds, commits of reservations that are not the
// sender's to finish. Each gets an error naming what is wrong, the broker goes
// on serving, and nothing is left allocated.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "broker_fixture.hpp"
#include "slither/shm/store.hpp"

namespace slither {
namespace {

using protocol::message_type;
using test_support::BrokerTest;
using test_support::header_frame;
using test_support::RawPeer;
using namespace std::chrono_literals;

// The reply to one raw request: its error (code and message), or ok.
struct raw_answer {
  bool ok = false;
  errc code = errc::ok;
  std::string message;
};

raw_answer ask_raw(RawPeer& peer, std::vector<buffer> frames, std::uint64_t id) {
  peer.send(frames);
  auto m = peer.receive();
  EXPECT_TRUE(m) << "request " << id << " got no reply";
  if (!m) return {false, errc::internal, "no reply"};
  EXPECT_EQ(m->head.request_id, id);
  if (m->head.type == message_type::reply_ok) return {true, errc::ok, {}};
  const auto e = protocol::read_error_body(m->body);
  return {false, e.code, e.message};
}

raw_answer ask_args(RawPeer& peer, message_type type, std::uint64_t id, const Value& args) {
  return ask_raw(peer, {header_frame(type, id), encode(args)}, id);
}

// Expects a refusal with `code` whose message names `word`.
void expect_named_refusal(const raw_answer& a, errc code, const std::string& word) {
  EXPECT_FALSE(a.ok) << "accepted; expected an error naming " << word;
  EXPECT_EQ(a.code, code) << a.message;
  EXPECT_NE(a.message.find(word), std::string::npos) << a.message;
}

std::uint64_t store_figure(client& c, const char* name) {
  auto st = c.stats().value();
  return static_cast<std::uint64_t>((*st.find("stores"))["main"][name].as<std::int64_t>());
}

broker_options hostile_options(broker_options o) {
  o.limits.max_message_bytes = 1 << 16;
  o.inline_write_bytes = 256;  // payloads above it decode on the writer thread
  return o;
}

TEST_F(BrokerTest, CreateTableArgumentsAreCheckedByName) {
  auto& b = start(hostile_options(options()));
  ASSERT_TRUE(b.start());
  RawPeer peer(b.control_endpoint());
  std::uint64_t id = 100;
  auto create = [&](Map extra) {
    Map args{{"store", "main"}, {"table", "t"}};
    for (auto& [k, v] : extra) args.insert_or_assign(k, std::move(v));
    return ask_args(peer, message_type::create_table, ++id, Value(std::move(args)));
  };
  constexpr auto bad = errc::invalid_argument;
  expect_named_refusal(create({{"capacity", 0}}), bad, "capacity 0");
  expect_named_refusal(create({{"capacity", -1}}), bad, "capacity -1");
  expect_named_refusal(create({{"capacity", std::numeric_limits<std::int64_t>::max()}}), bad,
                       "capacity 9223372036854775807");
  expect_named_refusal(create({{"capacity", (std::int64_t{1} << 32) + 1}}), bad, "capacity");
  expect_named_refusal(create({{"capacity", 1.5}}), bad, "'capacity'");
  expect_named_refusal(create({{"capacity", "16"}}), bad, "'capacity'");
  expect_named_refusal(create({{"kind", "tree"}}), bad, "'tree'");
  expect_named_refusal(create({{"kind", 1}}), bad, "'kind'");
  expect_named_refusal(create({{"kind", ""}}), bad, "kind ''");
  expect_named_refusal(create({{"table", ""}}), bad, "table name");
  expect_named_refusal(create({{"table", std::string(48, 't')}}), bad, "1-47 bytes");
  expect_named_refusal(create({{"table", std::string("a\0b", 3)}}), bad, "'a\\x00b'");
  expect_named_refusal(create({{"table", 7}}), bad, "'table'");
  expect_named_refusal(create({{"table", Value{}}}), bad, "'table'");
  expect_named_refusal(create({{"store", Value(List{})}}), bad, "'store'");
  expect_named_refusal(create({{"incarnation", "x"}}), bad, "'incarnation'");
  expect_named_refusal(create({{"store", "nope"}}), errc::not_found, "'nope'");
  expect_named_refusal(create({{"table", "kv"}}), errc::already_exists, "'kv'");
  // Without a table argument at all.
  expect_named_refusal(
      ask_args(peer, message_type::create_table, ++id, Value::map({{"store", "main"}})), bad,
      "'table'");
  expect_named_refusal(
      ask_args(peer, message_type::drop_table, ++id, Value::map({{"store", "main"}})), bad,
      "'table'");
  expect_named_refusal(ask_args(peer, message_type::drop_table, ++id,
                                Value::map({{"store", "main"}, {"table", "ghost"}})),
                       errc::not_found, "'ghost'");

  // Nothing was created; the broker still serves, and a good request works.
  auto c = connect();
  EXPECT_EQ(c.attach_info("main")->tables, (std::vector<std::string>{"kv", "events"}));
  EXPECT_TRUE(create({{"capacity", 1}, {"kind", "ordered_set"}}).ok);
  EXPECT_TRUE(create({{"table", std::string(47, 'n')}}).ok);
  EXPECT_TRUE(c.ping());
}

TEST_F(BrokerTest, EntriesAndAtomicFlagsOfTheWrongShapeAreRefusedByName) {
  auto& b = start(hostile_options(options()));
  ASSERT_TRUE(b.start());
  RawPeer peer(b.control_endpoint());
  auto c = connect();
  ASSERT_TRUE(c.put("main", "kv", "keep", 1));
  std::uint64_t id = 200;
  const std::string big(1000, 'v');  // over inline_write_bytes: decoded on the writer thread
  for (const message_type type : {message_type::put_many, message_type::reload}) {
    for (const std::string& pad : {std::string(), big}) {
      auto send = [&](Value entries, Map extra = {}) {
        Map args{{"store", "main"}, {"table", "kv"}, {"entries", std::move(entries)}, {"pad", pad}};
        for (auto& [k, v] : extra) args.insert_or_assign(k, std::move(v));
        return ask_args(peer, type, ++id, Value(std::move(args)));
      };
      constexpr auto bad = errc::invalid_argument;
      expect_named_refusal(send(Value("ab")), bad, "'entries'");
      expect_named_refusal(send(Value(Map{{"a", 1}})), bad, "'entries'");
      expect_named_refusal(send(Value::list({Value::list({1, 2})})), bad, "entry 0");
      expect_named_refusal(send(Value::list({Value::list({"a", 1}), Value::list({"b"})})), bad,
                           "entry 1");
      expect_named_refusal(send(Value::list({Value::list({"a", 1, 2})})), bad, "entry 0");
      expect_named_refusal(send(Value::list({Value("a")})), bad, "entry 0");
      expect_named_refusal(send(Value::list({Value::list({Value(Bytes{"a"}), 1})})), bad,
                           "entry 0");
      expect_named_refusal(send(Value::list({Value::list({std::string(5000, 'k'), 1})})),
                           errc::limit_exceeded, "key");
      if (type == message_type::put_many) {
        expect_named_refusal(send(Value(List{}), {{"atomic", 1}}), bad, "'atomic'");
        expect_named_refusal(send(Value(List{}), {{"atomic", "yes"}}), bad, "'atomic'");
      }
      expect_named_refusal(
          ask_args(peer, type, ++id, Value::map({{"store", "main"}, {"table", "kv"}})), bad,
          "'entries'");
    }
  }
  // Nothing was applied: the table holds what it held.
  auto r = shm::reader::attach(ns_, "main").value();
  EXPECT_EQ(r.size("kv").value(), 1u);
  EXPECT_EQ(r.get("kv", "keep").value(), std::optional<Value>(1));
  EXPECT_TRUE(c.ping());
}

TEST_F(BrokerTest, TruncatedLyingAndOversizedPayloadsOfEachNewRequestAreAnswered) {
  auto& b = start(hostile_options(options()));
  ASSERT_TRUE(b.start());
  RawPeer peer(b.control_endpoint());
  auto c = connect();
  const std::uint64_t used = store_figure(c, "bytes_used");
  const std::string pad(2000, 'p');  // some payloads over inline_write_bytes
  const std::vector<std::pair<message_type, Value>> requests = {
      {message_type::reload, Value::map({{"store", "main"},
                                         {"table", "kv"},
                                         {"entries", Value::list({Value::list({"k", pad})})}})},
      {message_type::put_many, Value::map({{"store", "main"},
                                           {"table", "kv"},
                                           {"entries", Value::list({Value::list({"k", pad})})},
                                           {"atomic", true}})},
      {message_type::create_table,
       Value::map({{"store", "main"}, {"table", "t"}, {"kind", "ordered_set"}, {"pad", pad}})},
      {message_type::drop_table, Value::map({{"store", "main"}, {"table", "t"}, {"pad", pad}})},
      {message_type::put_reserve,
       Value::map({{"store", "main"}, {"table", "kv"}, {"key", "k"}, {"bytes", 100}})},
      {message_type::put_commit, Value::map({{"store", "main"}, {"id", 1}})},
      {message_type::put_abort, Value::map({{"store", "main"}, {"id", 1}})},
  };
  std::uint64_t id = 300;
  for (const auto& [type, args] : requests) {
    SCOPED_TRACE(protocol::to_string(type));
    const buffer whole = encode(args);
    // Cut anywhere: every length inside promises more than the frame holds.
    for (std::size_t cut = 0; cut < whole.size(); cut += 1 + whole.size() / 40) {
      const buffer part(whole.begin(), whole.begin() + static_cast<std::ptrdiff_t>(cut));
      const auto a = ask_raw(peer, {header_frame(type, ++id), part}, id);
      EXPECT_FALSE(a.ok) << "a payload cut at " << cut << " was accepted";
      EXPECT_TRUE(a.code == errc::decode_error || a.code == errc::protocol_error)
          << cut << ": " << a.message;
    }
    // Trailing bytes after a whole encoding.
    buffer longer = whole;
    longer.push_back(std::byte{0});
    auto a = ask_raw(peer, {header_frame(type, ++id), longer}, id);
    EXPECT_EQ(a.code, errc::decode_error) << a.message;
    // Not a map; three frames; a header alone.
    a = ask_args(peer, type, ++id, Value::list({"store", "main"}));
    EXPECT_FALSE(a.ok);
    EXPECT_EQ(a.code, errc::protocol_error) << a.message;
    a = ask_raw(peer, {header_frame(type, ++id), whole, whole}, id);
    EXPECT_EQ(a.code, errc::protocol_error) << a.message;
    a = ask_raw(peer, {header_frame(type, ++id)}, id);
    EXPECT_EQ(a.code, errc::protocol_error) << a.message;
    // Over the message limit (by less than the transport's headroom: a much
    // larger frame makes ZeroMQ drop the connection unanswered, by design).
    a = ask_args(peer, type, ++id,
                 Value::map({{"store", "main"}, {"pad", std::string((1 << 16) + 100, 'x')}}));
    EXPECT_EQ(a.code, errc::limit_exceeded) << a.message;
  }
  // A string whose length says 2^40 bytes, in a frame of a few: the short
  // string's one-byte header (0x80 + 8) becomes a long string's (0xc5) with
  // the varint 2^40.
  buffer liar = encode(Value::map({{"store", "main"}, {"table", "kvkvkvkv"}}));
  const char* kv = "kvkv";
  const auto at = std::search(liar.begin(), liar.end(), reinterpret_cast<const std::byte*>(kv),
                              reinterpret_cast<const std::byte*>(kv) + 4);
  ASSERT_NE(at, liar.end());
  const std::ptrdiff_t tag_at = at - liar.begin() - 1;
  ASSERT_EQ(std::to_integer<int>(liar[static_cast<std::size_t>(tag_at)]), 0x88);
  liar.erase(liar.begin() + tag_at);
  const std::byte huge_len[] = {std::byte{0xc5}, std::byte{0x80}, std::byte{0x80}, std::byte{0x80},
                                std::byte{0x80}, std::byte{0x80}, std::byte{0x20}};
  liar.insert(liar.begin() + tag_at, std::begin(huge_len), std::end(huge_len));
  for (const message_type type : {message_type::create_table, message_type::reload,
                                  message_type::drop_table, message_type::put_reserve}) {
    const auto a = ask_raw(peer, {header_frame(type, ++id), liar}, id);
    EXPECT_FALSE(a.ok);
    EXPECT_TRUE(a.code == errc::decode_error || a.code == errc::limit_exceeded) << a.message;
  }
  // The broker serves on; nothing was created or left allocated.
  EXPECT_TRUE(c.ping());
  EXPECT_EQ(c.attach_info("main")->tables, (std::vector<std::string>{"kv", "events"}));
  EXPECT_EQ(store_figure(c, "bytes_used"), used);
  EXPECT_EQ(store_figure(c, "entries"), 0u);
}

// Maps a reservation's pages, fills them with `fill`, unmaps.
bool fill_reservation(const put_reservation& r, char fill) {
  const int fd = ::shm_open(r.object.c_str(), O_RDWR, 0);
  if (fd < 0) return false;
  void* p = ::mmap(nullptr, r.map_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
                   static_cast<off_t>(r.offset));
  ::close(fd);
  if (p == MAP_FAILED) return false;
  if (r.client_backs && ::madvise(p, r.map_bytes, 23 /* MADV_POPULATE_WRITE */) != 0 &&
      errno != EINVAL) {
    ::munmap(p, r.map_bytes);
    return false;
  }
  std::memset(p, fill, r.bytes);
  ::munmap(p, r.map_bytes);
  return true;
}

TEST_F(BrokerTest, OnlyALiveReservationOfTheSenderInTheNamedStoreIsFinished) {
  auto o = options();
  o.stores.push_back(test_support::store_def("second"));
  auto& b = start(std::move(o));
  ASSERT_TRUE(b.start());
  auto mine = connect();
  auto other = connect();
  const std::uint64_t used = store_figure(mine, "bytes_used");
  // Both stores number their reservations from 1: an id names a
  // reservation only together with its store.
  auto in_main = mine.reserve_put_bytes("main", "kv", "a", 5000).value();
  auto in_second = other.reserve_put_bytes("second", "kv", "a", 5000).value();
  EXPECT_EQ(in_main.id, in_second.id);
  EXPECT_EQ(mine.commit_put("second", in_second.id).error().code, errc::not_found);
  EXPECT_EQ(other.commit_put("main", in_main.id).error().code, errc::not_found);
  EXPECT_EQ(mine.abort_put("second", in_second.id).error().code, errc::not_found);
  // Aborted, then committed or aborted again: gone.
  ASSERT_TRUE(mine.abort_put("main", in_main.id));
  EXPECT_EQ(mine.commit_put("main", in_main.id).error().code, errc::not_found);
  EXPECT_EQ(mine.abort_put("main", in_main.id).error().code, errc::not_found);
  ASSERT_TRUE(other.abort_put("second", in_second.id));

  // Its client's session ended: the reservation is no one else's to commit.
  {
    auto gone = connect();
    auto r = gone.reserve_put_bytes("main", "kv", "orphan", 5000).value();
    in_main = r;
  }
  const auto orphan = mine.commit_put("main", in_main.id);
  ASSERT_FALSE(orphan);
  EXPECT_EQ(orphan.error().code, errc::not_found);
  EXPECT_NE(orphan.error().message.find(std::to_string(in_main.id)), std::string::npos);

  // Wrong kinds and values of id.
  RawPeer peer(b.control_endpoint());
  std::uint64_t id = 400;
  for (const message_type type : {message_type::put_commit, message_type::put_abort}) {
    for (const Value& bad_id : {Value("1"), Value(1.0), Value(-1), Value(0), Value{}}) {
      expect_named_refusal(
          ask_args(peer, type, ++id, Value::map({{"store", "main"}, {"id", bad_id}})),
          errc::invalid_argument, "'id'");
    }
    expect_named_refusal(
        ask_args(peer, type, ++id,
                 Value::map({{"store", "main"}, {"id", std::numeric_limits<std::int64_t>::max()}})),
        errc::not_found, "9223372036854775807");
  }
  // A reservation whose table is dropped before the commit: refused, freed.
  ASSERT_TRUE(mine.create_table("main", "brief"));
  auto doomed = mine.reserve_put_bytes("main", "brief", "k", 5000).value();
  ASSERT_TRUE(mine.drop_table("main", "brief"));
  const auto dropped = mine.commit_put("main", doomed.id);
  ASSERT_FALSE(dropped);
  EXPECT_EQ(dropped.error().code, errc::not_found);
  EXPECT_TRUE(mine.ping());
  // Only the orphan is still held, until its lease ends.
  EXPECT_GT(store_figure(mine, "bytes_used"), used);
  EXPECT_EQ(store_figure(mine, "entries"), 0u);
}

TEST_F(BrokerTest, AClientBackedReservationOfAFewBytesWorksLikeALargeOne) {
  start();
  auto c = connect();
  auto reader = shm::reader::attach(ns_, "main").value();
  for (const std::uint64_t n : {std::uint64_t{0}, std::uint64_t{1}, std::uint64_t{16}}) {
    SCOPED_TRACE(n);
    auto r = c.reserve_put_bytes("main", "kv", "small", n, true).value();
    EXPECT_EQ(r.bytes, n);
    EXPECT_EQ(r.offset % 4096, 0u);
    ASSERT_TRUE(fill_reservation(r, 's'));
    ASSERT_TRUE(c.commit_put("main", r.id));
    EXPECT_EQ(reader.get("kv", "small").value(), std::optional(Value(Bytes{std::string(n, 's')})));
  }
  const std::uint64_t shape[] = {3};
  auto r = c.reserve_put("main", "kv", "arr", dtype::u8, shape, true).value();
  ASSERT_TRUE(fill_reservation(r, 7));
  ASSERT_TRUE(c.commit_put("main", r.id));
  const auto got = reader.get("kv", "arr").value();
  ASSERT_TRUE(got && got->is_ndarray());
  EXPECT_EQ(got->as<ndarray>().values<std::uint8_t>()[2], 7);
  // Given up, a client-backed block is freed like any other.
  const std::uint64_t used = store_figure(c, "bytes_used");
  auto gone = c.reserve_put_bytes("main", "kv", "x", 10, true).value();
  ASSERT_TRUE(c.abort_put("main", gone.id));
  EXPECT_EQ(store_figure(c, "bytes_used"), used);
  // client_backs of the wrong kind is named.
  RawPeer peer(broker_->control_endpoint());
  expect_named_refusal(ask_args(peer, message_type::put_reserve, 9,
                                Value::map({{"store", "main"},
                                            {"table", "kv"},
                                            {"key", "k"},
                                            {"bytes", 10},
                                            {"client_backs", 1}})),
                       errc::invalid_argument, "'client_backs'");
}

TEST_F(BrokerTest, PutsInPlaceReachOrderedTablesAndBagsLikePuts) {
  start();
  auto c = connect();
  ASSERT_TRUE(c.create_table("main", "ord", "ordered_set", 8));
  auto reader = shm::reader::attach(ns_, "main").value();
  const std::string data(5000, 'd');
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data.data()),
                                         data.size());
  for (const char* k : {"m", "a", "z"}) ASSERT_TRUE(c.put_bytes_in_place("main", "ord", k, bytes));
  ASSERT_TRUE(c.put("main", "ord", "b", 1));
  const auto all = reader.range("ord").value();
  ASSERT_EQ(all.size(), 4u);
  EXPECT_EQ(all[0].first, "a");
  EXPECT_EQ(all[3].first, "z");
  EXPECT_EQ(all[2].second, Value(Bytes{data}));
  EXPECT_EQ(reader.last("ord").value()->second, Value(Bytes{data}));
  ASSERT_TRUE(c.put("main", "events", "k", 1));
  ASSERT_TRUE(c.put_bytes_in_place("main", "events", "k", bytes));
  EXPECT_EQ(reader.get_all("events", "k").value(), (std::vector<Value>{1, Value(Bytes{data})}));
  EXPECT_EQ(reader.key_count("events").value(), 1u);
}

TEST_F(BrokerTest, TheClientNamesCapacitiesAndDimensionsTooLargeForTheWire) {
  // The wire's ints are int64: 2^63 once reached the broker as
  // -9223372036854775808, and the error named that number.
  start();
  auto c = connect();
  const auto huge = c.create_table("main", "t", "set", std::uint64_t{1} << 63);
  ASSERT_FALSE(huge);
  EXPECT_EQ(huge.error().code, errc::invalid_argument);
  EXPECT_NE(huge.error().message.find("capacity 9223372036854775808"), std::string::npos)
      << huge.error().message;
  const auto all_ones = c.create_table("main", "t", "set", UINT64_MAX);
  ASSERT_FALSE(all_ones);
  EXPECT_NE(all_ones.error().message.find("capacity 18446744073709551615"), std::string::npos)
      << all_ones.error().message;
  const std::uint64_t shape[] = {4, std::uint64_t{1} << 63};
  const auto wide = c.reserve_put("main", "kv", "k", dtype::u8, shape);
  ASSERT_FALSE(wide);
  EXPECT_EQ(wide.error().code, errc::limit_exceeded);
  EXPECT_NE(wide.error().message.find("9223372036854775808"), std::string::npos)
      << wide.error().message;
  EXPECT_EQ(c.attach_info("main")->tables, (std::vector<std::string>{"kv", "events"}));
}

TEST_F(BrokerTest, ALeaseEndsWhileTheWriterIsNeverIdle) {
  // Leases were ended only by the reclaim timer's job, which is skipped
  // whenever writes are queued: a broker that was never idle kept a dead
  // client's reservation (its block) for as long as the load lasted.
  auto o = options();
  o.large_write_lease = 200ms;
  start(std::move(o));
  ASSERT_TRUE(broker_->start());
  auto c = connect();
  const std::uint64_t before = store_figure(c, "bytes_used");
  {
    auto gone = connect();
    ASSERT_TRUE(gone.reserve_put_bytes("main", "kv", "orphan", 1 << 20));
  }
  ASSERT_GT(store_figure(c, "bytes_used"), before + (1 << 20));
  // Three writers that keep the queue from ever being empty.
  std::atomic<bool> stop{false};
  std::vector<std::thread> load;
  for (int i = 0; i < 3; ++i) {
    load.emplace_back([&] {
      while (!stop.load()) {
        (void)broker_->write("main", [](shm::writer&) -> result<void> {
          std::this_thread::sleep_for(2ms);
          return {};
        });
      }
    });
  }
  const auto deadline = std::chrono::steady_clock::now() + 2s;
  std::uint64_t used = store_figure(c, "bytes_used");
  while (used != before && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
    used = store_figure(c, "bytes_used");
  }
  stop = true;
  for (auto& t : load) t.join();
  EXPECT_EQ(used, before) << "the orphan's block was still held under load";
}

}  // namespace
}  // namespace slither
