// slither.toml: broker settings, stores and their load sources.
#include <spdlog/spdlog.h>
#include <toml++/toml.h>
#include <charconv>
#include <fstream>
#include <optional>
#include <set>

#include "slither/broker/broker.hpp"

namespace slither {
namespace {

namespace fs = std::filesystem;

/// Rows per put_many while loading a file.
constexpr std::size_t load_chunk = 1024;

enum class file_format { jsonl, csv };

// One `load = {...}` entry: the rows of `file` become entries of `table`.
struct load_source {
  fs::path file;
  file_format format = file_format::jsonl;
  std::string table;
  std::string key;
};

// Reads a parsed document, naming file, line and field in every error.
class config_reader {
 public:
  explicit config_reader(fs::path file) : file_(std::move(file)) {}

  error_info error(const toml::source_region& where, std::string_view field,
                   std::string_view what) const {
    return fail(errc::invalid_argument, file_.string() + ":" + std::to_string(where.begin.line) +
                                            ": field '" + std::string(field) +
                                            "': " + std::string(what));
  }

  // Unknown keys are errors, so a misspelt key does not silently fall back to a default.
  result<void> only_keys(const toml::table& t, std::string_view prefix,
                         std::initializer_list<std::string_view> known) const {
    for (const auto& [k, node] : t) {
      if (std::find(known.begin(), known.end(), k.str()) == known.end()) {
        return error(node.source(), join(prefix, k.str()), "unknown key");
      }
    }
    return {};
  }

  static std::string join(std::string_view prefix, std::string_view key) {
    return prefix.empty() ? std::string(key) : std::string(prefix) + "." + std::string(key);
  }

  result<std::optional<std::string>> text(const toml::table& t, std::string_view prefix,
                                          std::string_view key) const {
    const toml::node* n = t.get(key);
    if (n == nullptr) return std::optional<std::string>{};
    if (!n->is_string()) return error(n->source(), join(prefix, key), "must be a string");
    return std::optional<std::string>(n->as_string()->get());
  }

  // An integer from `least` to `most`; past `most` is an error naming the
  // bound, never a value that wraps or overflows later.
  result<std::optional<std::int64_t>> integer(const toml::table& t, std::string_view prefix,
                                              std::string_view key, std::int64_t least,
                                              std::int64_t most, std::string_view unit) const {
    const toml::node* n = t.get(key);
    if (n == nullptr) return std::optional<std::int64_t>{};
    if (!n->is_integer()) return error(n->source(), join(prefix, key), "must be an integer");
    const auto v = n->as_integer()->get();
    if (v < least) {
      return error(n->source(), join(prefix, key),
                   std::to_string(v) + " is below the least value, " + std::to_string(least));
    }
    if (v > most) {
      return error(n->source(), join(prefix, key),
                   std::to_string(v) + " is past the largest value, " + std::to_string(most) +
                       (unit.empty() ? "" : " " + std::string(unit)));
    }
    return std::optional<std::int64_t>(v);
  }

  // A count or size in bytes: 1 (or `least`) to max_option_bytes.
  result<std::optional<std::int64_t>> size(const toml::table& t, std::string_view prefix,
                                           std::string_view key, std::int64_t least = 1) const {
    return integer(t, prefix, key, least, static_cast<std::int64_t>(max_option_bytes), "");
  }

  // A duration in milliseconds: `least` to max_option_duration.
  result<std::optional<std::chrono::milliseconds>> millis(const toml::table& t,
                                                          std::string_view prefix,
                                                          std::string_view key,
                                                          std::int64_t least) const {
    auto v = integer(t, prefix, key, least, max_option_duration.count(), "ms (about 31 years)");
    if (!v) return std::move(v).error();
    if (!*v) return std::optional<std::chrono::milliseconds>{};
    return std::optional(std::chrono::milliseconds(**v));
  }

  // A path relative to the config file's directory.
  fs::path relative_to_config(const std::string& p) const {
    const fs::path path(p);
    return path.is_absolute() ? path : file_.parent_path() / path;
  }

  const fs::path& file() const noexcept { return file_; }

 private:
  fs::path file_;
};

// ---- load sources ------------------------------------------------------------

error_info row_error(const load_source& src, std::size_t line, const std::string& what) {
  return fail(errc::invalid_argument, src.file.string() + ":" + std::to_string(line) + ": " + what);
}

// The entry key of a row: its `key` field as a string.
result<std::string> row_key(const load_source& src, std::size_t line, const Value& row) {
  const Value* k = row.find(src.key);
  if (k == nullptr) return row_error(src, line, "row has no key field '" + src.key + "'");
  if (k->is_string()) return k->as<std::string>();
  if (k->is_int() || k->is_float()) return k->to_string();
  return row_error(src, line,
                   "key field '" + src.key + "' is a " + std::string(to_string(k->type())) +
                       ", not a string or number");
}

// Collects rows and writes them in chunks, so a large file is never held whole.
class row_sink {
 public:
  row_sink(const load_source& src, shm::writer& w) : src_(src), w_(w) {}

  result<void> add(std::size_t line, Value row) {
    auto key = row_key(src_, line, row);
    if (!key) return std::move(key).error();
    pending_.emplace_back(std::move(*key), std::move(row));
    if (pending_.size() >= load_chunk) return flush();
    return {};
  }

  result<void> flush() {
    if (pending_.empty()) return {};
    auto r = w_.put_many(src_.table, pending_);
    pending_.clear();
    if (!r) {
      auto err = std::move(r).error();
      err.message =
          src_.file.string() + ": loading into table '" + src_.table + "': " + err.message;
      return err;
    }
    return {};
  }

 private:
  const load_source& src_;
  shm::writer& w_;
  std::vector<std::pair<std::string, Value>> pending_;
};

result<void> load_jsonl(const load_source& src, std::istream& in, row_sink& sink) {
  std::string text;
  for (std::size_t line = 1; std::getline(in, text); ++line) {
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto row = Value::from_json(text);
    if (!row) return row_error(src, line, row.error().message);
    if (!row->is_map()) {
      return row_error(
          src, line,
          "row is a JSON " + std::string(to_string(row->type())) + ", expected an object");
    }
    if (auto r = sink.add(line, std::move(*row)); !r) return r;
  }
  return {};
}

// An unquoted CSV field: int64 or float64 if it parses whole, else text.
Value csv_value(const std::string& field) {
  const char* first = field.data();
  const char* last = first + field.size();
  std::int64_t i = 0;
  if (auto [p, ec] = std::from_chars(first, last, i);
      ec == std::errc{} && p == last && !field.empty()) {
    return Value(i);
  }
  double d = 0;
  if (auto [p, ec] = std::from_chars(first, last, d);
      ec == std::errc{} && p == last && !field.empty()) {
    return Value(d);
  }
  return Value(field);
}

// Reads one CSV record (RFC 4180: quoted fields may hold commas, newlines and
// doubled quotes). `line` advances past every newline consumed. Quoted fields
// stay text; unquoted ones become numbers when they parse.
result<std::optional<std::vector<Value>>> csv_record(const load_source& src, std::istream& in,
                                                     std::size_t& line) {
  std::vector<Value> fields;
  std::string field;
  bool quoted = false, in_quotes = false, any = false;
  const std::size_t start = line;
  auto finish_field = [&] {
    fields.push_back(quoted ? Value(field) : csv_value(field));
    field.clear();
    quoted = false;
  };
  for (int c; (c = in.get()) != EOF;) {
    any = true;
    if (in_quotes) {
      if (c == '"') {
        if (in.peek() == '"') {
          field += '"';
          in.get();
        } else {
          in_quotes = false;
        }
      } else {
        if (c == '\n') ++line;
        field += static_cast<char>(c);
      }
    } else if (c == '"' && field.empty() && !quoted) {
      quoted = in_quotes = true;
    } else if (c == ',') {
      finish_field();
    } else if (c == '\n') {
      ++line;
      if (!field.empty() && field.back() == '\r') field.pop_back();
      finish_field();
      return std::optional(std::move(fields));
    } else if (quoted) {
      return row_error(src, line,
                       "text after a closing quote in field " + std::to_string(fields.size() + 1));
    } else {
      field += static_cast<char>(c);
    }
  }
  if (in_quotes) return row_error(src, start, "quoted field is never closed");
  if (!any) return std::optional<std::vector<Value>>{};
  finish_field();
  return std::optional(std::move(fields));
}

result<void> load_csv(const load_source& src, std::istream& in, row_sink& sink) {
  std::size_t line = 1;
  auto header = csv_record(src, in, line);
  if (!header) return std::move(header).error();
  if (!*header) return row_error(src, 1, "empty file, expected a header row");
  std::vector<std::string> names;
  std::set<std::string> seen;
  for (const auto& v : **header) {
    names.push_back(v.is_string() ? v.as<std::string>() : v.to_string());
    // A repeated column would silently overwrite its twin in every row.
    if (!seen.insert(names.back()).second) {
      return row_error(src, 1, "column '" + names.back() + "' appears twice in the header row");
    }
  }
  for (;;) {
    const std::size_t row_line = line;
    auto rec = csv_record(src, in, line);
    if (!rec) return std::move(rec).error();
    if (!*rec) return {};
    auto& fields = **rec;
    if (fields.size() == 1 && fields[0].is_string() && fields[0].as<std::string>().empty()) {
      continue;  // a blank line
    }
    if (fields.size() != names.size()) {
      return row_error(src, row_line,
                       "row has " + std::to_string(fields.size()) + " fields, the header has " +
                           std::to_string(names.size()));
    }
    Map row;
    for (std::size_t i = 0; i < names.size(); ++i)
      row.insert_or_assign(names[i], std::move(fields[i]));
    if (auto r = sink.add(row_line, Value(std::move(row))); !r) return r;
  }
}

result<void> load_file(const load_source& src, shm::writer& w) {
  std::ifstream in(src.file, std::ios::binary);
  if (!in) return fail(errc::io_error, "cannot open load file '" + src.file.string() + "'");
  row_sink sink(src, w);
  auto r = src.format == file_format::jsonl ? load_jsonl(src, in, sink) : load_csv(src, in, sink);
  if (!r) return r;
  if (in.bad()) return fail(errc::io_error, "error reading '" + src.file.string() + "'");
  return sink.flush();
}

// ---- sections ------------------------------------------------------------------

result<load_source> read_load(const config_reader& cfg, const toml::table& t,
                              const std::string& prefix, const std::set<std::string>& tables) {
  if (auto r = cfg.only_keys(t, prefix, {"file", "table", "key"}); !r) return std::move(r).error();
  load_source src;
  auto file = cfg.text(t, prefix, "file");
  if (!file) return std::move(file).error();
  auto table = cfg.text(t, prefix, "table");
  if (!table) return std::move(table).error();
  auto key = cfg.text(t, prefix, "key");
  if (!key) return std::move(key).error();
  if (!*file || !*table || !*key) {
    return cfg.error(t.source(), prefix, "needs 'file', 'table' and 'key'");
  }
  src.file = cfg.relative_to_config(**file);
  const auto ext = src.file.extension().string();
  if (ext == ".jsonl" || ext == ".ndjson") {
    src.format = file_format::jsonl;
  } else if (ext == ".csv") {
    src.format = file_format::csv;
  } else {
    return cfg.error(t.get("file")->source(), prefix + ".file",
                     "'" + **file + "' is neither .jsonl/.ndjson nor .csv");
  }
  std::error_code ec;
  if (!fs::is_regular_file(src.file, ec)) {
    return cfg.error(t.get("file")->source(), prefix + ".file",
                     "'" + src.file.string() + "' is not a readable file");
  }
  if (!tables.contains(**table)) {
    return cfg.error(t.get("table")->source(), prefix + ".table",
                     "store has no table '" + **table + "'");
  }
  src.table = **table;
  src.key = **key;
  if (src.key.empty()) return cfg.error(t.get("key")->source(), prefix + ".key", "is empty");
  return src;
}

result<shm::table_spec> read_table(const config_reader& cfg, const toml::table& t,
                                   const std::string& prefix) {
  if (auto r = cfg.only_keys(t, prefix, {"name", "kind", "initial_capacity"}); !r) {
    return std::move(r).error();
  }
  shm::table_spec spec;
  auto name = cfg.text(t, prefix, "name");
  if (!name) return std::move(name).error();
  if (!*name) return cfg.error(t.source(), prefix + ".name", "is missing");
  spec.name = **name;
  auto kind = cfg.text(t, prefix, "kind");
  if (!kind) return std::move(kind).error();
  if (*kind) {
    const auto parsed = shm::parse_table_kind(**kind);
    if (!parsed) {
      return cfg.error(t.get("kind")->source(), prefix + ".kind",
                       "'" + **kind + "' is not a table kind (set, bag, ordered_set)");
    }
    spec.kind = *parsed;
  }
  auto capacity = cfg.size(t, prefix, "initial_capacity");
  if (!capacity) return std::move(capacity).error();
  if (*capacity) spec.initial_capacity = static_cast<std::uint64_t>(**capacity);
  return spec;
}

result<shm::store_definition> read_store(const config_reader& cfg, const toml::table& t,
                                         const std::string& prefix) {
  if (auto r = cfg.only_keys(t, prefix,
                             {"name", "initial_segment_bytes", "max_readers", "index_bytes_at_once",
                              "tables", "load"});
      !r) {
    return std::move(r).error();
  }
  shm::store_definition def;
  auto name = cfg.text(t, prefix, "name");
  if (!name) return std::move(name).error();
  if (!*name) return cfg.error(t.source(), prefix + ".name", "is missing");
  def.options.name = **name;
  auto segment = cfg.size(t, prefix, "initial_segment_bytes");
  if (!segment) return std::move(segment).error();
  if (*segment) def.options.initial_segment_bytes = static_cast<std::uint64_t>(**segment);
  auto readers = cfg.integer(t, prefix, "max_readers", 1, shm::max_readers_limit, "readers");
  if (!readers) return std::move(readers).error();
  if (*readers) def.options.max_readers = static_cast<std::uint32_t>(**readers);
  auto at_once = cfg.integer(t, prefix, "index_bytes_at_once",
                             static_cast<std::int64_t>(shm::min_index_bytes_at_once),
                             static_cast<std::int64_t>(shm::max_index_bytes_at_once), "bytes");
  if (!at_once) return std::move(at_once).error();
  if (*at_once) def.options.index_bytes_at_once = static_cast<std::uint64_t>(**at_once);

  const toml::array* tables = t.get_as<toml::array>("tables");
  if (tables == nullptr || tables->empty()) {
    return cfg.error(t.source(), prefix + ".tables",
                     "a store needs at least one [[stores.tables]]");
  }
  std::set<std::string> names;
  for (std::size_t i = 0; i < tables->size(); ++i) {
    const std::string p = prefix + ".tables[" + std::to_string(i) + "]";
    const toml::table* tt = (*tables)[i].as_table();
    if (tt == nullptr) return cfg.error((*tables)[i].source(), p, "must be a table");
    auto spec = read_table(cfg, *tt, p);
    if (!spec) return std::move(spec).error();
    if (!names.insert(spec->name).second) {
      return cfg.error(tt->source(), p + ".name", "table '" + spec->name + "' is declared twice");
    }
    def.tables.push_back(std::move(*spec));
  }

  std::vector<load_source> sources;
  if (const toml::node* load = t.get("load")) {
    const std::string p = prefix + ".load";
    if (const toml::table* one = load->as_table()) {
      auto src = read_load(cfg, *one, p, names);
      if (!src) return std::move(src).error();
      sources.push_back(std::move(*src));
    } else if (const toml::array* many = load->as_array()) {
      for (std::size_t i = 0; i < many->size(); ++i) {
        const std::string pi = p + "[" + std::to_string(i) + "]";
        const toml::table* lt = (*many)[i].as_table();
        if (lt == nullptr) return cfg.error((*many)[i].source(), pi, "must be an inline table");
        auto src = read_load(cfg, *lt, pi, names);
        if (!src) return std::move(src).error();
        sources.push_back(std::move(*src));
      }
    } else {
      return cfg.error(load->source(), p, "must be { file, table, key } or a list of them");
    }
  }
  if (!sources.empty()) {
    def.load = [sources = std::move(sources)](shm::writer& w) -> result<void> {
      for (const auto& src : sources) {
        if (auto r = load_file(src, w); !r) return r;
      }
      return {};
    };
  }
  return def;
}

result<void> read_broker(const config_reader& cfg, const toml::table& t, broker_options& out) {
  if (auto r = cfg.only_keys(
          t, "broker",
          {"namespace", "runtime_dir", "control_endpoint", "curve_secret_key_file",
           "curve_allowed_clients_file", "allow_remote", "metrics_endpoint", "max_clients",
           "write_queue_limit", "write_queue_bytes", "client_write_queue_bytes",
           "inline_write_bytes", "max_message_bytes", "max_decoded_bytes", "max_reply_bytes",
           "view_timeout_ms", "view_concurrency", "stop_grace_ms", "large_write_lease_ms"});
      !r) {
    return r;
  }
  auto text = [&](std::string_view key, auto&& set) -> result<void> {
    auto v = cfg.text(t, "broker", key);
    if (!v) return std::move(v).error();
    if (*v) set(**v);
    return {};
  };
  auto size = [&](std::string_view key, std::size_t& field,
                  std::int64_t least = 1) -> result<void> {
    auto v = cfg.size(t, "broker", key, least);
    if (!v) return std::move(v).error();
    if (*v) field = static_cast<std::size_t>(**v);
    return {};
  };
  auto millis = [&](std::string_view key, std::chrono::milliseconds& field,
                    std::int64_t least) -> result<void> {
    auto v = cfg.millis(t, "broker", key, least);
    if (!v) return std::move(v).error();
    if (*v) field = **v;
    return {};
  };
  for (auto r :
       {text("namespace", [&](const std::string& v) { out.ns = v; }),
        text("runtime_dir",
             [&](const std::string& v) { out.runtime_dir = cfg.relative_to_config(v); }),
        text("control_endpoint", [&](const std::string& v) { out.control_endpoint = v; }),
        text("metrics_endpoint", [&](const std::string& v) { out.metrics_endpoint = v; }),
        text("curve_secret_key_file",
             [&](const std::string& v) { out.curve_secret_key_file = cfg.relative_to_config(v); }),
        text("curve_allowed_clients_file",
             [&](const std::string& v) {
               out.curve_allowed_clients_file = cfg.relative_to_config(v);
             }),
        size("max_clients", out.max_clients), size("write_queue_limit", out.write_queue_limit),
        size("write_queue_bytes", out.write_queue_bytes),
        size("client_write_queue_bytes", out.client_write_queue_bytes),
        size("inline_write_bytes", out.inline_write_bytes, 0),
        size("max_message_bytes", out.limits.max_message_bytes),
        size("max_decoded_bytes", out.limits.max_decoded_bytes),
        size("max_reply_bytes", out.max_reply_bytes),
        size("view_concurrency", out.view_concurrency),
        millis("view_timeout_ms", out.view_timeout, 1), millis("stop_grace_ms", out.stop_grace, 0),
        millis("large_write_lease_ms", out.large_write_lease, 1)}) {
    if (!r) return r;
  }
  if (const toml::node* remote = t.get("allow_remote")) {
    if (!remote->is_boolean()) {
      return cfg.error(remote->source(), "broker.allow_remote", "must be true or false");
    }
    out.allow_remote = remote->as_boolean()->get();
  }
  return {};
}

// ---- pools -------------------------------------------------------------------

// A list of strings (argv, pythonpath).
result<std::optional<std::vector<std::string>>> text_list(const config_reader& cfg,
                                                          const toml::table& t,
                                                          std::string_view prefix,
                                                          std::string_view key) {
  const toml::node* n = t.get(key);
  if (n == nullptr) return std::optional<std::vector<std::string>>{};
  const toml::array* a = n->as_array();
  if (a == nullptr)
    return cfg.error(n->source(), config_reader::join(prefix, key), "must be a list of strings");
  std::vector<std::string> out;
  for (const auto& e : *a) {
    if (!e.is_string()) {
      return cfg.error(e.source(), config_reader::join(prefix, key), "must hold only strings");
    }
    out.push_back(e.as_string()->get());
  }
  return std::optional(std::move(out));
}

result<pool_options> read_pool(const config_reader& cfg, const toml::table& t,
                               const std::string& p) {
  if (auto r = cfg.only_keys(
          t, p,
          {"name", "size", "python", "command", "pythonpath", "env", "cwd", "credits",
           "heartbeat_ms", "heartbeat_misses", "restart_backoff_ms", "restart_backoff_max_ms",
           "max_start_failures", "max_batches", "max_rss_mib", "endpoint"});
      !r) {
    return std::move(r).error();
  }
  pool_options out;
  auto name = cfg.text(t, p, "name");
  if (!name) return std::move(name).error();
  if (!*name) return cfg.error(t.source(), p + ".name", "is required");
  out.name = std::move(**name);
  auto python = cfg.text(t, p, "python");
  auto cwd = cfg.text(t, p, "cwd");
  auto endpoint = cfg.text(t, p, "endpoint");
  for (auto* r : {&python, &cwd, &endpoint}) {
    if (!*r) return std::move(*r).error();
  }
  if (*python) out.python = std::move(**python);
  if (*cwd) out.cwd = cfg.relative_to_config(**cwd);
  if (*endpoint) out.endpoint = std::move(**endpoint);
  auto command = text_list(cfg, t, p, "command");
  if (!command) return std::move(command).error();
  if (*command) out.command = std::move(**command);
  auto paths = text_list(cfg, t, p, "pythonpath");
  if (!paths) return std::move(paths).error();
  if (*paths) {
    // Relative entries are relative to the config file, like every path in it.
    for (auto& d : **paths) out.pythonpath.push_back(cfg.relative_to_config(d).string());
  }
  if (const toml::node* env = t.get("env")) {
    const toml::table* e = env->as_table();
    if (e == nullptr) return cfg.error(env->source(), p + ".env", "must be a table of strings");
    for (const auto& [k, v] : *e) {
      if (!v.is_string())
        return cfg.error(v.source(), p + ".env." + std::string(k.str()), "must be a string");
      out.env[std::string(k.str())] = v.as_string()->get();
    }
  }
  const auto number = [&](std::string_view key, std::int64_t least, std::int64_t most,
                          auto& field) -> result<void> {
    auto v = cfg.integer(t, p, key, least, most, "");
    if (!v) return std::move(v).error();
    if (*v) field = static_cast<std::remove_reference_t<decltype(field)>>(**v);
    return {};
  };
  const auto millis = [&](std::string_view key, std::int64_t least,
                          std::chrono::milliseconds& field) -> result<void> {
    auto v = cfg.millis(t, p, key, least);
    if (!v) return std::move(v).error();
    if (*v) field = **v;
    return {};
  };
  const std::int64_t big = static_cast<std::int64_t>(max_option_bytes);
  for (auto r :
       {number("size", 0, 1024, out.size), number("credits", 1, 1024, out.credits),
        number("heartbeat_misses", 1, 1000, out.heartbeat_misses),
        number("max_start_failures", 1, 1'000'000, out.max_start_failures),
        number("max_batches", 0, big, out.max_batches),
        number("max_rss_mib", 0, big, out.max_rss_mib), millis("heartbeat_ms", 1, out.heartbeat),
        millis("restart_backoff_ms", 0, out.restart_backoff.initial),
        millis("restart_backoff_max_ms", 0, out.restart_backoff.max)}) {
    if (!r) return std::move(r).error();
  }
  if (out.restart_backoff.max < out.restart_backoff.initial) {
    return cfg.error(t.source(), p + ".restart_backoff_max_ms",
                     "must be at least restart_backoff_ms");
  }
  return out;
}

}  // namespace

result<broker_options> load_config(const std::filesystem::path& path) {
  toml::table doc;
  try {
    doc = toml::parse_file(path.string());
  } catch (const toml::parse_error& e) {
    return fail(errc::invalid_argument, path.string() + ":" +
                                            std::to_string(e.source().begin.line) + ": " +
                                            std::string(e.description()));
  }
  const config_reader cfg(path);
  if (auto r = cfg.only_keys(doc, "", {"broker", "stores", "pools"}); !r)
    return std::move(r).error();
  broker_options out;
  if (const toml::node* b = doc.get("broker")) {
    if (!b->is_table()) return cfg.error(b->source(), "broker", "must be a table [broker]");
    if (auto r = read_broker(cfg, *b->as_table(), out); !r) return std::move(r).error();
  }
  if (const toml::node* s = doc.get("stores")) {
    const toml::array* stores = s->as_array();
    if (stores == nullptr) return cfg.error(s->source(), "stores", "must be an array [[stores]]");
    for (std::size_t i = 0; i < stores->size(); ++i) {
      const std::string p = "stores[" + std::to_string(i) + "]";
      const toml::table* st = (*stores)[i].as_table();
      if (st == nullptr) return cfg.error((*stores)[i].source(), p, "must be a table");
      auto def = read_store(cfg, *st, p);
      if (!def) return std::move(def).error();
      def->options.ns = out.ns;
      out.stores.push_back(std::move(*def));
    }
  }
  if (const toml::node* n = doc.get("pools")) {
    const toml::array* pools = n->as_array();
    if (pools == nullptr) return cfg.error(n->source(), "pools", "must be an array [[pools]]");
    for (std::size_t i = 0; i < pools->size(); ++i) {
      const std::string p = "pools[" + std::to_string(i) + "]";
      const toml::table* pt = (*pools)[i].as_table();
      if (pt == nullptr) return cfg.error((*pools)[i].source(), p, "must be a table");
      auto pool = read_pool(cfg, *pt, p);
      if (!pool) return std::move(pool).error();
      out.pools.push_back(std::move(*pool));
    }
  }
  return out;
}

}  // namespace slither
