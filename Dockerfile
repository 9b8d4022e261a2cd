# Builds the engine and tools on Debian 12 and runs rwkv-infer.
# docker build -t rwkv-server . && docker run --rm rwkv-server --model synthetic:0.1b --max-tokens 16
FROM debian:12 AS build
WORKDIR /src
COPY scripts/install-deps.sh scripts/install-deps.sh
RUN bash scripts/install-deps.sh
COPY . .
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DRWKV_BUILD_TESTS=OFF -DRWKV_ENABLE_CUDA=OFF \
 && cmake --build build -j "$(nproc)"

FROM debian:12-slim
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends libopenblas0-pthread \
    libabsl20220623 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/build/bin/ /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/rwkv-infer"]
