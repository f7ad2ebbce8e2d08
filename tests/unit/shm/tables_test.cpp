// Tables created and dropped while a store lives, batches published at once,
// reads of many keys in one epoch, and the removal of a dead writer's store.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "shm_test_util.hpp"
#include "slither/shm/store.hpp"

namespace slither::shm {
namespace {

using testing::numbered;
using testing::test_options;

const std::vector<table_spec> kDeclared = {{"kv", table_kind::set, 16}};

writer make_writer(const store_options& o) {
  auto w = writer::create(o, kDeclared);
  if (!w) throw slither::error(w.error());
  return std::move(*w);
}

bool shm_exists(const std::string& name) {
  return ::access(("/dev/shm" + name).c_str(), F_OK) == 0;
}

TEST(Tables, ACreatedTableIsFoundByAReaderAttachedBefore) {
  const auto o = test_options("create");
  writer w = make_writer(o);
  auto r = reader::attach(o.ns, o.name);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->get("fresh", "k").error().code, errc::not_found);

  ASSERT_TRUE(w.create_table({"fresh", table_kind::bag, 8}));
  ASSERT_TRUE(w.put("fresh", "k", 1));
  ASSERT_TRUE(w.put("fresh", "k", 2));
  EXPECT_EQ(r->tables(), (std::vector<std::string>{"kv", "fresh"}));
  EXPECT_EQ(r->get_all("fresh", "k").value(), (std::vector<Value>{1, 2}));
  EXPECT_EQ(r->size("fresh").value(), 2u);  // a bag counts values

  EXPECT_EQ(w.create_table({"fresh", table_kind::set, 8}).error().code, errc::already_exists);
  EXPECT_EQ(w.create_table({"kv", table_kind::set, 8}).error().code, errc::already_exists);
  EXPECT_EQ(w.create_table({"", table_kind::set, 8}).error().code, errc::invalid_argument);
  EXPECT_EQ(w.create_table({"bad", static_cast<table_kind>(9), 8}).error().code,
            errc::invalid_argument);
}

TEST(Tables, ADroppedTableIsGoneForReadersAndItsNameCanComeBack) {
  const auto o = test_options("drop");
  writer w = make_writer(o);
  auto r = reader::attach(o.ns, o.name);
  ASSERT_TRUE(r);
  ASSERT_TRUE(w.create_table({"tmp", table_kind::set, 8}));
  ASSERT_TRUE(w.put("tmp", "k", "old"));
  auto kept = r->get_view("tmp", "k");
  ASSERT_TRUE(kept && *kept);

  ASSERT_TRUE(w.drop_table("tmp"));
  EXPECT_EQ(r->get("tmp", "k").error().code, errc::not_found);
  EXPECT_EQ(r->tables(), (std::vector<std::string>{"kv"}));
  EXPECT_EQ(w.put("tmp", "k", 1).error().code, errc::not_found);
  EXPECT_EQ(w.drop_table("tmp").error().code, errc::not_found);
  // A view taken before the drop still reads its value.
  EXPECT_EQ((*kept)->value(), Value("old"));

  ASSERT_TRUE(w.create_table({"tmp", table_kind::set, 8}));
  EXPECT_FALSE(r->get("tmp", "k").value().has_value());  // the new table, not the old one
  ASSERT_TRUE(w.put("tmp", "k", "new"));
  EXPECT_EQ(r->get("tmp", "k").value(), std::optional<Value>("new"));
  EXPECT_EQ(w.stats().entries, 1u);
  w.reclaim();
}

// A scan finds its tree through the table's directory entry, not its hash
// index: a dropped ordered table must still be unknown to it, empty or not.
TEST(Tables, ADroppedOrderedTableIsGoneForScans) {
  const auto o = test_options("dropord");
  writer w = make_writer(o);
  auto r = reader::attach(o.ns, o.name);
  ASSERT_TRUE(r);
  ASSERT_TRUE(w.create_table({"full", table_kind::ordered_set, 8}));
  ASSERT_TRUE(w.create_table({"empty", table_kind::ordered_set, 8}));
  ASSERT_TRUE(w.put("full", "a", 1));
  ASSERT_TRUE(w.put("full", "b", 2));
  ASSERT_EQ(r->range("full", {}, {}).value().size(), 2u);  // the reader knows both tables
  ASSERT_TRUE(r->range("empty", {}, {}).value().empty());

  ASSERT_TRUE(w.drop_table("full"));
  ASSERT_TRUE(w.drop_table("empty"));
  EXPECT_EQ(r->range("full", {}, {}).error().code, errc::not_found);
  EXPECT_EQ(r->range("empty", {}, {}).error().code, errc::not_found);
  EXPECT_EQ(r->keys("full").error().code, errc::not_found);

  ASSERT_TRUE(w.create_table({"full", table_kind::ordered_set, 8}));
  EXPECT_TRUE(r->range("full", {}, {}).value().empty());  // the new table, not the old one
  ASSERT_TRUE(w.put("full", "c", 3));
  const auto now = r->range("full", {}, {}).value();
  ASSERT_EQ(now.size(), 1u);
  EXPECT_EQ(now[0].first, "c");
  w.reclaim();
}

TEST(Tables, ADeclaredTableCannotBeDropped) {
  writer w = make_writer(test_options("declared"));
  ASSERT_TRUE(w.put("kv", "k", 1));
  const auto e = w.drop_table("kv");
  ASSERT_FALSE(e);
  EXPECT_EQ(e.error().code, errc::invalid_argument);
  EXPECT_NE(e.error().message.find("declared"), std::string::npos) << e.error().message;
  EXPECT_EQ(w.read().get("kv", "k").value(), std::optional<Value>(1));
}

TEST(Tables, TheDirectoryHoldsSixtyFourTablesOverTheStoresLife) {
  writer w = make_writer(test_options("full"));
  for (int i = 1; i < 64; ++i) {
    ASSERT_TRUE(w.create_table({numbered("t", i), table_kind::set, 4})) << i;
    if (i % 2 == 0) {
      ASSERT_TRUE(w.drop_table(numbered("t", i)));
    }
  }
  const auto e = w.create_table({"one_more", table_kind::set, 4});
  ASSERT_FALSE(e);
  EXPECT_EQ(e.error().code, errc::limit_exceeded);
  EXPECT_EQ(w.read().tables().size(), 1u + 32u);
}

TEST(Tables, GetManyReadsEveryKeyInOneCall) {
  writer w = make_writer(test_options("getmany"));
  ASSERT_TRUE(w.put("kv", "a", 1));
  ASSERT_TRUE(w.put("kv", "b", "two"));
  const std::vector<std::string_view> keys = {"b", "missing", "a"};
  auto got = w.read().get_many("kv", keys);
  ASSERT_TRUE(got) << got.error().message;
  ASSERT_EQ(got->size(), 3u);
  EXPECT_EQ((*got)[0], std::optional<Value>("two"));
  EXPECT_FALSE((*got)[1].has_value());
  EXPECT_EQ((*got)[2], std::optional<Value>(1));
  EXPECT_EQ(w.read().get_many("nope", keys).error().code, errc::not_found);
}

std::vector<std::pair<std::string, Value>> batch(int n, std::int64_t value) {
  std::vector<std::pair<std::string, Value>> out;
  for (int i = 0; i < n; ++i) out.emplace_back(numbered("k", i), Value(value));
  return out;
}

TEST(Tables, AnAtomicPutManyIsSeenWholeOrNotAtAll) {
  const auto o = test_options("atomic");
  writer w = make_writer(o);
  constexpr int keys = 64;
  const int rounds = static_cast<int>(testing::scaled(300, 40));
  ASSERT_TRUE(w.put_many("kv", batch(keys, 0), batch_publish::at_once));
  std::vector<std::string> names;
  for (int i = 0; i < keys; ++i) names.push_back(numbered("k", i));
  const std::vector<std::string_view> views(names.begin(), names.end());

  std::atomic<bool> done{false};
  std::atomic<int> mixed{0}, reads{0};
  std::thread reader_thread([&] {
    auto r = reader::attach(o.ns, o.name);
    while (r && !done.load()) {
      auto got = r->get_many("kv", views);
      if (!got) {
        ADD_FAILURE() << got.error().message;
        break;
      }
      for (const auto& v : *got) {
        if (!v || *v != (*got)[0]) ++mixed;
      }
      ++reads;
    }
    if (!r) ADD_FAILURE() << r.error().message;
    reads = 1 << 30;  // whatever happened, the writer's wait below ends
  });
  for (int round = 1; round <= rounds; ++round) {
    ASSERT_TRUE(w.put_many("kv", batch(keys, round), batch_publish::at_once));
  }
  // Some reads after the writes too, however the two threads were scheduled.
  const int before = reads.load();
  while (reads.load() < before + 10) std::this_thread::yield();
  done = true;
  reader_thread.join();
  EXPECT_EQ(mixed.load(), 0);
  EXPECT_EQ(w.read().get("kv", "k0").value(), std::optional<Value>(rounds));
  EXPECT_EQ(w.stats().entries, static_cast<std::uint64_t>(keys));
}

TEST(Tables, AnAtomicPutManyThatFailsStoresNothing) {
  auto o = test_options("atomicfail");
  writer w = make_writer(o);
  ASSERT_TRUE(w.put("kv", "a", 1));
  std::vector<std::pair<std::string, Value>> entries = {{"a", 2}, {std::string(300, 'x'), 3}};
  const auto e = w.put_many("kv", entries, batch_publish::at_once);
  ASSERT_FALSE(e);
  EXPECT_EQ(e.error().code, errc::limit_exceeded);
  EXPECT_EQ(w.read().get("kv", "a").value(), std::optional<Value>(1));
  EXPECT_EQ(w.stats().entries, 1u);
}

TEST(Tables, AnAtomicPutManyIntoABagAppends) {
  const auto o = test_options("atomicbag");
  writer w = make_writer(o);
  ASSERT_TRUE(w.create_table({"log", table_kind::bag, 4}));
  ASSERT_TRUE(w.put("log", "k", 1));
  std::vector<std::pair<std::string, Value>> entries = {{"k", 2}, {"j", 3}, {"k", 4}};
  ASSERT_TRUE(w.put_many("log", entries, batch_publish::at_once));
  EXPECT_EQ(w.read().get_all("log", "k").value(), (std::vector<Value>{1, 2, 4}));
  EXPECT_EQ(w.read().size("log").value(), 4u);
}

TEST(Tables, RemoveDeadStoreKeepsALiveOneAndRemovesADeadOnesObjects) {
  const auto o = test_options("deadstore");
  {
    writer alive = make_writer(o);
    auto kept = remove_dead_store(o.ns, o.name);
    ASSERT_TRUE(kept) << kept.error().message;
    EXPECT_FALSE(*kept);
    EXPECT_TRUE(shm_exists(segment_name(o.ns, o.name, 0)));
  }
  // A writer that dies without closing: a child that exits at once.
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto w = writer::create(o, kDeclared);
    ::_exit(w ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  ASSERT_TRUE(shm_exists(segment_name(o.ns, o.name, 0)));
  auto removed = remove_dead_store(o.ns, o.name);
  ASSERT_TRUE(removed) << removed.error().message;
  EXPECT_TRUE(*removed);
  EXPECT_FALSE(shm_exists(segment_name(o.ns, o.name, 0)));
  EXPECT_FALSE(shm_exists(registry_name(o.ns, o.name)));
  EXPECT_FALSE(shm_exists(lock_name(o.ns, o.name)));
  EXPECT_EQ(remove_dead_store("bad.ns", "x").error().code, errc::invalid_argument);
}

}  // namespace
}  // namespace slither::shm
