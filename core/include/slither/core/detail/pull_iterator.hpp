// The input iterator of a stream that is pulled one element at a time
// (`pipe_stream`, `dispatch_results`): what lets a range-for walk it.
#pragma once

#include <cstddef>
#include <iterator>
#include <optional>

namespace slither::detail {

/// An input iterator over what `Source::next()` yields, an
/// `std::optional<T>` per call, until it yields nothing. It holds the
/// current element; advancing pulls the next one (and may wait for it).
template <class Source, class T>
class pull_iterator {
 public:
  using value_type = T;
  using difference_type = std::ptrdiff_t;

  /// An iterator over nothing.
  pull_iterator() = default;
  /// Pulls the first element of `source`, which must outlive the iterator.
  explicit pull_iterator(Source* source) : source_(source), cur_(source->next()) {}

  /// The current element (the iterator must not be at the end).
  T& operator*() const { return *cur_; }
  T* operator->() const { return &*cur_; }
  /// Pulls the next element.
  pull_iterator& operator++() {
    cur_ = source_->next();
    return *this;
  }
  void operator++(int) { ++*this; }
  /// At the end once the source yielded nothing.
  friend bool operator==(const pull_iterator& it, std::default_sentinel_t) { return !it.cur_; }

 private:
  Source* source_ = nullptr;
  mutable std::optional<T> cur_;
};

}  // namespace slither::detail
