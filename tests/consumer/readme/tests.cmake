# consumer.readme: the README's C++ blocks built against the installed static
# package, and those with a main run from the repository root, where their
# paths (examples/quickstart/handlers) point. Their brokers spawn Python
# workers with the project's interpreter.
consumer_test(readme SOURCE readme AFTER consumer_installed
              ARGS -DCMAKE_PREFIX_PATH=${prefix} -DSLITHER_README=${PROJECT_SOURCE_DIR}/README.md)
set_tests_properties(consumer.readme.run PROPERTIES TIMEOUT 300
                     ENVIRONMENT "SLITHER_PYTHON=${PROJECT_SOURCE_DIR}/.venv/bin/python")
