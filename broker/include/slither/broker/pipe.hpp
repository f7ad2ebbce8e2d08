// Pipes on a broker: their python stages run on the broker's worker pools
// through Dispatch, their native stages and routers in this process.
//
//   slither::Broker broker(opts);                  // with a [[pools]] entry
//   broker.start().value();
//   slither::Pipe score("score");
//   score.native("prepare", prepare)
//       .python("predict", {.module = "my_model", .function = "predict_batch",
//                           .batch_size = 32, .max_in_flight = 4})
//       .router("route", {{is_good, "accept"}})
//       .output("accept");
//   auto done = slither::run(broker, score, slither::wrap_many(values),
//                            {.session_id = "s1"}).value();
//
// Each python stage of a run is one dispatch job (`dispatch_job`) on its own
// connection to the broker: batches are encoded as the codec's batch frames
// and results decoded back onto their items, which keep their id and meta.
// The job carries the pipe, stage, session id and metadata as its context,
// so workers see them (`ctx`), and the stage's error policy as its own, so a
// retry runs the batch again on another worker and a worker killed
// mid-batch loses nothing.
//
// Caveats: stores attached with `Pipe::store` must exist on the broker (a run
// checks it when it starts). A run holds one broker connection per python
// stage; a broker that goes away halts the run with `unavailable`.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <ranges>
#include <vector>

#include "slither/broker/broker.hpp"
#include "slither/broker/client.hpp"
#include "slither/broker/export.hpp"
#include "slither/core/detail/range_source.hpp"
#include "slither/core/pipe.hpp"

namespace slither {

/// A batch runner whose jobs run on an embedded broker's pools. The broker
/// must outlive the runs it starts.
SLITHER_BROKER_EXPORT std::unique_ptr<batch_runner> broker_runner(Broker& broker);
/// A batch runner whose jobs run on the pools of the broker `where` names.
SLITHER_BROKER_EXPORT std::unique_ptr<batch_runner> broker_runner(const client_options& where);

/// Runs `input` through `pipe`, its python stages on `broker`'s pools
/// (`options.runner` is ignored). Errors as `slither::run`'s, and
/// `not_found` for a store the broker does not hold or a pool it lacks.
SLITHER_BROKER_EXPORT result<pipe_run> run(Broker& broker, const Pipe& pipe,
                                           std::vector<Item> input, run_options options = {});
/// The same on the broker `where` names.
SLITHER_BROKER_EXPORT result<pipe_run> run(const client_options& where, const Pipe& pipe,
                                           std::vector<Item> input, run_options options = {});

/// Streams `source` through `pipe`, its python stages on `broker`'s pools.
SLITHER_BROKER_EXPORT result<pipe_stream> stream(Broker& broker, const Pipe& pipe,
                                                 std::function<std::optional<Item>()> source,
                                                 run_options options = {});
/// The same on the broker `where` names.
SLITHER_BROKER_EXPORT result<pipe_stream> stream(const client_options& where, const Pipe& pipe,
                                                 std::function<std::optional<Item>()> source,
                                                 run_options options = {});

/// Streams a range of items (a container by reference, or a view by value,
/// endless ones included) through `pipe` on `broker`.
template <std::ranges::input_range R>
requires std::convertible_to<std::ranges::range_reference_t<R>, Item> result<pipe_stream> stream(
    Broker& broker, const Pipe& pipe, R&& range, run_options options = {}) {
  return stream(broker, pipe, detail::item_source(std::forward<R>(range)), std::move(options));
}

}  // namespace slither
