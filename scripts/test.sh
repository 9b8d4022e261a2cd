#!/usr/bin/env bash
# The test command: installs dependencies, builds, runs the loader tests under
# AddressSanitizer + UBSan (hostile model files must produce errors, never
# memory errors), then the whole suite with ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh

cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DRWKV_SANITIZE=ON >/dev/null
cmake --build build-asan -j "$(nproc)" --target loader_test
build-asan/tests/loader_test --gtest_brief=1

ctest --test-dir build --output-on-failure -j "$(nproc)"
