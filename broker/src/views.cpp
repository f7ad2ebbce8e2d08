// Views: C++ functions registered on the broker, called by name from clients,
// run on the view runner's threads (a few per store) with a deadline.
#include <boost/asio/post.hpp>

#include "broker_impl.hpp"
#include "guarded.hpp"
#include "request_args.hpp"
#include "request_limits.hpp"

namespace slither {

using detail::take_text;
using protocol::message_type;

void Broker::impl::start_view(std::string identity, std::uint64_t id, Map args) {
  const auto type = message_type::call_view;
  std::string store;
  auto w = target_store(type, args, store);
  if (!w) return reply(identity, id, std::move(w).error());
  auto name = take_text(args, type, "view");
  if (!name) return reply(identity, id, std::move(name).error());
  auto arg_it = args.find("arg");
  Value arg = arg_it == args.end() ? Value{} : std::move(arg_it->second);
  std::string session;
  if (const auto it = args.find("session_id"); it != args.end() && !it->second.is_null()) {
    auto sid = take_text(args, type, "session_id");
    if (!sid) return reply(identity, id, std::move(sid).error());
    session = std::move(*sid);
  }
  view_entry entry;
  {
    std::lock_guard lock(views_mutex);
    const auto it = views.find(view_key(store, *name));
    if (it == views.end()) {
      return reply(
          identity, id,
          fail(errc::not_found, "no view " + detail::quoted(*name) + " on store '" + store + "'"));
    }
    entry = it->second;
  }
  if (entry.scope == view_scope::session && session.empty()) {
    return reply(identity, id,
                 fail(errc::invalid_argument, "view '" + *name +
                                                  "' is session-scoped; "
                                                  "call it with a session_id"));
  }
  if (entry.scope == view_scope::global) session.clear();
  if (s->views->in_flight() >= detail::max_views_in_flight) {
    ++busy;
    return reply(identity, id,
                 fail(errc::busy, std::to_string(detail::max_views_in_flight) +
                                      " views are running or waiting; view '" + *name +
                                      "' not started, retry later"));
  }

  // The timer answers `timeout` at the deadline; the view's result, if it
  // comes later, finds its call gone and is dropped.
  const auto call = s->next_view_call++;
  const auto deadline = std::chrono::steady_clock::now() + options.view_timeout;
  auto timer = std::make_unique<asio::steady_timer>(s->io, deadline);
  timer->async_wait([this, call](const boost::system::error_code& ec) {
    if (ec) return;
    const auto it = s->pending_views.find(call);
    if (it == s->pending_views.end()) return;
    auto done = std::move(it->second);
    s->pending_views.erase(it);
    reply(done.identity, done.request_id,
          fail(errc::timeout, "view '" + done.view + "' did not return within " +
                                  std::to_string(options.view_timeout.count()) + " ms"));
  });
  s->pending_views.emplace(call, pending_view{std::move(timer), identity, id, *name});

  // What the view's thread holds must outlive the broker if the view is
  // abandoned at stop: the reader, the function and the link, never `this`
  // but through the link (which runs nothing once the broker is gone).
  detail::view_runner::task t;
  t.store = store;
  t.deadline = deadline;
  t.run = [this, link = s->link, reader = s->view_readers.at(store), fn = std::move(entry.fn),
           arg = std::move(arg), session, store, view = *name, call, id,
           max_reply = options.max_reply_bytes] {
    auto r = detail::with_telemetry(
        "slither.bridge.view",
        [&] {
          return Map{{"store", store}, {"view", view}, {"session_id", session}};
        },
        [&] { return detail::guarded([&] { return fn(arg, *reader, session); }); });
    // Encoded here: a large result costs this thread, not the serving one.
    auto frames = detail::encode_reply(id, r, max_reply);
    (void)link->post([this, call, frames = std::move(frames)] {
      const auto it = s->pending_views.find(call);
      if (it == s->pending_views.end()) return;  // the timeout answered already
      const std::string peer = std::move(it->second.identity);
      s->pending_views.erase(it);
      send(peer, frames);
    });
  };
  t.drop = [this, link = s->link, call] {
    (void)link->post([this, call] {
      const auto it = s->pending_views.find(call);
      if (it == s->pending_views.end()) return;
      auto done = std::move(it->second);
      s->pending_views.erase(it);
      reply(done.identity, done.request_id,
            s->stopping ? fail(errc::shutting_down,
                               "broker stopped before view '" + done.view + "' ran; it did not run")
                        : fail(errc::timeout, "view '" + done.view +
                                                  "' waited past its deadline for its turn; it "
                                                  "did not run"));
    });
  };
  if (!s->views->submit(std::move(t))) {
    s->pending_views.erase(call);
    reply(identity, id,
          fail(errc::shutting_down, "broker is stopping; view '" + *name + "' did not run"));
  }
}

void Broker::impl::start_large_view(std::string identity, std::uint64_t id,
                                    zmq::message_t payload) {
  // Decoded on a view thread, so that a large argument does not hold up the
  // serving thread; then started like any call.
  detail::view_runner::task t;
  t.deadline = std::chrono::steady_clock::now() + options.view_timeout;
  t.run = [this, link = s->link, identity, id,
           held = std::make_shared<zmq::message_t>(std::move(payload)), limits = options.limits] {
    auto args = detail::decode_request_args(message_type::call_view, *held, limits);
    *held = zmq::message_t();
    (void)link->post([this, identity, id, args = std::make_shared<result<Map>>(std::move(args))] {
      if (!*args) return reply(identity, id, std::move(*args).error());
      if (s->stopping) {
        return reply(identity, id,
                     fail(errc::shutting_down, "broker is stopping; the view did not run"));
      }
      start_view(identity, id, std::move(**args));
    });
  };
  t.drop = [this, link = s->link, identity, id] {
    (void)link->post([this, identity, id] {
      reply(identity, id,
            s->stopping ? fail(errc::shutting_down, "broker stopped before the view ran")
                        : fail(errc::timeout, "the view call waited past its deadline to be read"));
    });
  };
  if (!s->views->submit(std::move(t))) {
    reply(identity, id, fail(errc::shutting_down, "broker is stopping; the view did not run"));
  }
}

void Broker::impl::answer_pending_views(const error_info& err) {
  auto pending = std::move(s->pending_views);
  s->pending_views.clear();
  for (auto& [call, p] : pending) {
    p.timer->cancel();
    reply(p.identity, p.request_id, fail(err.code, "view '" + p.view + "': " + err.message));
  }
}

result<void> Broker::register_view(std::string store, std::string name, view_scope scope,
                                   view_fn fn) {
  if (name.empty()) return fail(errc::invalid_argument, "a view needs a name");
  if (!fn) return fail(errc::invalid_argument, "view '" + name + "' has no function");
  const bool known = std::any_of(p_->options.stores.begin(), p_->options.stores.end(),
                                 [&](const auto& d) { return d.options.name == store; });
  if (!known) {
    return fail(errc::not_found, "cannot register view '" + name + "': no store '" + store + "'");
  }
  std::lock_guard lock(p_->views_mutex);
  const auto [it, inserted] =
      p_->views.emplace(impl::view_key(store, name), impl::view_entry{scope, std::move(fn)});
  if (!inserted) {
    return fail(errc::already_exists,
                "view '" + name + "' is already registered on store '" + store + "'");
  }
  return {};
}

}  // namespace slither
