// A client of a broker's control socket: store writes, view calls, attach
// info, stats. Reads do not go through here: attach a `shm::reader` with the
// names `attach_info` returns and read shared memory directly.
//
// Caveats
// - A `client` owns a ZeroMQ socket and is not thread-safe: use one per
//   thread. The clients of a process share one ZeroMQ context (its I/O
//   thread), made by the first and ended with the last.
// - fork(): a child may go on using a client it inherited, provided no other
//   thread was using it at the fork. On its first call in the child it leaves
//   the parent's socket and context alone (never closing them, which would
//   disturb the parent) and connects anew.
// - Before connecting to an `ipc://` endpoint, the client checks that the
//   socket file, its directory and every ancestor belong to this user or root
//   (see `client::connect`): a socket another local user planted at the
//   expected path is refused, never talked to.
// - A request that gets no reply within `client_options::timeout` fails with
//   `errc::timeout` if the broker still answers a ping within a second (or the
//   timeout, if shorter): it is alive but slow; else with `errc::unavailable`. Either way the
//   client then reopens its socket, so a late answer is never taken for the answer to a later
//   request. Whether the broker applied a write that timed out, or one
//   interrupted by `client_options::interrupt`, is unknown (it may have): read
//   the entry's version to find out.
// - A reply larger than `client_options::max_reply_bytes` makes ZeroMQ drop
//   the connection before it is buffered; the call then fails as above. The
//   limit is fixed when the client connects, not learnt from the broker:
//   raising it would mean reconnecting, and a broker at `max_clients` may
//   refuse the new connection before it sees the old one go.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "slither/broker/export.hpp"
#include "slither/core/codec.hpp"
#include "slither/core/error.hpp"
#include "slither/core/value.hpp"

namespace slither {

/// Where to find a broker. Give either `endpoint` or `runtime_dir` (control socket at
/// ipc://<runtime_dir>/control); if both are empty, default_runtime_dir(ns) is used.
struct SLITHER_BROKER_EXPORT client_options {
  /// A ZeroMQ endpoint ("ipc:///run/user/1000/slither/default/control", "tcp://host:port").
  std::string endpoint;
  /// The broker's runtime directory; used when `endpoint` is empty.
  std::filesystem::path runtime_dir;
  /// The broker's namespace; names the default runtime directory. 1-64
  /// characters of [A-Za-z0-9_-] (see `valid_namespace`).
  std::string ns = "default";
  /// Longest wait for one reply, more than zero and at most `max_timeout`;
  /// past it a request fails with `errc::timeout` or `errc::unavailable`.
  std::chrono::milliseconds timeout{5000};
  /// For a tcp endpoint: the broker's CURVE public key (Z85, 40 characters,
  /// its `<name>.pub`). Setting it turns CURVE on.
  std::string curve_server_key;
  /// This client's CURVE secret key (Z85; its `<name>.key`), whose public key
  /// must be on the broker's allow-list.
  std::string curve_secret_key;
  /// This client's CURVE public key; derived from the secret key if empty.
  std::string curve_public_key;
  /// Called on the calling thread at least every `interrupt_interval` while a
  /// call waits for the broker. An error it returns ends the call at once with
  /// that error (the request may already have reached the broker and been
  /// applied). The Python client checks for Ctrl-C here.
  std::function<result<void>()> interrupt;
  /// How often `interrupt` is called while waiting.
  std::chrono::milliseconds interrupt_interval{50};
  /// The largest reply accepted, in bytes (more than 0). The default takes any
  /// reply of a broker with the default `max_message_bytes` (1 GiB) and its
  /// framing; a client of a broker configured for larger messages needs more.
  std::int64_t max_reply_bytes = default_max_reply_bytes;

  /// 1 GiB (the default `max_message_bytes`) and 64 KiB for framing.
  static constexpr std::int64_t default_max_reply_bytes =
      (std::int64_t{1} << 30) + (std::int64_t{64} << 10);

  /// The longest `timeout` accepted: one year ("wait as long as it takes").
  static constexpr std::chrono::milliseconds max_timeout{std::chrono::hours(24 * 365)};
};

/// What a reader needs to attach to a store's shared memory.
struct SLITHER_BROKER_EXPORT store_info {
  /// Namespace of the store's segments.
  std::string ns;
  /// Store name.
  std::string name;
  /// The store's tables.
  std::vector<std::string> tables;
  /// Shared-memory layout version of the broker's build; a reader of another
  /// version cannot attach.
  std::uint32_t layout_version = 0;
  /// The store's incarnation (`shm::reader::incarnation()` of a reader of it):
  /// a store re-created by a restarted broker has another. 0 if the broker did
  /// not say (a broker of an older build).
  std::uint64_t incarnation = 0;
};

/// A block a broker reserved for a large write in place (`client::reserve_put`).
struct SLITHER_BROKER_EXPORT put_reservation {
  std::uint64_t id = 0;                ///< names it to `commit_put` / `abort_put`
  std::string object;                  ///< the shared-memory object ("/slither.<ns>.<store>.<n>")
  std::uint64_t offset = 0;            ///< where the value's bytes go in it (page-aligned)
  std::uint64_t bytes = 0;             ///< the value's size
  std::uint64_t map_bytes = 0;         ///< bytes to map from `offset`
  std::chrono::milliseconds lease{0};  ///< how long the broker keeps it uncommitted
  /// The broker left the pages unreserved (false: they are backed already,
  /// reserved or left by a freed value): the caller backs them with memory
  /// (`madvise(MADV_POPULATE_WRITE)` on its mapping, which fails cleanly
  /// where /dev/shm is full) before it writes them; a plain store into an
  /// unbacked page of a full /dev/shm raises SIGBUS.
  bool client_backs = false;
};

/// A connection to a broker's control socket (ZeroMQ DEALER). Not thread-safe: one per thread.
/// Every call returns the broker's error unchanged (code and message), or
/// `errc::timeout` / `errc::unavailable` when the broker does not answer in time.
///
/// Requests that act on a store (`put`, `put_many`, `erase`, `compare_and_set`,
/// `compare_and_erase`, `clear`, `reload`, `create_table`, `drop_table`, `call_view`) carry the
/// incarnation of that store this client last learnt (from `attach_info` or `set_incarnation`); a
/// broker whose store has another incarnation (it was re-created by a restarted broker) refuses
/// them with `errc::writer_gone` and applies nothing. A client that never asked about a store sends
/// no incarnation for it.
class SLITHER_BROKER_EXPORT client {
 public:
  /// Checks `options`, then connects and sends `hello`.
  ///
  /// For an `ipc://` endpoint, before connecting: the socket file must be a
  /// socket owned by this user (euid); a runtime directory (the one given, or
  /// the default one of `ns`) must be a directory of this user with no group
  /// or other access; every ancestor must be a real directory (no symlink)
  /// owned by root or this user and writable by no one else unless sticky
  /// (like /tmp): the rules the broker applies to its own runtime directory.
  ///
  /// Errors: `invalid_argument` (a bad namespace or timeout; an untrusted path,
  /// naming it and what is wrong), `unavailable` (no socket file, or no broker
  /// answers), `timeout` (a broker answers pings but not `hello`),
  /// `protocol_error` (another protocol version), `io_error`.
  static result<client> connect(const client_options& options);

  /// Takes over the connection; `other` is left without one.
  client(client&& other) noexcept;
  /// Closes this connection and takes over `other`'s.
  client& operator=(client&& other) noexcept;
  /// Closes the socket; pending requests are abandoned.
  ~client();

  /// Namespace, tables, layout version and incarnation of `store`; remembers
  /// the incarnation for this store's later requests. Errors: `not_found`.
  result<store_info> attach_info(std::string_view store);
  /// Makes this store's later requests carry `incarnation` (pass a reader's
  /// `incarnation()`, so that writes reach only the store that reader sees).
  void set_incarnation(std::string_view store, std::uint64_t incarnation);
  /// Stores `value` under `key`; returns the entry's new version once readers see it.
  result<std::uint64_t> put(std::string_view store, std::string_view table, std::string_view key,
                            const Value& value);
  /// Stores many entries, all or nothing, in one round trip. Readers may see
  /// part of the batch until the reply comes, unless `atomic`: then they see
  /// none or all of it (`invalid_argument` naming the kind for a table kind
  /// that cannot publish a batch at once).
  result<void> put_many(std::string_view store, std::string_view table,
                        std::span<const std::pair<std::string, Value>> entries,
                        bool atomic = false);
  /// Replaces every entry of `table` with `entries`, atomically: readers see
  /// the old or the new contents, never a mix. If an entry fails, the old
  /// contents stay.
  result<void> reload(std::string_view store, std::string_view table,
                      std::span<const std::pair<std::string, Value>> entries);
  /// Adds the table `table` (kind "set", "bag" or "ordered_set", room for
  /// `capacity` keys, 1..2^32) to `store` at run time; readers attached
  /// before find it on their next read. Answers at once whatever the
  /// capacity: a large index is made ready later, in slices between other
  /// writes (shm::table_spec::initial_capacity). Errors: `already_exists`,
  /// `invalid_argument` (capacity out of range, bad name or kind),
  /// `limit_exceeded` (64 tables per store over its life: a dropped table's
  /// slot is not reused), `no_space` (/dev/shm has no room for its index).
  result<void> create_table(std::string_view store, std::string_view table,
                            std::string_view kind = "set", std::uint64_t capacity = 1024);
  /// Removes a table created at run time, with its entries. A table declared
  /// in the broker's config cannot be dropped (`invalid_argument`).
  result<void> drop_table(std::string_view store, std::string_view table);
  /// Removes `key`; returns whether it was present.
  result<bool> erase(std::string_view store, std::string_view table, std::string_view key);
  /// Writes `value` only if the entry's version is `expected_version` (0 = absent);
  /// returns the new version. Errors: `conflict` naming the version found.
  result<std::uint64_t> compare_and_set(std::string_view store, std::string_view table,
                                        std::string_view key, std::uint64_t expected_version,
                                        const Value& value);
  /// Removes `key` only if the entry's version is `expected_version` (0 =
  /// absent: nothing is removed); returns whether an entry was removed. With
  /// the version read alongside a value (`shm::view::version`), removes
  /// exactly what was read: an atomic pop. Errors: `conflict` naming the
  /// version found, `invalid_argument` for a bag table.
  result<bool> compare_and_erase(std::string_view store, std::string_view table,
                                 std::string_view key, std::uint64_t expected_version);
  /// Removes every entry of `table`.
  result<void> clear(std::string_view store, std::string_view table);
  /// Calls the view `view` registered on `store` with `arg`. Session-scoped
  /// views need a non-empty `session_id`. Errors: `not_found`, `timeout`, or
  /// whatever the view returned.
  result<Value> call_view(std::string_view store, std::string_view view, const Value& arg,
                          std::string_view session_id = {});
  /// `put` with `value` given as its encoding (a complete `slither::encode`
  /// form, from the Python extension for example): checked and spliced into
  /// the request, never decoded into a `Value` here. Errors as `put`, and
  /// `decode_error` for an encoding that is not valid.
  result<std::uint64_t> put_encoded(std::string_view store, std::string_view table,
                                    std::string_view key, std::span<const std::byte> value);
  /// `put_many` with `entries` given as the encoding of a list of
  /// `[key, value]` lists.
  result<void> put_many_encoded(std::string_view store, std::string_view table,
                                std::span<const std::byte> entries, bool atomic = false);
  /// `reload` with `entries` given as the encoding of a list of `[key, value]` lists.
  result<void> reload_encoded(std::string_view store, std::string_view table,
                              std::span<const std::byte> entries);
  /// `compare_and_set` with `value` given as its encoding.
  result<std::uint64_t> compare_and_set_encoded(std::string_view store, std::string_view table,
                                                std::string_view key,
                                                std::uint64_t expected_version,
                                                std::span<const std::byte> value);
  /// `call_view` with `arg` given as its encoding; returns the encoding of
  /// the view's result, undecoded (the caller decodes it, in its own objects).
  result<buffer> call_view_encoded(std::string_view store, std::string_view view,
                                   std::span<const std::byte> arg,
                                   std::string_view session_id = {});
  /// Reserves a block on `store` for an ndarray of `type` and `shape` under
  /// `key` (a large write in place, `protocol::message_type::put_reserve`):
  /// the caller maps `map_bytes` of the shared-memory object `object` at
  /// `offset` read-write, writes the array's bytes, unmaps, and calls
  /// `commit_put` within `lease`. Readers see nothing before the commit.
  /// With `client_backs` the caller offers to back the pages itself (see
  /// `put_reservation::client_backs`, which says whether the broker took the
  /// offer): reserving them costs the broker ~0.4 ms of kernel CPU per MiB,
  /// which then lands on the process that fills them instead. Errors as `put`.
  result<put_reservation> reserve_put(std::string_view store, std::string_view table,
                                      std::string_view key, dtype type,
                                      std::span<const std::uint64_t> shape,
                                      bool client_backs = false);
  /// `reserve_put` for a bytes value of `bytes` bytes: the block holds the
  /// value encoded exactly as `put` of the same bytes stores it, so readers
  /// see the same value either way; the caller writes the bytes themselves.
  result<put_reservation> reserve_put_bytes(std::string_view store, std::string_view table,
                                            std::string_view key, std::uint64_t bytes,
                                            bool client_backs = false);
  /// Publishes a reservation of this client; returns the entry's new version.
  /// Errors: `not_found` (not this client's, already finished, or its lease ended).
  result<std::uint64_t> commit_put(std::string_view store, std::uint64_t id);
  /// Gives a reservation of this client up. Errors: `not_found`.
  result<void> abort_put(std::string_view store, std::uint64_t id);
  /// `put` of an ndarray through shared memory, without sending its bytes:
  /// reserve, copy into the block (mapped after checking that the object
  /// is this user's and writable by no one else), commit. A failure after
  /// the reservation gives it up. Worth it for arrays of a few MiB and up.
  /// Where the kernel has MADV_POPULATE_WRITE (Linux 5.14), this process
  /// backs the block's pages as it fills them (`client_backs`): the broker's
  /// threads then do no page allocation for it, and a full /dev/shm is
  /// `no_space`, never a SIGBUS.
  result<std::uint64_t> put_in_place(std::string_view store, std::string_view table,
                                     std::string_view key, const ndarray& array);
  /// `put` of a bytes value (`Value(Bytes{...})`) through shared memory, as
  /// `put_in_place` does for an array; readers see what `put` would store.
  result<std::uint64_t> put_bytes_in_place(std::string_view store, std::string_view table,
                                           std::string_view key, std::span<const std::byte> bytes);
  /// Broker and store figures (queue depth, entries, bytes...) as a map.
  result<Value> stats();
  /// A round trip that touches nothing.
  result<void> ping();
  /// The namespace the broker serves (from its `hello` reply).
  const std::string& ns() const noexcept;

  struct impl;  ///< implementation detail

 private:
  explicit client(std::unique_ptr<impl> p) noexcept;
  // Copies `data` into the reserved block and commits it; gives it up on failure.
  result<std::uint64_t> fill_and_commit(std::string_view store, const put_reservation& r,
                                        std::span<const std::byte> data);
  std::unique_ptr<impl> p_;
};

/// $XDG_RUNTIME_DIR/slither/<ns> if XDG_RUNTIME_DIR is set, else /tmp/slither-<uid>/<ns>.
/// `ns` should be valid (`valid_namespace`); the path is built as given.
SLITHER_BROKER_EXPORT std::filesystem::path default_runtime_dir(std::string_view ns);

/// True if `ns` is a valid namespace: 1-64 characters of [A-Za-z0-9_-]. It
/// names a directory, so nothing else (no "/", no "..") is accepted.
SLITHER_BROKER_EXPORT bool valid_namespace(std::string_view ns) noexcept;

}  // namespace slither
