# Builds the server, client and tools on Debian 12 and runs rwkv-server.
#   docker build -t rwkv-server .
#   docker run --rm -p 50051:50051 -p 9090:9090 -v rwkv-cache:/root/.cache/rwkv-server rwkv-server \
#       --listen 0.0.0.0:50051 --metrics-listen 0.0.0.0:9090
FROM debian:12 AS build
WORKDIR /src
COPY scripts/install-deps.sh scripts/install-deps.sh
RUN bash scripts/install-deps.sh
COPY . .
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DRWKV_BUILD_TESTS=OFF -DRWKV_ENABLE_CUDA=OFF \
 && cmake --build build -j "$(nproc)"

FROM debian:12-slim
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends libopenblas0-pthread \
    libabsl20220623 libgrpc++1.51 libprotobuf32 libcurl4 ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/build/bin/ /usr/local/bin/
EXPOSE 50051 9090
ENTRYPOINT ["/usr/local/bin/rwkv-server"]
