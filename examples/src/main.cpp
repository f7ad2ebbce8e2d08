// slither-example: runs the demos on an embedded broker.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <iostream>

#include "registry.hpp"

int main(int argc, char** argv) {
  using slither::examples::all_examples;
  CLI::App app{"Runs Slither's demos on an embedded broker.", "slither-example"};
  bool all = false;
  bool list = false;
  std::vector<std::string> names;
  app.add_flag("--all", all, "Run every example in turn");
  app.add_flag("--list", list, "List the examples and exit");
  app.add_option("names", names, "Examples to run, by name");
  CLI11_PARSE(app, argc, argv);

  if (list || (!all && names.empty())) {
    if (all_examples().empty()) std::cout << "no examples are built into this version\n";
    for (const auto& e : all_examples()) std::cout << e.name << "  " << e.summary << "\n";
    return 0;
  }
  for (const auto& n : names) {
    const bool known = std::any_of(all_examples().begin(), all_examples().end(),
                                   [&](const auto& e) { return e.name == n; });
    if (!known) {
      std::cerr << "slither-example: no example named '" << n << "' (see --list)\n";
      return 2;
    }
  }
  int failures = 0;
  for (const auto& e : all_examples()) {
    if (!all && std::find(names.begin(), names.end(), e.name) == names.end()) continue;
    std::cout << "== " << e.name << ": " << e.summary << "\n" << std::flush;
    if (e.run() != 0) ++failures;
  }
  return failures == 0 ? 0 : 1;
}
