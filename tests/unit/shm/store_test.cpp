// Single-process tests of the Store: API behaviour, errors, reclamation.
#include "slither/shm/store.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "shm_test_util.hpp"
#include "slither/core/codec.hpp"
#include "slither/shm/detail/sys.hpp"

namespace slither::shm {
namespace {

using testing::test_options;

const std::vector<table_spec> kTables = {{"kv", table_kind::set, 16}, {"log", table_kind::bag, 16}};

writer make_writer(const store_options& o, std::span<const table_spec> tables = kTables) {
  auto w = writer::create(o, tables);
  if (!w) throw slither::error(w.error());
  return std::move(*w);
}

Value bytes_value(std::size_t n, char fill) {
  return Value(Bytes{std::string(n, fill)});
}

TEST(StoreNames, SegmentAndRegistryNames) {
  EXPECT_EQ(segment_name("ns", "st", 3), "/slither.ns.st.3");
  EXPECT_EQ(registry_name("ns", "st"), "/slither.ns.st.readers");
}

TEST(Store, IncarnationTellsARecreatedStoreApart) {
  const auto o = test_options("incarnation");
  std::uint64_t first = 0;
  {
    writer w = make_writer(o);
    auto r = reader::attach(o.ns, o.name);
    ASSERT_TRUE(r) << r.error().message;
    first = w.incarnation();
    EXPECT_NE(first, 0u);
    EXPECT_EQ(r->incarnation(), first);
    EXPECT_FALSE(r->store_closed());
    w.close();
    EXPECT_TRUE(r->store_closed());
  }
  writer again = make_writer(o);
  EXPECT_NE(again.incarnation(), first);
  EXPECT_EQ(again.read().incarnation(), again.incarnation());
}

TEST(Store, AMovedFromReaderGivesAClearErrorNotACrash) {
  const auto o = test_options("movedfrom");
  writer w = make_writer(o);
  ASSERT_TRUE(w.put("kv", "k", Value(1)));
  auto attached = reader::attach(o.ns, o.name);
  ASSERT_TRUE(attached) << attached.error().message;
  reader r = std::move(*attached);
  reader& gone = *attached;  // moved from
  const auto is_moved_from = [](const error_info& e) {
    return e.code == errc::invalid_argument && e.message.find("moved from") != std::string::npos;
  };
  ASSERT_FALSE(gone.get("kv", "k"));
  EXPECT_TRUE(is_moved_from(gone.get("kv", "k").error())) << gone.get("kv", "k").error().message;
  EXPECT_TRUE(is_moved_from(gone.get_all("kv", "k").error()));
  EXPECT_TRUE(is_moved_from(gone.get_view("kv", "k").error()));
  EXPECT_TRUE(is_moved_from(gone.contains("kv", "k").error()));
  EXPECT_TRUE(is_moved_from(gone.size("kv").error()));
  EXPECT_TRUE(is_moved_from(gone.keys("kv").error()));
  EXPECT_TRUE(is_moved_from(gone.peek("kv", "k", [](std::span<const std::byte>) {}).error()));
  EXPECT_TRUE(is_moved_from(
      gone.for_each("kv", [](std::string_view, const view&) { return true; }).error()));
  EXPECT_THROW((void)gone.tables(), slither::error);
  EXPECT_TRUE(gone.store_closed());
  EXPECT_EQ(gone.incarnation(), 0u);
  // The reader it moved to reads on; a moved-from one can be assigned anew.
  EXPECT_EQ(r.get("kv", "k").value(), Value(1));
  gone = std::move(r);
  EXPECT_EQ(gone.get("kv", "k").value(), Value(1));
}

TEST(Store, PutGetContainsSizeErase) {
  auto w = make_writer(test_options("basic"));
  const reader& r = w.read();
  EXPECT_EQ(r.tables(), (std::vector<std::string>{"kv", "log"}));
  // Versions come from one store-wide counter.
  EXPECT_EQ(w.put("kv", "a", 1).value(), 1u);
  EXPECT_EQ(w.put("kv", "a", "two").value(), 2u);
  EXPECT_EQ(w.put("kv", "b", Value::map({{"x", 1.5}})).value(), 3u);
  EXPECT_EQ(r.get("kv", "a").value(), std::optional<Value>("two"));
  EXPECT_EQ(r.get("kv", "b").value()->as<Map>().at("x"), Value(1.5));
  EXPECT_FALSE(r.get("kv", "zz").value().has_value());
  EXPECT_TRUE(r.contains("kv", "a").value());
  EXPECT_EQ(r.size("kv").value(), 2u);
  EXPECT_TRUE(w.erase("kv", "a").value());
  EXPECT_FALSE(w.erase("kv", "a").value());
  EXPECT_FALSE(r.contains("kv", "a").value());
  EXPECT_EQ(r.size("kv").value(), 1u);
  EXPECT_EQ(w.put("kv", "a", 3).value(), 4u);  // a new entry, but never an old version
  EXPECT_EQ(w.stats().entries, 2u);
}

TEST(Store, PeekPassesTheStoredEncodingInPlace) {
  auto w = make_writer(test_options("peek"));
  const reader& r = w.read();
  ASSERT_TRUE(w.put("kv", "s", "text").has_value());
  ASSERT_TRUE(w.put("kv", "nd", ndarray::zeros(dtype::f32, {4})).has_value());
  ASSERT_TRUE(w.put("log", "k", 1).has_value());
  ASSERT_TRUE(w.put("log", "k", 2).has_value());

  Value seen;
  auto decode_into = [&](std::span<const std::byte> enc) { seen = decode(enc).value(); };
  EXPECT_EQ(r.peek("kv", "s", decode_into).value(), reader::peeked::visited);
  EXPECT_EQ(seen, Value("text"));
  EXPECT_EQ(r.peek("log", "k", decode_into).value(), reader::peeked::visited);
  EXPECT_EQ(seen, Value(1)) << "a bag passes its first value";

  int calls = 0;
  auto count = [&](std::span<const std::byte>) { ++calls; };
  EXPECT_EQ(r.peek("kv", "missing", count).value(), reader::peeked::absent);
  EXPECT_EQ(r.peek("kv", "nd", count).value(), reader::peeked::is_ndarray);
  EXPECT_EQ(calls, 0);
  auto unknown = r.peek("nope", "s", count);
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code, errc::not_found);
}

TEST(Store, NumberedPeekReadsLikeTheNamedOneAndRefusesAClosedStore) {
  const auto o = test_options("peeknum");
  auto w = make_writer(o);
  ASSERT_TRUE(w.put("kv", "s", "text").has_value());
  ASSERT_TRUE(w.put("kv", "nd", ndarray::zeros(dtype::f32, {4})).has_value());
  ASSERT_TRUE(w.put("log", "k", 1).has_value());
  ASSERT_TRUE(w.put("log", "k", 2).has_value());
  auto attached = reader::attach(o.ns, o.name);
  ASSERT_TRUE(attached) << attached.error().message;
  const reader& r = *attached;
  const auto kv = r.table_number("kv"), log = r.table_number("log");
  ASSERT_TRUE(kv && log);

  struct seen_t {
    Value value;
    int calls = 0;
  } seen;
  auto decode_into = [](void* context, std::span<const std::byte> enc) noexcept {
    auto& s = *static_cast<seen_t*>(context);
    ++s.calls;
    s.value = decode(enc).value();
  };
  EXPECT_EQ(r.peek(*kv, "s", decode_into, &seen).value(), reader::peeked::visited);
  EXPECT_EQ(seen.value, Value("text"));
  EXPECT_EQ(r.peek(*log, "k", decode_into, &seen).value(), reader::peeked::visited);
  EXPECT_EQ(seen.value, Value(1)) << "a bag passes its first value";
  EXPECT_EQ(seen.calls, 2);
  EXPECT_EQ(r.peek(*kv, "missing", decode_into, &seen).value(), reader::peeked::absent);
  EXPECT_EQ(r.peek(*kv, "nd", decode_into, &seen).value(), reader::peeked::is_ndarray);
  EXPECT_EQ(seen.calls, 2);
  auto unknown = r.peek(99, "s", decode_into, &seen);
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code, errc::not_found);

  // Closed by its writer: refused before anything is read (the named peek
  // still reads the old mapping).
  w.close();
  ASSERT_TRUE(r.store_closed());
  auto closed = r.peek(*kv, "s", decode_into, &seen);
  ASSERT_FALSE(closed);
  EXPECT_EQ(closed.error().code, errc::writer_gone);
  EXPECT_EQ(seen.calls, 2);
}

TEST(Store, AttachFromAnotherReader) {
  const auto o = test_options("attach");
  auto w = make_writer(o);
  ASSERT_TRUE(w.put("kv", "k", "v"));
  auto r = reader::attach(o.ns, o.name);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->get("kv", "k").value(), std::optional<Value>("v"));
  EXPECT_EQ(w.stats().readers, 2u);  // the writer's own reader and this one
}

TEST(Store, ManyKeysGrowTheIndexAndSegments) {
  auto o = test_options("grow");
  o.initial_segment_bytes = 64 << 10;
  auto w = make_writer(o);
  const int n = 20000;
  for (int i = 0; i < n; ++i) ASSERT_TRUE(w.put("kv", testing::numbered("key", i), i));
  for (int i = 0; i < n; ++i) {
    ASSERT_EQ(w.read().get("kv", testing::numbered("key", i)).value(), std::optional<Value>(i));
  }
  EXPECT_EQ(w.read().size("kv").value(), static_cast<std::size_t>(n));
  EXPECT_GT(w.stats().segments, 1u);
  auto keys = w.read().keys("kv", "key1999").value();
  std::sort(keys.begin(), keys.end());
  EXPECT_EQ(keys, (std::vector<std::string>{"key1999", "key19990", "key19991", "key19992",
                                            "key19993", "key19994", "key19995", "key19996",
                                            "key19997", "key19998", "key19999"}));
}

TEST(Store, EraseAndReinsertReuseTombstones) {
  auto w = make_writer(test_options("tomb"));
  for (int round = 0; round < 50; ++round) {
    for (int i = 0; i < 100; ++i) ASSERT_TRUE(w.put("kv", std::to_string(i), round));
    for (int i = 0; i < 100; i += 2) ASSERT_TRUE(w.erase("kv", std::to_string(i)).value());
  }
  EXPECT_EQ(w.read().size("kv").value(), 50u);
  for (int i = 1; i < 100; i += 2)
    EXPECT_EQ(w.read().get("kv", std::to_string(i)).value(), Value(49));
}

TEST(Store, BagGetReadsTheOldestValueOfALongChain) {
  auto w = make_writer(test_options("bagfirst"));
  const reader& r = w.read();
  for (int i = 0; i < 10000; ++i) ASSERT_TRUE(w.put("log", "k", i));
  EXPECT_EQ(r.get("log", "k").value(), std::optional<Value>(0));
  EXPECT_EQ(r.get_view("log", "k").value()->value(), Value(0));
  EXPECT_EQ(r.get_all("log", "k").value().size(), 10000u);
  // Erased and appended again: the chain starts over.
  ASSERT_TRUE(w.erase("log", "k").value());
  ASSERT_TRUE(w.put("log", "k", "again"));
  EXPECT_EQ(r.get("log", "k").value(), std::optional<Value>("again"));
  ASSERT_TRUE(w.put("log", "k", "later"));
  EXPECT_EQ(r.get("log", "k").value(), std::optional<Value>("again"));
  // put_many appends in order, the first of them oldest when the key is new.
  const std::vector<std::pair<std::string, Value>> batch = {{"m", 1}, {"m", 2}, {"m", 3}};
  ASSERT_TRUE(w.put_many("log", batch));
  EXPECT_EQ(r.get("log", "m").value(), std::optional<Value>(1));
  EXPECT_EQ(r.get_all("log", "m").value(), (std::vector<Value>{1, 2, 3}));
}

TEST(Store, BagKeepsValuesInOrder) {
  auto w = make_writer(test_options("bag"));
  const reader& r = w.read();
  EXPECT_EQ(w.put("log", "k", 1).value(), 1u);
  EXPECT_EQ(w.put("log", "k", 2).value(), 2u);
  EXPECT_EQ(w.put("log", "k", 3).value(), 3u);
  ASSERT_TRUE(w.put("log", "other", "x"));
  EXPECT_EQ(r.get_all("log", "k").value(), (std::vector<Value>{1, 2, 3}));
  EXPECT_EQ(r.get("log", "k").value(), std::optional<Value>(1));
  EXPECT_EQ(r.get_view("log", "k").value()->value(), Value(1));
  EXPECT_EQ(r.size("log").value(), 4u);
  EXPECT_EQ(r.key_count("log").value(), 2u);  // distinct keys: a mapping's length
  ASSERT_TRUE(w.put("kv", "a", 1));
  EXPECT_EQ(r.key_count("kv").value(), r.size("kv").value());
  EXPECT_EQ(r.key_count("nope").error().code, errc::not_found);
  std::vector<Value> seen;
  ASSERT_TRUE(r.for_each("log", [&](std::string_view key, const view& v) {
    if (key == "k") seen.push_back(v.value());
    return true;
  }));
  EXPECT_EQ(seen, (std::vector<Value>{1, 2, 3}));
  EXPECT_EQ(r.get_all("kv", "none").value(), std::vector<Value>{});
  EXPECT_TRUE(w.erase("log", "k").value());
  EXPECT_EQ(r.size("log").value(), 1u);
  EXPECT_EQ(r.key_count("log").value(), 1u);
  EXPECT_EQ(w.stats().entries, 2u);
}

TEST(Store, ForEachSeesEveryEntryOnceAndStopsEarly) {
  auto w = make_writer(test_options("iter"));
  for (int i = 0; i < 500; ++i) ASSERT_TRUE(w.put("kv", std::to_string(i), i));
  std::vector<int> seen(500, 0);
  ASSERT_TRUE(w.read().for_each("kv", [&](std::string_view key, const view& v) {
    EXPECT_EQ(std::to_string(v.value().as<std::int64_t>()), key);
    ++seen[std::stoi(std::string(key))];
    return true;
  }));
  EXPECT_TRUE(std::all_of(seen.begin(), seen.end(), [](int c) { return c == 1; }));
  int calls = 0;
  ASSERT_TRUE(w.read().for_each("kv", [&](std::string_view, const view&) { return ++calls < 3; }));
  EXPECT_EQ(calls, 3);
}

TEST(Store, NdarrayViewIsZeroCopyAlignedAndReadOnly) {
  auto w = make_writer(test_options("nd"));
  auto a = ndarray::zeros(dtype::f32, {3, 5});
  auto vals = a.mutable_values<float>();
  for (std::size_t i = 0; i < vals.size(); ++i) vals[i] = static_cast<float>(i) * 0.5f;
  ASSERT_TRUE(w.put("kv", "weights", a));
  ndarray seen;
  {
    auto v = w.read().get_view("kv", "weights").value();
    ASSERT_TRUE(v);
    EXPECT_TRUE(v->is_ndarray());
    seen = v->array();
  }  // the ndarray keeps the block held after the view is gone
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(seen.data()) % ndarray::alignment, 0u);
  EXPECT_FALSE(seen.writable());
  EXPECT_EQ(seen, a);
  EXPECT_EQ(w.read().get("kv", "weights").value(), std::optional<Value>(a));
  ASSERT_TRUE(w.put("kv", "plain", "text"));
  auto v = w.read().get_view("kv", "plain").value();
  EXPECT_FALSE(v->is_ndarray());
  EXPECT_THROW(v->array(), slither::error);
  EXPECT_EQ(v->value(), Value("text"));
  EXPECT_EQ(v->version(), 2u);  // the store's second write
}

TEST(Store, UpdateAndCompareAndSet) {
  auto w = make_writer(test_options("cas"));
  auto inc = [](const std::optional<Value>& cur) {
    return Value(cur ? cur->as<std::int64_t>() + 1 : std::int64_t{0});
  };
  EXPECT_EQ(w.update("kv", "n", inc).value(), 1u);
  EXPECT_EQ(w.update("kv", "n", inc).value(), 2u);
  EXPECT_EQ(w.read().get("kv", "n").value(), std::optional<Value>(1));
  auto conflict = w.compare_and_set("kv", "n", 1, 10);
  ASSERT_FALSE(conflict);
  EXPECT_EQ(conflict.error().code, errc::conflict);
  EXPECT_NE(conflict.error().message.find("version 2"), std::string::npos);
  EXPECT_EQ(w.compare_and_set("kv", "n", 2, 10).value(), 3u);
  EXPECT_EQ(w.compare_and_set("kv", "fresh", 0, 1).value(), 4u);
  auto thrower = w.update(
      "kv", "n", [](const std::optional<Value>&) -> Value { throw std::runtime_error("boom"); });
  ASSERT_FALSE(thrower);
  EXPECT_NE(thrower.error().message.find("boom"), std::string::npos);
  EXPECT_EQ(w.read().get("kv", "n").value(), std::optional<Value>(10));
  EXPECT_EQ(w.update("log", "n", inc).error().code, errc::invalid_argument);
}

TEST(Store, CompareAndEraseRemovesOnlyTheVersionRead) {
  const std::vector<table_spec> tables = {{"kv", table_kind::set, 16},
                                          {"log", table_kind::bag, 16},
                                          {"sorted", table_kind::ordered_set, 16}};
  auto w = make_writer(test_options("cae"), tables);
  const std::uint64_t v1 = w.put("kv", "k", "a").value();
  const std::uint64_t v2 = w.put("kv", "k", "b").value();
  auto stale = w.compare_and_erase("kv", "k", v1);
  ASSERT_FALSE(stale);
  EXPECT_EQ(stale.error().code, errc::conflict);
  EXPECT_NE(stale.error().message.find("version " + std::to_string(v2)), std::string::npos)
      << stale.error().message;
  EXPECT_EQ(w.read().get("kv", "k").value(), std::optional<Value>("b"));
  // Absent: 0 matches and removes nothing; any other version names version 0.
  EXPECT_FALSE(w.compare_and_erase("kv", "none", 0).value());
  auto absent = w.compare_and_erase("kv", "none", v2);
  ASSERT_FALSE(absent);
  EXPECT_EQ(absent.error().code, errc::conflict);
  EXPECT_NE(absent.error().message.find("version 0"), std::string::npos);
  EXPECT_EQ(w.compare_and_erase("kv", "k", 0).error().code, errc::conflict);
  EXPECT_TRUE(w.compare_and_erase("kv", "k", v2).value());
  EXPECT_EQ(w.read().get("kv", "k").value(), std::nullopt);
  EXPECT_EQ(w.read().key_count("kv").value(), 0u);
  // An ordered table's tree loses the key too.
  const std::uint64_t s1 = w.put("sorted", "s", 1).value();
  EXPECT_TRUE(w.compare_and_erase("sorted", "s", s1).value());
  EXPECT_EQ(w.read().range("sorted").value().size(), 0u);
  // A bag is refused, as compare_and_set refuses it, and keeps its values.
  ASSERT_TRUE(w.put("log", "k", 1));
  auto bag = w.compare_and_erase("log", "k", 0);
  ASSERT_FALSE(bag);
  EXPECT_EQ(bag.error().code, errc::invalid_argument);
  EXPECT_NE(bag.error().message.find("'log' is a bag"), std::string::npos);
  EXPECT_EQ(w.read().size("log").value(), 1u);
  EXPECT_EQ(w.compare_and_erase("nope", "k", 0).error().code, errc::not_found);
}

TEST(Store, VersionsNeverRepeatSoAStaleCompareAndSetFails) {
  auto w = make_writer(test_options("aba"));
  // Each way a key can start over: erase and put again, clear, reload.
  const std::uint64_t v1 = w.put("kv", "k", "a").value();
  ASSERT_TRUE(w.erase("kv", "k").value());
  const std::uint64_t v2 = w.put("kv", "k", "b").value();
  EXPECT_GT(v2, v1);
  EXPECT_EQ(w.compare_and_set("kv", "k", v1, "stale").error().code, errc::conflict);
  ASSERT_TRUE(w.clear("kv"));
  const std::uint64_t v3 = w.put("kv", "k", "c").value();
  EXPECT_GT(v3, v2);
  EXPECT_EQ(w.compare_and_set("kv", "k", v1, "stale").error().code, errc::conflict);
  EXPECT_EQ(w.compare_and_set("kv", "k", v2, "stale").error().code, errc::conflict);
  ASSERT_TRUE(w.reload("kv", [](loader& l) { return l.put("k", "d"); }));
  const std::uint64_t v4 = w.read().get_view("kv", "k").value()->version();
  EXPECT_GT(v4, v3);
  for (std::uint64_t stale : {v1, v2, v3}) {
    EXPECT_EQ(w.compare_and_set("kv", "k", stale, "stale").error().code, errc::conflict);
  }
  EXPECT_EQ(w.read().get("kv", "k").value(), std::optional<Value>("d"));
  EXPECT_GT(w.compare_and_set("kv", "k", v4, "e").value(), v4);
}

TEST(Store, ErrorsNameTheBadInputAndChangeNothing) {
  auto w = make_writer(test_options("errors"));
  ASSERT_TRUE(w.put("kv", "keep", "old"));
  w.reclaim();
  const auto before = w.stats();

  auto unknown = w.put("nope", "k", 1);
  EXPECT_EQ(unknown.error().code, errc::not_found);
  EXPECT_NE(unknown.error().message.find("unknown table 'nope'"), std::string::npos);
  EXPECT_EQ(w.read().get("nope", "k").error().code, errc::not_found);

  auto long_key = w.put("kv", std::string(257, 'k'), 1);
  EXPECT_EQ(long_key.error().code, errc::limit_exceeded);
  EXPECT_NE(long_key.error().message.find("257 bytes"), std::string::npos);
  EXPECT_NE(long_key.error().message.find("256"), std::string::npos);

  auto o = test_options("errors2");
  o.max_value_bytes = 1000;
  auto small = make_writer(o);
  ASSERT_TRUE(small.put("kv", "keep", "old"));
  auto big = small.put("kv", "keep", bytes_value(2000, 'x'));
  EXPECT_EQ(big.error().code, errc::limit_exceeded);
  EXPECT_NE(big.error().message.find("'keep'"), std::string::npos);
  EXPECT_EQ(small.read().get("kv", "keep").value(), std::optional<Value>("old"));

  std::vector<std::pair<std::string, Value>> batch = {{"a", 1}, {"keep", bytes_value(5000, 'y')}};
  EXPECT_EQ(small.put_many("kv", batch).error().code, errc::limit_exceeded);
  EXPECT_FALSE(small.read().contains("kv", "a").value());
  EXPECT_EQ(small.read().get("kv", "keep").value(), std::optional<Value>("old"));

  const auto after = w.stats();
  EXPECT_EQ(after.entries, before.entries);
  EXPECT_EQ(after.bytes_used, before.bytes_used);
  EXPECT_EQ(after.bytes_retired, before.bytes_retired);
  EXPECT_EQ(w.read().get("kv", "keep").value(), std::optional<Value>("old"));
}

TEST(Store, PutManyStoresAll) {
  auto w = make_writer(test_options("many"));
  std::vector<std::pair<std::string, Value>> batch;
  for (int i = 0; i < 1000; ++i) batch.emplace_back(testing::numbered("k", i), i);
  batch.emplace_back("k5", 55);  // a later duplicate wins
  ASSERT_TRUE(w.put_many("kv", batch));
  EXPECT_EQ(w.read().size("kv").value(), 1000u);
  EXPECT_EQ(w.read().get("kv", "k5").value(), std::optional<Value>(55));
  EXPECT_EQ(w.read().get("kv", "k999").value(), std::optional<Value>(999));
}

TEST(Store, BadSpecsAndNames) {
  auto o = test_options("specs");
  std::vector<table_spec> dup = {{"a"}, {"a"}};
  EXPECT_EQ(writer::create(o, dup).error().code, errc::invalid_argument);
  std::vector<table_spec> none;
  EXPECT_EQ(writer::create(o, none).error().code, errc::invalid_argument);
  o.name = "bad/name";
  EXPECT_EQ(writer::create(o, kTables).error().code, errc::invalid_argument);
  EXPECT_EQ(reader::attach("ns", "bad.name").error().code, errc::invalid_argument);
}

TEST(Store, SecondWriterIsRefusedAndCloseUnlinks) {
  const auto o = test_options("owner");
  auto w = make_writer(o);
  auto second = writer::create(o, kTables);
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, errc::already_exists);
  auto r = reader::attach(o.ns, o.name).value();
  ASSERT_TRUE(w.put("kv", "k", "v"));
  w.close();
  w.close();  // safe twice
  EXPECT_EQ(reader::attach(o.ns, o.name).error().code, errc::not_found);
  EXPECT_EQ(r.get("kv", "k").value(), std::optional<Value>("v"));  // existing mappings stay
  EXPECT_EQ(w.put("kv", "k", 1).error().code, errc::writer_gone);
  auto again = writer::create(o, kTables);  // the name is free again
  EXPECT_TRUE(again) << again.error().message;
}

TEST(Store, SegmentsAreOwnerOnly) {
  const auto o = test_options("perm");
  ::umask(0);
  auto w = make_writer(o);
  ::umask(022);
  for (const std::string& name : {segment_name(o.ns, o.name, 0), registry_name(o.ns, o.name)}) {
    const int fd = ::shm_open(name.c_str(), O_RDONLY, 0);
    ASSERT_GE(fd, 0) << name;
    struct stat st {};
    ASSERT_EQ(::fstat(fd, &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u) << name;
    ::close(fd);
  }
}

TEST(Store, LayoutMismatchIsRefused) {
  const auto o = test_options("layout");
  const std::string name = segment_name(o.ns, o.name, 0);
  const int fd = ::shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  ASSERT_GE(fd, 0);
  std::vector<std::uint64_t> junk(8192 / 8, 0x0123456789abcdefULL);
  ASSERT_EQ(::write(fd, junk.data(), junk.size() * 8), static_cast<ssize_t>(junk.size() * 8));
  ::close(fd);
  auto r = reader::attach(o.ns, o.name);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::layout_mismatch);
  // No live writer's pid in it: a new writer treats it as stale and replaces it.
  auto w = writer::create(o, kTables);
  EXPECT_TRUE(w) << w.error().message;
}

TEST(Store, FullDevShmIsAnErrorAtTheWriteThatNeedsSpace) {
  auto o = test_options("enospc");
  o.initial_segment_bytes = 64 << 10;
  auto w = make_writer(o);
  ASSERT_TRUE(w.put("kv", "keep", "old"));
  const auto before = w.stats();
  auto& calls = detail::sys();
  const auto real = calls.fallocate;
  calls.fallocate = [](int, off_t, off_t) { return ENOSPC; };
  auto r = w.put("kv", "big", bytes_value(1 << 20, 'b'));
  calls.fallocate = real;
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::no_space);
  EXPECT_FALSE(w.read().contains("kv", "big").value());
  EXPECT_EQ(w.stats().segments, before.segments);
  EXPECT_EQ(w.stats().entries, before.entries);

  const auto real_statvfs = calls.fstatvfs;
  calls.fstatvfs = [](int, struct statvfs* out) {
    std::memset(out, 0, sizeof(*out));
    out->f_frsize = 4096;
    out->f_bavail = 1;
    return 0;
  };
  auto r2 = w.put("kv", "big", bytes_value(1 << 20, 'b'));
  calls.fstatvfs = real_statvfs;
  EXPECT_EQ(r2.error().code, errc::no_space);
  EXPECT_NE(r2.error().message.find("/dev/shm"), std::string::npos);
  EXPECT_TRUE(w.put("kv", "big", bytes_value(1 << 20, 'b')));
  EXPECT_EQ(w.read().get("kv", "keep").value(), std::optional<Value>("old"));
}

TEST(Store, ReclaimFreesRetiredBlocksButNotHeldOnes) {
  auto w = make_writer(test_options("reclaim"));
  ASSERT_TRUE(w.put("kv", "held", bytes_value(10000, 'h')));
  auto held = w.read().get_view("kv", "held").value();
  ASSERT_TRUE(held);
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(w.put("kv", "held", bytes_value(10000, static_cast<char>('a' + i % 20))));
    ASSERT_TRUE(w.put("kv", "other", bytes_value(1000, 'o')));
  }
  w.reclaim();
  const auto s = w.stats();
  EXPECT_GT(s.bytes_retired, 10000u);
  EXPECT_LT(s.bytes_retired, 12000u);  // just the held block
  EXPECT_EQ(held->value(), bytes_value(10000, 'h'));
  held.reset();
  w.reclaim();
  EXPECT_EQ(w.stats().bytes_retired, 0u);
}

TEST(Store, ViewsBeyondTheHoldTablePinTheirEpochAndAreNeverLost) {
  auto w = make_writer(test_options("overflow"));
  for (int i = 0; i < 300; ++i) ASSERT_TRUE(w.put("kv", std::to_string(i), i));
  std::vector<view> views;
  for (int i = 0; i < 300; ++i)
    views.push_back(*w.read().get_view("kv", std::to_string(i)).value());
  for (int round = 1; round <= 3; ++round) {
    for (int i = 0; i < 300; ++i) ASSERT_TRUE(w.put("kv", std::to_string(i), i + 1000 * round));
  }
  w.reclaim();
  EXPECT_GT(w.stats().bytes_retired, 0u);
  for (int i = 0; i < 300; ++i) EXPECT_EQ(views[i].value(), Value(i));
  views.clear();
  w.reclaim();
  EXPECT_EQ(w.stats().bytes_retired, 0u);
}

TEST(Store, ClearAndReloadSwitchWholeTablesAndHeldViewsKeepTheirBytes) {
  auto w = make_writer(test_options("reload"));
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(w.put("kv", std::to_string(i), "old"));
  auto v = *w.read().get_view("kv", "7").value();
  ASSERT_TRUE(w.reload("kv", [](loader& l) -> result<void> {
    for (int i = 0; i < 50; ++i) {
      if (auto r = l.put(testing::numbered("n", i), "new"); !r) return r;
    }
    return {};
  }));
  EXPECT_EQ(w.read().size("kv").value(), 50u);
  EXPECT_FALSE(w.read().contains("kv", "7").value());
  EXPECT_EQ(w.read().get("kv", "n3").value(), std::optional<Value>("new"));
  EXPECT_EQ(v.value(), Value("old"));

  auto failed = w.reload("kv", [](loader& l) -> result<void> {
    if (auto r = l.put("x", 1); !r) return r;
    return fail(errc::invalid_argument, "source file missing");
  });
  ASSERT_FALSE(failed);
  EXPECT_NE(failed.error().message.find("source file missing"), std::string::npos);
  EXPECT_FALSE(w.read().contains("kv", "x").value());
  EXPECT_EQ(w.read().size("kv").value(), 50u);

  auto n3 = *w.read().get_view("kv", "n3").value();
  ASSERT_TRUE(w.clear("kv"));
  EXPECT_EQ(w.read().size("kv").value(), 0u);
  EXPECT_EQ(n3.value(), Value("new"));
  EXPECT_EQ(v.value(), Value("old"));
  w.reclaim();
  const auto held_bytes = w.stats().bytes_retired;
  EXPECT_GT(held_bytes, 0u);
  EXPECT_LT(held_bytes, 1024u);  // two small held blocks
  ASSERT_TRUE(w.put("kv", "after", 1));
  EXPECT_EQ(w.read().get("kv", "after").value(), std::optional<Value>(1));
}

TEST(Store, FullRegistryIsAnErrorAndDetachedSlotsAreReused) {
  auto o = test_options("registry");
  o.max_readers = 2;  // the writer's own reader takes one
  auto w = make_writer(o);
  {
    auto r = reader::attach(o.ns, o.name);
    ASSERT_TRUE(r);
    auto full = reader::attach(o.ns, o.name);
    ASSERT_FALSE(full);
    EXPECT_EQ(full.error().code, errc::limit_exceeded);
    EXPECT_NE(full.error().message.find("2 readers"), std::string::npos);
  }
  EXPECT_EQ(w.stats().readers, 1u);
  EXPECT_TRUE(reader::attach(o.ns, o.name));
}

TEST(Store, ReloadOfABagAppendsPerKey) {
  auto w = make_writer(test_options("bagreload"));
  ASSERT_TRUE(w.put("log", "old", 0));
  ASSERT_TRUE(w.reload("log", [](loader& l) -> result<void> {
    for (int i = 0; i < 3; ++i) {
      if (auto r = l.put("k", i); !r) return r;
    }
    return l.put("j", "x");
  }));
  EXPECT_EQ(w.read().get_all("log", "k").value(), (std::vector<Value>{0, 1, 2}));
  EXPECT_FALSE(w.read().contains("log", "old").value());
  EXPECT_EQ(w.read().size("log").value(), 4u);
}

TEST(Store, OpenStoreRunsLoad) {
  store_definition def;
  def.options = test_options("def");
  def.tables = {{"cfg", table_kind::set, 8}};
  def.load = [](writer& w) -> result<void> {
    if (auto r = w.put("cfg", "mode", "fast"); !r) return r.error();
    return {};
  };
  auto w = open_store(def);
  ASSERT_TRUE(w) << w.error().message;
  EXPECT_EQ(w->read().get("cfg", "mode").value(), std::optional<Value>("fast"));
  def.options = test_options("def2");
  def.load = [](writer&) -> result<void> { return fail(errc::not_found, "no seed data"); };
  auto bad = open_store(def);
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("no seed data"), std::string::npos);
  EXPECT_EQ(reader::attach(def.options.ns, def.options.name).error().code, errc::not_found);
}

}  // namespace
}  // namespace slither::shm
