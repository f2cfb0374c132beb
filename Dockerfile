# Dockerfile - shruti's transcription service, CPU build (Debian 12).
#   docker build -t shruti .
#   docker run -p 8080:8080 -v shruti-models:/models -v shruti-data:/data shruti
FROM debian:12-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config libopenblas-dev \
      libavformat-dev libavcodec-dev libavutil-dev libswresample-dev \
      libcjson-dev libpcre2-dev zlib1g-dev libsqlite3-dev libcurl4-openssl-dev nettle-dev \
      libmicrohttpd-dev ca-certificates \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DSHRUTI_BUILD_TESTS=OFF \
      -DSHRUTI_BUILD_BENCH=OFF \
    && cmake --build build -j"$(nproc)" --target shruti

FROM debian:12-slim
RUN apt-get update && apt-get install -y --no-install-recommends \
      libopenblas0-pthread libavformat59 libavcodec59 libavutil57 libswresample4 \
      libcjson1 libpcre2-8-0 zlib1g libsqlite3-0 libcurl4 libnettle8 libmicrohttpd12 \
      ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/build/shruti /usr/local/bin/shruti
ENV SHRUTI_HOST=0.0.0.0 \
    SHRUTI_PORT=8080 \
    SHRUTI_MODEL_EN=tiny.en \
    SHRUTI_MODEL_MULTI=medium \
    SHRUTI_CACHE=/models \
    SHRUTI_DB=/data/shruti.db \
    SHRUTI_WORKERS=2 \
    DEVICE=cpu \
    COMPUTE_TYPE=auto
VOLUME ["/models", "/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=600s \
  CMD curl -fsS "http://127.0.0.1:${SHRUTI_PORT}/health" || exit 1
CMD ["shruti", "serve"]
