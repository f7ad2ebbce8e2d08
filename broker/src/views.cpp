// Views: C++ functions registered on the broker, called by name from clients,
// run on the view threads with a deadline.
#include <boost/asio/post.hpp>

#include "broker_impl.hpp"
#include "guarded.hpp"
#include "request_args.hpp"

namespace slither {

using detail::take_text;
using protocol::message_type;

void Broker::impl::start_view(std::string identity, std::uint64_t id, Map& args) {
  const auto type = message_type::call_view;
  auto store = take_text(args, type, "store");
  if (!store) return reply(identity, id, std::move(store).error());
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
  auto* w = find_store(*store);
  if (w == nullptr) return reply(identity, id, no_store(*store));
  view_entry entry;
  {
    std::lock_guard lock(views_mutex);
    const auto it = views.find(view_key(*store, *name));
    if (it == views.end()) {
      return reply(identity, id,
                   fail(errc::not_found, "no view '" + *name + "' on store '" + *store + "'"));
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
  if (views_in_flight.load() >= detail::max_views_in_flight) {
    ++busy;
    return reply(
        identity, id,
        fail(errc::busy, std::to_string(detail::max_views_in_flight) +
                             " views are running; view '" + *name + "' not started, retry later"));
  }
  ++views_in_flight;

  const auto call = s->next_view_call++;
  auto timer = std::make_unique<asio::steady_timer>(s->io, options.view_timeout);
  timer->async_wait([this, call, identity, id, view = *name](const boost::system::error_code& ec) {
    if (ec) return;
    if (s->pending_views.erase(call) == 0) return;
    reply(identity, id,
          fail(errc::timeout, "view '" + view + "' did not return within " +
                                  std::to_string(options.view_timeout.count()) + " ms"));
  });
  s->pending_views.emplace(call, std::move(timer));

  asio::post(
      s->view_pool, [this, call, identity = std::move(identity), id, w, store = std::move(*store),
                     view = std::move(*name), arg = std::move(arg), session = std::move(session),
                     fn = std::move(entry.fn)]() mutable {
        auto r = detail::with_telemetry(
            "slither.bridge.view",
            [&] {
              return Map{{"store", store}, {"view", view}, {"session_id", session}};
            },
            [&] { return detail::guarded([&] { return fn(arg, w->read(), session); }); });
        --views_in_flight;
        asio::post(s->io, [this, call, identity = std::move(identity), id, r = std::move(r)] {
          // Absent: the timeout already answered.
          if (s->pending_views.erase(call) == 0) return;
          reply(identity, id, r);
        });
      });
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
